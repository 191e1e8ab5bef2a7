"""``finscore train churn|threat|fraud|recommender``: train a model and write its next version into the repository;
with ``--load URL``, then make the server at URL serve it (:func:`engine.cli.reload.reload_model`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.cli.common import ENTITY, Subparsers, add_client_tls, add_repo, client_tls, positive_int, text_table
from engine.errors import UsageError
from engine.settings import resolve_settings

__all__ = [
    "add_parsers",
    "train_assistant_command",
    "train_churn_command",
    "train_fraud_command",
    "train_propensity_command",
    "train_recommender_command",
    "train_segments_command",
    "train_threat_command",
]


def add_parsers(sub: Subparsers) -> None:
    train = sub.add_parser("train", help="train a model and write a new version into the repository")
    train_sub = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    churn = train_sub.add_parser("churn", help="gradient-boosted churn model on a customer table")
    churn.add_argument("--data", required=True, type=Path, help="CSV or Parquet customer table")
    churn.add_argument("--label", required=True, help="the churn column (Yes/No, 1/0, True/False)")
    churn.add_argument("--id", dest="id_column", help="id column, carried to outputs, never a feature")
    churn.add_argument("--positive", help="the label value meaning 'churned' when it is not yes/true/1")
    churn.add_argument("--actions", type=Path, help="CSV reason,action to use instead of the default actions")
    churn.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    churn.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    churn.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(churn)
    _add_load(churn)
    churn.set_defaults(func=train_churn_command)
    prop = train_sub.add_parser(
        "propensity", help="propensity to take an offer, on a customer table (trained as churn)"
    )
    prop.add_argument("--data", required=True, type=Path, help="CSV (',' or ';', .csv.gz too) or Parquet table")
    prop.add_argument("--label", required=True, help="the column telling who took the offer (yes/no, 1/0, true/false)")
    prop.add_argument("--positive", help="the label value meaning 'took the offer' when it is not yes/true/1")
    prop.add_argument("--id", dest="id_column", help="id column, carried to outputs, never a feature")
    prop.add_argument(
        "--drop",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns never to learn from (e.g. known only after the call)",
    )
    prop.add_argument("--name", default="propensity", help="model name, e.g. one model per offer (default propensity)")
    prop.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    prop.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    prop.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(prop)
    _add_load(prop)
    prop.set_defaults(func=train_propensity_command)
    threat = train_sub.add_parser("threat", help="autoencoder anomaly model on event or log data")
    threat.add_argument("--data", required=True, type=Path, help="CSV or Parquet event table, or an OpenSSH auth log")
    threat.add_argument("--label", help="column telling normal rows from attacks (optional)")
    threat.add_argument("--normal", help="the label value of normal rows (default: normal/benign/0/false/no)")
    threat.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate of alerts (default 0.01)")
    threat.add_argument("--id", dest="id_column", help="id column, carried to alerts, never a feature")
    threat.add_argument("--name", default="threat", help="served model name (default threat)")
    threat.add_argument(
        "--entity", choices=("ip", "user"), default="ip", help="auth logs: windows per source IP or per user (ip)"
    )
    threat.add_argument("--every", default="10m", help="auth logs: window length (default 10m)")
    threat.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    threat.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    threat.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(threat)
    _add_load(threat)
    threat.set_defaults(func=train_threat_command)

    fraud = train_sub.add_parser("fraud", help="card-fraud model on a transaction table (time-based split)")
    fraud.add_argument("--data", required=True, type=Path, help="CSV or Parquet transaction table")
    fraud.add_argument("--label", required=True, help="the fraud column (1/0, true/false, yes/no; blank = unknown)")
    fraud.add_argument(
        "--time", required=True, help="the transaction time column (datetime, ISO text or epoch seconds)"
    )
    fraud.add_argument("--card", required=True, help="the card (or customer) id column")
    fraud.add_argument("--terminal", help="the terminal or merchant id column (terminal features need it)")
    fraud.add_argument("--amount", default="amount", help="the amount column (default amount)")
    fraud.add_argument("--id", dest="id_column", help="the transaction id column (default: the row number)")
    fraud.add_argument(
        "--label-delay", default="7d", help="how long a fraud label takes to arrive, e.g. 7d, 1d, 12h (default 7d)"
    )
    fraud.add_argument("--train-start", help="first day of the training period (default: the data's first day)")
    fraud.add_argument("--train-days", type=int, default=7, help="days in the training period (default 7)")
    fraud.add_argument("--gap-days", type=int, default=7, help="days between training and test (default 7)")
    fraud.add_argument("--test-days", type=int, default=7, help="days in the test period (default 7)")
    fraud.add_argument(
        "--keep-known-cards", action="store_true", help="keep cards with an already known fraud in the test days"
    )
    fraud.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
    fraud.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(fraud)
    _add_load(fraud)
    fraud.set_defaults(func=train_fraud_command)

    rec = train_sub.add_parser("recommender", help="investment recommender on holdings (implicit feedback)")
    rec.add_argument("--interactions", required=True, type=Path, help="CSV or Parquet: who holds or bought what")
    rec.add_argument("--user", default="customer_id", help="the customer column (default customer_id)")
    rec.add_argument("--item", default="product_id", help="the product column (default product_id)")
    rec.add_argument("--weight", help="a positive column weighing each interaction, e.g. amount (default: 1 each)")
    rec.add_argument("--customers", type=Path, help="customer profiles keyed by --user: content model, suitability")
    rec.add_argument("--products", type=Path, help="the product catalogue keyed by --item: attributes, rule columns")
    rec.add_argument("--rules", type=Path, help="suitability rules (JSON) instead of the defaults")
    rec.add_argument("--factors", type=positive_int, help="collaborative factors (default 16)")
    rec.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    rec.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    rec.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(rec)
    _add_load(rec)
    rec.set_defaults(func=train_recommender_command)

    seg = train_sub.add_parser("segments", help="customer segments (k-means or Gaussian mixtures), named in words")
    seg.add_argument("--data", required=True, type=Path, help="CSV or Parquet customer table")
    seg.add_argument("--k", default="auto", help="auto (2-8: silhouette or BIC) or a number (default auto)")
    seg.add_argument("--method", choices=("kmeans", "gmm"), default="kmeans", help="clustering method (default kmeans)")
    seg.add_argument("--id", dest="id_column", help="id column, carried to outputs, never a feature")
    seg.add_argument("--drop", nargs="+", default=[], metavar="COL", help="columns to leave out (a label, names)")
    seg.add_argument("--seed", type=int, default=42, help="sample and clustering seed (default 42)")
    seg.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    seg.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(seg)
    _add_load(seg)
    seg.set_defaults(func=train_segments_command)

    asst = train_sub.add_parser("assistant", help="intent assistant on labelled questions (fine-tuned MiniLM)")
    asst.add_argument("--train", required=True, type=Path, help="CSV or Parquet of questions and their intents")
    asst.add_argument("--test", required=True, type=Path, help="held-out questions the printed figures come from")
    asst.add_argument("--text", default="text", help="the question column (default text)")
    asst.add_argument("--label", default="intent", help="the intent column (default intent)")
    asst.add_argument("--faq", type=Path, help="CSV intent,answer: what each intent answers (default: plain words)")
    asst.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs; 0 trains the head alone (default 3)")
    asst.add_argument("--lr", type=float, default=1e-4, help="the encoder's peak learning rate (default 1e-4)")
    asst.add_argument("--batch-size", type=positive_int, default=32, help="questions per step (default 32)")
    asst.add_argument(
        "--target-accuracy", type=float, default=0.97, help="answered accuracy the threshold must reach (0.97)"
    )
    asst.add_argument("--threads", type=positive_int, help="torch threads (default: every core)")
    asst.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    asst.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    asst.add_argument("--device", help="auto, cpu or gpu (default auto; training runs on the CPU)")
    add_repo(asst)
    _add_load(asst)
    asst.set_defaults(func=train_assistant_command)


def train_assistant_command(args: argparse.Namespace) -> int:
    from engine.families.assistant import train_assistant

    repo, device = _target(args)  # the network trains on the CPU; --device is where the version is served
    r = train_assistant(
        args.train,
        test=args.test,
        text=args.text,
        label=args.label,
        faq=args.faq,
        repo=repo,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        target_accuracy=args.target_accuracy,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
        threads=args.threads,
        progress=True,
    )
    m = r.metrics
    print(f"assistant version {r.version} written to {r.path} ({r.epochs} epochs, {r.seconds:.1f} s)")
    print(
        f"rows: {r.rows['train']:,} trained on, {r.rows['validation']:,} held out for the threshold, "
        f"{r.rows['test']:,} tested; {len(r.intents)} intents"
    )
    if r.without_answer:
        print(
            f"{len(r.without_answer)} of {len(r.intents)} intents have no FAQ answer and answer in plain words "
            f"(edit {r.path / 'faq.csv'}): {', '.join(r.without_answer[:10])}"
            + (", ..." if len(r.without_answer) > 10 else "")
        )
    print(
        f"threshold {m.threshold:.4f}: the lowest confidence at which held-out answered questions are at least "
        f"{m.target_accuracy:.0%} right; below it, a question goes to a person"
    )
    print("test questions:")
    print(m.table())
    return _load(args, [r.path.parent.name])


def _add_load(p: argparse.ArgumentParser) -> None:
    """``--load HOST:PORT`` and the client TLS flags to reach that server; :func:`_load` reads them."""
    served = p.add_argument_group("serving", "make a running server load the new version (as finscore reload)")
    served.add_argument(
        "--load", metavar="HOST:PORT", help="then load the new version on the server at HOST:PORT (gRPC)"
    )
    add_client_tls(served)


def _target(args: argparse.Namespace) -> tuple[Any, Any]:
    """The repository (``--repo``) and the device (``--device``) to train into and on; checks ``--load``'s TLS
    files first, so that a wrong path does not cost a training run."""
    from engine.device import resolve_device
    from engine.serving.repository import ModelRepository

    tls = client_tls(args)
    if tls is not None and args.load is None:
        msg = "--tls-ca, --tls-cert and --tls-key reach the server of --load HOST:PORT; give --load or leave them out"
        raise UsageError(msg)
    s = resolve_settings(repo=args.repo, device=args.device)
    return ModelRepository(s.repo), resolve_device(s.device)


def _load(args: argparse.Namespace, models: list[str]) -> int:
    """With ``--load``, make its server load the newest version of ``models`` (what training just wrote)."""
    if args.load is not None:
        from engine.cli.reload import reload_models

        for reloaded in reload_models(args.load, models, tls=client_tls(args)):
            print(reloaded.line())
    return 0


def train_churn_command(args: argparse.Namespace) -> int:
    from engine.families.churn import train_churn

    repo, device = _target(args)
    result = train_churn(
        args.data,
        label=args.label,
        id_column=args.id_column,
        positive=args.positive,
        repo=repo,
        actions=args.actions,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
    )
    _print_binary(result)
    return _load(args, [result.path.parent.name])


def train_propensity_command(args: argparse.Namespace) -> int:
    from engine.families.propensity import train_propensity

    repo, device = _target(args)
    result = train_propensity(
        args.data,
        label=args.label,
        id_column=args.id_column,
        positive=args.positive,
        drop=args.drop,
        name=args.name,
        repo=repo,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
    )
    _print_binary(result, dropped=result.dropped)
    return _load(args, [result.path.parent.name])


def _print_binary(result: Any, *, dropped: Sequence[str] = ()) -> None:
    """What training a calibrated table classifier (churn, propensity) prints: the version, the columns used and
    left out, and the held-out figures."""
    name = result.path.parent.name
    print(f"{name} version {result.version} written to {result.path} ({result.rounds} trees, {result.seconds:.1f} s)")
    also = f"; dropped: {', '.join(dropped)}" if dropped else ""
    print(f"features: {len(result.schema.columns)}; left out: {_left_out(result.schema)}{also}")
    if result.rows_without_label:
        print(f"rows without a label, left out of training: {result.rows_without_label:,}")
    print("held-out metrics (stratified 20%):")
    print(result.metrics.table())


def _left_out(schema: Any) -> str:
    """The columns training did not use, each with its reason."""
    return ", ".join(f"{k} ({v})" for k, v in schema.excluded.items()) or "none"


def train_threat_command(args: argparse.Namespace) -> int:
    from engine.families.threat import train_threat
    from engine.families.threat.matrix import SUFFIX

    repo, device = _target(args)
    r = train_threat(
        args.data,
        label=args.label,
        normal=args.normal,
        fpr=args.fpr,
        id_column=args.id_column,
        entity=ENTITY[args.entity],
        every=args.every,
        name=args.name,
        repo=repo,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
    )
    print(f"{args.name} version {r.version} written to {r.path} ({r.epochs} epochs, {r.seconds:.1f} s)")
    print(f"columns: {len(r.schema.columns)}; left out: {_left_out(r.schema)}")
    rows = r.rows
    print(
        f"rows: {rows['train']:,} trained on, {rows['validation']:,} for early stopping, "
        f"{rows['holdout_normal']:,} held out" + (f", {rows['attacks']:,} attacks" if args.label else "")
    )
    print(f"alert threshold {r.threshold:.5g}: alerts on {r.holdout_fpr:.2%} of held-out normal rows")
    if r.metrics is not None:
        print("held-out normal rows and all attack rows:")
        print(r.metrics.table())
    # Training wrote the same version twice: fed raw columns, and fed feature matrices (what scans send).
    return _load(args, [r.path.parent.name, r.path.parent.name + SUFFIX])


def train_fraud_command(args: argparse.Namespace) -> int:
    from engine.families.fraud import FraudColumns, parse_duration_us, train_fraud

    repo, device = _target(args)
    for flag in ("train_days", "test_days"):
        if getattr(args, flag) < 1:
            msg = f"--{flag.replace('_', '-')} must be at least 1"
            raise UsageError(msg)
    if args.gap_days < 0:
        msg = "--gap-days must not be negative"
        raise UsageError(msg)
    columns = FraudColumns(
        card=args.card, time=args.time, amount=args.amount, label=args.label, terminal=args.terminal, id=args.id_column
    )
    r = train_fraud(
        args.data,
        columns=columns,
        delay_us=parse_duration_us(args.label_delay),
        train_start=args.train_start,
        train_days=args.train_days,
        gap_days=args.gap_days,
        test_days=args.test_days,
        keep_known_cards=args.keep_known_cards,
        repo=repo,
        seed=args.seed,
        device=device,
    )
    print(f"fraud version {r.version} written to {r.path} ({r.rounds} trees, {r.seconds:.1f} s)")
    print(
        f"split: {r.split.describe()}; label delay {args.label_delay}; features from every row of the file before each"
    )
    rows = r.rows
    print(
        f"rows: {rows['train']:,} trained on (the last {rows['validation']:,} also for early stopping and thresholds), "
        f"{rows['test']:,} tested ({rows['test_known_cards_left_out']:,} more left out: their card had a fraud from "
        "the training period's first day on whose label had arrived before the test day began, the Handbook's rule); "
        f"the served state starts from all {rows['history']:,}"
    )
    if rows.get("erased_cards"):
        print(
            f"left out {rows['erased_left_out']:,} transactions of {rows['erased_cards']:,} "
            f"card{'s' if rows['erased_cards'] > 1 else ''} erased with "
            "`finscore forget` (the audit log's erasure lines): not trained on, not in the state"
        )
    print(f"decision: review from {r.thresholds['review']:.4f}, decline from {r.thresholds['decline']:.4f}")
    for protocol in r.protocols:
        served = " (the model this version serves)" if protocol.name == "operator" else ""
        print(f"{protocol.name} protocol{served}: {protocol.describe()}, {protocol.rounds} trees")
        if protocol.metrics is None:
            print("  no test metrics: the test period holds no rows, or no frauds")
        else:
            print(protocol.metrics.table())
    return _load(args, [r.path.parent.name])


def train_recommender_command(args: argparse.Namespace) -> int:
    from engine.families.recommender import train_recommender

    repo, device = _target(args)
    r = train_recommender(
        args.interactions,
        user=args.user,
        item=args.item,
        weight=args.weight,
        customers=args.customers,
        products=args.products,
        rules=args.rules,
        repo=repo,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
        als={"factors": args.factors} if args.factors else None,
    )
    print(f"recommender version {r.version} written to {r.path} ({r.seconds:.1f} s)")
    left = f"; left out: {r.left_out:,} interactions" if r.left_out else ""
    print(f"{r.customers:,} customers, {r.products:,} products, {r.interactions:,} interactions{left}")
    if r.erased_customers:
        print(
            f"left out {r.erased_customers:,} customer{'s' if r.erased_customers > 1 else ''} erased with "
            "`finscore forget` (the audit log's erasure lines): not trained on, not kept in the version"
        )
    print(f"faiss index: {r.products:,} products x {r.dims} dimensions (exact inner product)")
    print("held-out quarter of each customer's interactions (then retrained on all):")
    print(r.metrics.table())
    parts = f"collaborative alone {r.ndcg_collaborative:.4f}"
    if r.ndcg_content is not None:
        parts += f", content alone {r.ndcg_content:.4f}"
    print(f"  {'NDCG@10 of each part':<34} {parts}")
    return _load(args, [r.path.parent.name])


def train_segments_command(args: argparse.Namespace) -> int:
    from engine.families.segments import train_segments

    repo, device = _target(args)
    r = train_segments(
        args.data,
        k=args.k,
        method=args.method,
        id_column=args.id_column,
        drop=args.drop,
        repo=repo,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
    )
    print(f"segments version {r.version} written to {r.path} ({r.method}, {r.seconds:.1f} s)")
    print(f"columns: {len(r.schema.columns)}; left out: {_left_out(r.schema)}")
    chosen = "chosen by " + ("BIC" if r.method == "gmm" else "silhouette") if r.metrics.scores else "as asked"
    print(f"k = {r.metrics.k} ({chosen}) on {r.metrics.rows:,} customers")
    print(r.metrics.table())
    if r.matched_version is not None:
        print(f"segment ids matched to version {r.matched_version}'s segments")
    rows = [[str(s.id), f"{s.size:,}", f"{s.size / r.metrics.rows:.1%}", s.name] for s in r.segments]
    print(text_table(rows, ["id", "customers", "share", "name"]))
    print("pictures: " + ", ".join(str(p) for p in r.plots))
    return _load(args, [r.path.parent.name])
