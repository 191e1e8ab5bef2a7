"""``finscore demo-data`` (synthetic data sets with a known signal) and ``finscore demo`` (the whole job)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import Subparsers, add_repo, positive_int
from engine.settings import resolve_settings

__all__ = ["add_parsers", "demo_command", "demo_data_command"]


def add_parsers(sub: Subparsers) -> None:
    demo_data = sub.add_parser("demo-data", help="write a synthetic data set with a known signal")
    dd_sub = demo_data.add_subparsers(dest="model", required=True, metavar="MODEL")
    for kind, text, rows in (
        ("churn", "a retail-bank customer table with a 'churned' label", 5000),
        ("events", "network connection records with a 'label' (normal or an attack type)", 20_000),
        ("authlog", "an OpenSSH auth log with brute-force and spraying attacks (lines)", 20_000),
    ):
        dd = dd_sub.add_parser(kind, help=text)
        dd.add_argument("--rows", type=positive_int, default=rows)
        dd.add_argument("--seed", type=int, default=7)
        dd.add_argument("--out", required=True, type=Path)
        dd.set_defaults(func=demo_data_command)
    adv = dd_sub.add_parser("advisory", help="investment customers, products and holdings (three Parquet files)")
    adv.add_argument("--rows", type=positive_int, default=2000, help="customers (default: %(default)s)")
    adv.add_argument("--products", type=positive_int, default=3000, help="products (default: %(default)s)")
    adv.add_argument("--seed", type=int, default=11)
    adv.add_argument("--out", required=True, type=Path, help="folder for the files")
    adv.set_defaults(func=demo_data_command)
    mkt = dd_sub.add_parser("marketing", help="bank customers in four segments with a 'subscribed' label, and offers")
    mkt.add_argument("--rows", type=positive_int, default=5000, help="customers (default: %(default)s)")
    mkt.add_argument("--seed", type=int, default=17)
    mkt.add_argument("--out", required=True, type=Path, help="folder for customers.parquet and offers.csv")
    mkt.set_defaults(func=demo_data_command)
    intents = dd_sub.add_parser("intents", help="bank customers' questions over ten intents, and an FAQ (three CSVs)")
    intents.add_argument("--rows", type=positive_int, default=60, help="training questions per intent (default 60)")
    intents.add_argument("--seed", type=int, default=5)
    intents.add_argument("--out", required=True, type=Path, help="folder for train.csv, test.csv and faq.csv")
    intents.set_defaults(func=demo_data_command)
    docs = dd_sub.add_parser("documents", help="degraded identity-document pages of the five MRZ types, and truth.json")
    docs.add_argument("--count", type=positive_int, default=20, help="pages (default: %(default)s)")
    docs.add_argument("--seed", type=int, default=3)
    docs.add_argument("--out", required=True, type=Path, help="folder for the JPEG pages and truth.json")
    docs.add_argument("--portrait", type=Path, metavar="IMAGE", help="a photo to print on every page as the holder's")
    docs.set_defaults(func=demo_data_command)

    demo = sub.add_parser("demo", help="the main job: demo data, train churn and threat, serve, score, scan, print")
    demo.add_argument("--rows", type=positive_int, default=5000)
    demo.add_argument("--workdir", type=Path, default=Path("build/demo"))
    add_repo(demo)
    demo.set_defaults(func=demo_command)


def demo_data_command(args: argparse.Namespace) -> int:
    from engine.demo.tables import churn_customers, network_events
    from engine.tables.io import write_table

    if args.model == "advisory":
        from engine.demo.advisory import advisory_tables

        tables = advisory_tables(args.rows, args.products, seed=args.seed)
        paths = tables.write(args.out)
        frames = (tables.customers, tables.products, tables.holdings)
        counts = ", ".join(f"{name} ({frame.height:,} rows)" for name, frame in zip(paths, frames, strict=True))
        print(f"wrote {counts} to {args.out}")
        return 0
    if args.model == "intents":
        from engine.demo.intents import write_intents

        written = write_intents(args.out, args.rows, seed=args.seed)
        print(f"wrote {', '.join(p.name for p in written.values())} to {args.out} (columns text, intent)")
        return 0
    if args.model == "marketing":
        from engine.demo.marketing import write_marketing

        customers, offers = write_marketing(args.out, args.rows, seed=args.seed)
        print(f"wrote {customers.name} ({args.rows:,} customers) and {offers.name} to {args.out}")
        return 0
    if args.model == "documents":
        from engine.documents.generate import write_documents

        pages = write_documents(args.out, args.count, seed=args.seed, portrait=args.portrait)
        print(f"wrote {len(pages):,} document pages and truth.json (their MRZ lines) to {args.out}")
        return 0
    if args.model == "authlog":
        from engine.demo.authlog import write_ssh_auth_log

        attackers = write_ssh_auth_log(args.out, args.rows, seed=args.seed)
        print(f"wrote {args.rows:,} auth-log lines to {args.out} ({len(attackers)} attacking addresses)")
        return 0
    make, what = (churn_customers, "customers") if args.model == "churn" else (network_events, "network events")
    path = write_table(make(args.rows, seed=args.seed), args.out)
    print(f"wrote {args.rows:,} {what} to {path}")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from engine.demo.job import run_demo

    s = resolve_settings(repo=args.repo)
    run_demo(rows=args.rows, workdir=args.workdir, repo=s.repo)
    return 0
