"""``finscore recommend``: investment products for customers, through the served ``recommender`` or in-process.

Customers named on the command line get a table each (rank, product, score, reason), or together one JSON
document with ``--json``; ``--data FILE --out FILE`` answers a file of customers in bulk
(:mod:`engine.batch.recommend`), guarded and audited as ``finscore score`` is. A customer the model has not seen
brings a profile: one flag per field the model takes (``--risk-tolerance 4 --goal growth``...), made from the
scorer's ``PROFILE_FIELDS``, so the flags follow the model rather than a list kept here. The scorer's module is
imported only when ``finscore recommend`` itself is parsed (:meth:`engine.cli.common.Parser.defer`).

``--local`` answers with the latest version in this process and prints what the server prints: the request is
built and the answer read by the same functions as :class:`clients.RecommenderClient`'s
(:func:`clients.recommender.request_arrays`, :func:`~clients.recommender.recommendation_lists`), and the scorer is
the one the server runs; only the transport differs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.common import (
    Parser,
    Subparsers,
    add_client_tls,
    add_output_protection,
    add_progress,
    add_repo,
    check_request_rows,
    client_tls,
    output_guard,
    show_progress,
    text_table,
)
from engine.errors import UsageError
from engine.settings import resolve_settings

if TYPE_CHECKING:
    from clients.recommender import Recommendation

__all__ = ["add_parsers", "recommend_command"]

MODEL = "recommender"


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser(
        "recommend", help="investment products for customers (named, or a file with --data), served or in-process"
    )
    p.add_argument("customers", nargs="*", metavar="CUSTOMER_ID", help="customers to print recommendations for")
    k = p.add_argument("--k", type=int, help="products per customer")
    p.add_argument("--json", action="store_true", help="print one JSON document: customer -> list of products")
    p.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    add_client_tls(p)
    p.add_argument("--local", action="store_true", help="answer in this process with the latest version")
    add_repo(p)
    assert isinstance(p, Parser)  # build_parser's class, which add_subparsers hands on
    p.defer(lambda parser: _add_model_flags(parser, k))
    bulk = p.add_argument_group("bulk", "a file of customers (CSV or Parquet) answered into another")
    bulk.add_argument("--data", type=Path, help="CSV or Parquet: an id column and any profile columns")
    bulk.add_argument("--out", type=Path, help="output .parquet or .csv: customer_id, rank, product_id, score, reason")
    bulk.add_argument("--id", default="customer_id", help="the customer id column of --data (default customer_id)")
    bulk.add_argument("--request-rows", type=int, default=256, help="customers per request (default 256, max 4096)")
    add_progress(bulk)
    add_output_protection(bulk, "customer_id")
    p.set_defaults(func=recommend_command)


def _add_model_flags(p: argparse.ArgumentParser, k: argparse.Action) -> None:
    """A flag per profile field of the recommender (``--risk-tolerance N``...), and the limits of ``k`` in its
    help; none where its libraries are not installed (the client install, whose ``finscore recommend`` then
    names the extra it needs when run)."""
    try:
        from engine.families.recommender.scorer import DEFAULT_K, MAX_K, PROFILE_FIELDS
    except ModuleNotFoundError:
        return
    k.help = f"products per customer (default {DEFAULT_K}, at most {MAX_K})"
    profile = p.add_argument_group(
        "profile", "a customer's profile, for customers the model has not seen (over a known customer's, it wins)"
    )
    for name, wire in PROFILE_FIELDS.items():
        number = wire == "FP32"
        profile.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=float if number else str,
            metavar="N" if number else "TEXT",
            help=f"{name}: {'a number' if number else 'one of the values the model was trained with'}",
        )


def _check(args: argparse.Namespace, profile: Mapping[str, object], k: int, max_k: int) -> None:
    """One sentence (exit 2) for flags that do not go together, before anything is loaded or called."""
    bulk = args.data is not None
    if not 1 <= k <= max_k:
        msg = f"--k must be between 1 and {max_k} (the model's maximum), got {k}"
    elif args.url and args.local:
        msg = "--url and --local both given: choose the server or this process"
    elif bulk and args.customers:
        msg = "name customers or give a file of them with --data, not both"
    elif not bulk and not args.customers:
        msg = "name one or more customers (CUSTOMER_ID...) or give a file of them with --data FILE --out FILE"
    elif bulk and args.out is None:
        msg = "--data needs --out FILE (.parquet or .csv) for the recommendations"
    elif not bulk and args.out is not None:
        msg = "--out writes the answers to --data FILE; recommendations for named customers are printed"
    elif bulk and args.json:
        msg = "--json prints the answers for named customers; with --data they are written to --out"
    elif bulk and profile:
        msg = "profile flags describe the customers named on the command line; --data reads profiles from its columns"
    elif not bulk and (args.tokenize or args.encrypt):
        msg = "--tokenize and --encrypt protect the --out file of --data; nothing is written for named customers"
    else:
        return
    raise UsageError(msg)


def recommend_command(args: argparse.Namespace) -> int:
    from engine.families.recommender.scorer import DEFAULT_K, MAX_K, PROFILE_FIELDS

    s = resolve_settings(repo=args.repo, url=args.url)
    k = DEFAULT_K if args.k is None else args.k
    profile = {name: getattr(args, name) for name in PROFILE_FIELDS if getattr(args, name) is not None}
    _check(args, profile, k, MAX_K)
    if args.data is not None:
        return _bulk(args, s, k)
    customers = list(args.customers)
    lists = _recommend(args, s, customers, k, {name: [v] * len(customers) for name, v in profile.items()})
    if args.json:
        doc = {c: [_json(r) for r in recs] for c, recs in zip(customers, lists, strict=True)}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for i, (customer, recs) in enumerate(zip(customers, lists, strict=True)):
        if i:
            print()
        if not recs:
            print(f"{customer}: no suitable product")
            continue
        print(f"{customer}:")
        rows = [(rank, r.product_id, f"{r.score:.4f}", r.reason) for rank, r in enumerate(recs, 1)]
        print(text_table(rows, ("rank", "product", "score", "reason")))
    return 0


def _json(rec: Recommendation) -> dict[str, object]:
    return {"product_id": rec.product_id, "score": round(rec.score, 6), "reason": rec.reason}


def _latest(s: Any) -> tuple[Any, Path]:
    """The scorer of the repository's latest recommender version, and its folder."""
    from engine.families.recommender import RecommenderScorer
    from engine.serving.repository import ModelRepository

    version_dir = ModelRepository(s.repo).latest(MODEL)
    return RecommenderScorer.load(version_dir), version_dir


def _recommend(
    args: argparse.Namespace, s: Any, customers: Sequence[str], k: int, profile: Mapping[str, Sequence[object]]
) -> list[list[Recommendation]]:
    """One list of recommendations per customer, from the server or from this process."""
    from clients.recommender import RecommenderClient, recommendation_lists, request_arrays

    if args.local:
        from engine.batch.recommend import in_process

        scorer, _ = _latest(s)
        types = {spec.name: spec.datatype for spec in scorer.inputs}
        arrays = request_arrays(types, customers, k=k, profile=profile, model=MODEL)
        return recommendation_lists(in_process(scorer)(arrays), len(customers))
    with RecommenderClient(s.url, MODEL, tls=client_tls(args)) as client:
        return client.recommend(customers, k=k, profile=profile)


def _bulk(args: argparse.Namespace, s: Any, k: int) -> int:
    from engine.batch.recommend import in_process, recommend_file, recommend_file_through
    from engine.security.trail import DecisionAudit, Trail

    check_request_rows(args.request_rows, 4096, "the model's")
    trail = Trail.from_env()
    guard = output_guard(args, ("customer_id",), ("customer_id",), trail)
    options: dict[str, Any] = {
        "k": k,
        "id_column": args.id,
        "request_rows": args.request_rows,
        "progress": show_progress(args),
        "guard": guard,
    }

    def audit(version: str) -> DecisionAudit:
        return DecisionAudit(
            trail, command="recommend", model=MODEL, version=version, decision="product_id", score="score"
        )

    if args.local:
        scorer, version_dir = _latest(s)
        trail.model_load(MODEL, version_dir.name, where="in-process")
        inputs = [(spec.name, spec.datatype) for spec in scorer.inputs]
        summary = recommend_file(
            args.data,
            args.out,
            recommend=in_process(scorer),
            inputs=inputs,
            audit=audit(version_dir.name),
            **options,
        )
    else:
        from clients.recommender import RecommenderClient

        with RecommenderClient(s.url, MODEL, tls=client_tls(args)) as client:
            summary = recommend_file_through(
                client, args.data, args.out, audit=audit(client.served_version()), **options
            )
    empty = f" ({summary.empty:,} with no suitable product)" if summary.empty else ""
    print(f"{args.out}: {summary.written:,} recommendations for {summary.scored:,} customers{empty}; {summary.line()}")
    print(f"decisions recorded in the audit log {trail.path}")
    return 0
