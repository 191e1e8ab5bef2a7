"""``make run``: synthetic customers, an SSH auth log, card transactions, investment holdings, bank customers and
their questions → train churn, threat, fraud, the recommender, propensity, segments and the assistant → one
Triton serves them all → score over gRPC → scan the log through the server → authorize cards → recommend products
→ segment customers and plan a campaign → answer questions or hand them over → verify a face, identify it among
10,000 people, check an identity document → stop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from engine.batch.scan import ServerSpec, scan
from engine.batch.scan.run import CARRIED, SUBJECTS
from engine.batch.score import score_file_through
from engine.cli.common import text_table
from engine.demo.advisory import advisory_tables
from engine.demo.authlog import write_ssh_auth_log
from engine.demo.identity_job import identity_demo, train_identity
from engine.demo.marketing_job import marketing_demo, train_marketing
from engine.demo.tables import CHURN_ID, CHURN_LABEL, churn_customers
from engine.demo.transactions import synthetic_transactions
from engine.families.churn import train_churn
from engine.families.fraud import FraudColumns, train_fraud
from engine.families.fraud.scorer import LIVE_STATE
from engine.families.recommender import train_recommender
from engine.families.threat import train_threat
from engine.families.threat.authlog import read_auth_log
from engine.security.guard import OutputGuard
from engine.security.trail import DecisionAudit, Trail
from engine.serving.repository import ModelRepository
from engine.serving.server import ServerPorts, TritonServer
from engine.tables.io import write_table
from kernels.transactions import DAY_US

__all__ = ["run_demo"]


#: The new customer of the recommender's part: no holdings, only a profile.
NEW_CUSTOMER = {
    "risk_tolerance": 4.0,
    "horizon_years": 10.0,
    "income_band": "middle",
    "goal": "growth",
    "esg_preference": "some",
    "age": 40.0,
}


def run_demo(
    *, rows: int = 5000, workdir: Path = Path("build/demo"), repo: Path | None = None, sample: int = 8
) -> None:
    from clients import ModelClient

    workdir.mkdir(parents=True, exist_ok=True)
    data = write_table(churn_customers(rows), workdir / "customers.parquet")
    print(f"1. wrote {rows:,} synthetic customers to {data}")
    log, attackers = _auth_log(workdir)

    repository = ModelRepository(repo) if repo else ModelRepository()
    result = train_churn(data, label=CHURN_LABEL, id_column=CHURN_ID, repo=repository)
    print(f"2. trained churn version {result.version} ({result.rounds} trees) into {result.path}")
    print(result.metrics.table())

    threat = train_threat(log, repo=repository)
    print(
        f"   trained threat version {threat.version} on the windows of {log.name} (no labels; alert threshold "
        f"{threat.threshold:.3g} = 1% of held-out windows)"
    )

    fraud_start = _train_fraud(workdir, repository)
    investors = _train_recommender(workdir, repository)
    marketing = train_marketing(workdir, repository, rows=rows)
    identity = train_identity(workdir, repository)

    trail = Trail.from_env()
    ports = ServerPorts.free()
    models = ["churn", "churn_features", "threat", "threat_features", "fraud", "recommender"]
    models += ["propensity", "segments", "assistant", "face_verify"]
    with TritonServer(repository, ports=ports, models=models, log_path=workdir / "triton.log") as server:
        print(
            f"3. Triton is serving churn, threat, fraud, the recommender, propensity, segments, the assistant and "
            f"face verification on gRPC {server.grpc_url}"
        )
        customers = pl.read_parquet(data)
        with ModelClient(server.grpc_url, "churn") as client:
            # Half who did churn, half who did not: the table shows both kinds of answer.
            picked = pl.concat(
                customers.filter(pl.col(CHURN_LABEL) == value).sample(sample // 2, seed=1) for value in ("Yes", "No")
            ).drop(CHURN_LABEL)
            out = client.infer(picked)
            twin = client.feature_route() is not None
            route = "encoded here: one feature tensor each to churn_features" if twin else "raw columns"
            print(f"4. scored {sample} customers over gRPC ({route}):\n")
            table = [
                (
                    cid,
                    f"{p:.3f}",
                    ", ".join(r for r in reasons if r) or "-",
                    action,
                )
                for cid, p, reasons, action in zip(
                    picked.get_column(CHURN_ID).to_list(),
                    out["churn_probability"],
                    out["reason_codes"],
                    out["retention_action"],
                    strict=True,
                )
            ]
            print(text_table(table, ("customer", "churn_probability", "reason_codes", "retention_action")))
            summary = score_file_through(
                client,
                data,
                workdir / "scores.parquet",
                progress=False,
                guard=OutputGuard.build(("id",), subject=("id",), pseudonym_key=trail.pseudonym_key),
                audit=DecisionAudit(
                    trail,
                    command="demo",
                    model="churn",
                    version=client.served_version(),
                    decision="retention_action",
                    score="churn_probability",
                ),
            )
        scores = pl.read_parquet(workdir / "scores.parquet")
        at_risk = int((scores.get_column("churn_probability").to_numpy() >= result.metrics.threshold).sum())
        print(f"\n5. bulk-scored {data.name} through the server: {summary.line()}")
        print(f"   {at_risk:,} customers at risk (probability >= {result.metrics.threshold:.3f}); top actions:")
        top = (
            scores.filter(pl.col("retention_action") != "none")
            .group_by("retention_action")
            .len()
            .sort("len", descending=True)
            .head(5)
        )
        for action, count in top.iter_rows():
            print(f"   {count:>6,}  {action}")
        print(f"   written to {summary.out}")
        mean = float(np.mean(scores.get_column("churn_probability").to_numpy()))
        print(f"   mean churn probability {mean:.3f}")
        _threat_demo(server.grpc_url, log, attackers, workdir, trail)
        _fraud_demo(server.grpc_url, *fraud_start)
        _recommender_demo(server.grpc_url, investors)
        marketing_demo(server.grpc_url, marketing, repository, step=10)
        identity_demo(server.grpc_url, identity, repository, step=13)
    print("16. Triton stopped.")
    _audit_summary(trail, set(customers.get_column(CHURN_ID).to_list()))


def _audit_summary(trail: Trail, ids: set[str]) -> None:
    """Count the audit log's lines, look for the customers' ids in it, and verify its chain."""
    from collections import Counter

    from engine.security.audit import verify

    report = verify(trail.path)
    events: Counter[str] = Counter()
    leaked = 0
    with trail.path.open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            events[record["event"]] += 1
            leaked += sum(1 for v in record.values() if isinstance(v, str) and v in ids)
    print(
        f"17. audit log {trail.path}: {report.lines:,} lines ("
        + ", ".join(f"{n:,} {e}" for e, n in events.most_common())
        + f"); {leaked} of them name a customer by id rather than pseudonym; the log refuses card numbers itself. "
        f"`finscore audit verify {trail.path}`: {report.sentence()}"
    )


def _auth_log(workdir: Path) -> tuple[Path, set[str]]:
    log = workdir / "auth.log"
    attackers = write_ssh_auth_log(log, 30_000, seed=7)
    print(f"   wrote a synthetic OpenSSH auth log of 30,000 lines to {log} ({len(attackers)} attacking addresses)")
    return log, attackers


def _threat_demo(url: str, log: Path, attackers: set[str], workdir: Path, trail: Trail) -> None:
    from clients import ModelClient

    windows = read_auth_log(log).features
    bad = windows.filter(pl.col("source_ip").is_in(sorted(attackers))).sort("failures", descending=True).head(3)
    good = windows.filter(~pl.col("source_ip").is_in(sorted(attackers))).sample(3, seed=2)
    picked = pl.concat([bad, good])
    with ModelClient(url, "threat") as client:
        out = client.infer(picked)
    print("\n6. scored 6 auth-log windows in real time over gRPC (3 from attacking addresses, 3 not):\n")
    rows = [
        (ip, str(start)[:16], f"{score:.2f}", "yes" if flag else "no", ", ".join(t for t in top if t))
        for ip, start, score, flag, top in zip(
            picked.get_column("source_ip").to_list(),
            picked.get_column("window_start").to_list(),
            out["anomaly_score"],
            out["is_threat"],
            out["top_features"],
            strict=True,
        )
    ]
    print(text_table(rows, ("source_ip", "window", "anomaly_score", "is_threat", "top_features")))
    guard = OutputGuard.build(CARRIED, subject=SUBJECTS, pseudonym_key=trail.pseudonym_key)
    summary = scan(
        [log],
        workdir / "alerts.jsonl",
        spec=ServerSpec(url, "threat"),
        progress=False,
        restart=True,
        guard=guard,
        trail=trail,
    )
    alerts = pl.read_ndjson(workdir / "alerts.jsonl")
    flagged = set(alerts.get_column("source").struct.field("ip").to_list()) if alerts.height else set()
    print(f"\n7. scanned {log.name} through the server ({summary.transport}): {summary.line()}")
    print(
        f"   alerts name {len(flagged)} addresses: {len(flagged & attackers)} of the {len(attackers)} attackers, "
        f"{len(flagged - attackers)} others; ECS alerts in {workdir / 'alerts.jsonl'}"
    )


def _train_fraud(workdir: Path, repository: ModelRepository) -> tuple[list[str], int]:
    """Generated card transactions → the fraud model; returns some cards and the time after the history."""
    tx = synthetic_transactions(cards=1000, terminals=2000, days=21, seed=5)
    data = write_table(tx, workdir / "transactions.parquet")
    # The demo's history is generated anew each run: a live state kept by an earlier run would be ahead of it.
    (repository.model_dir("fraud") / LIVE_STATE).unlink(missing_ok=True)
    columns = FraudColumns("card_id", "timestamp", "amount", "is_fraud", "terminal_id", "transaction_id")
    r = train_fraud(data, columns=columns, delay_us=DAY_US, repo=repository)
    m = r.metrics
    print(
        f"   trained fraud version {r.version} on {tx.height:,} generated card transactions ({r.split.describe()}, "
        f"labels known a day later)"
        + (f": test ROC-AUC {m.roc_auc:.3f}, average precision {m.average_precision:.3f}" if m else "")
    )
    busy = tx.group_by("card_id").len().sort("len", descending=True).head(2)["card_id"].cast(str).to_list()
    return busy, int(tx["timestamp"].cast(pl.Int64).max()) + 60_000_000  # type: ignore[arg-type]


def _fraud_demo(url: str, cards: list[str], start_us: int) -> None:
    from clients import FraudClient

    card, other = cards
    ids = ["demo-1", "demo-2", "demo-3", "demo-4"]
    amounts = [23.5, 31.0, 640.0, 48.2]
    auths = {
        "transaction_id": ids,
        "card_id": [card, card, card, other],
        "terminal_id": ["17", "17", "912", "40"],
        "amount": amounts,
        "timestamp": [start_us, start_us + 60_000_000, start_us + 120_000_000, start_us + 180_000_000],
    }
    with FraudClient(url) as fraud:
        out = fraud.authorize(auths)
        fraud.report(["demo-3"], [1])
    print("\n8. scored 4 card authorizations over gRPC, one at a time in the server's order (state kept per card):\n")
    rows = [
        (tid, f"{amount:.2f}", f"{p:.3f}", decision, ", ".join(r for r in reasons if r) or "-")
        for tid, amount, p, decision, reasons in zip(
            ids,
            amounts,
            out["fraud_probability"],
            out["decision"],
            out["reason_codes"],
            strict=True,
        )
    ]
    print(text_table(rows, ("transaction", "amount", "fraud_probability", "decision", "reason_codes")))
    print("   demo-3 reported as fraud: its terminal's risk counts it once the label delay has passed")


def _train_recommender(workdir: Path, repository: ModelRepository) -> list[str]:
    """Generated investors, products and holdings → the recommender; returns two customers with holdings."""
    tables = advisory_tables(1500, 2000, seed=11)
    paths = tables.write(workdir / "advisory")
    r = train_recommender(
        paths["holdings.parquet"],
        weight="amount",
        customers=paths["customers.parquet"],
        products=paths["products.parquet"],
        repo=repository,
    )
    content = f", content alone {r.ndcg_content:.3f}" if r.ndcg_content is not None else ""
    print(
        f"   trained recommender version {r.version} on {r.interactions:,} generated holdings of {r.customers:,} "
        f"investors in {r.products:,} products: held-out NDCG@10 {r.metrics.ndcg_at_10:.3f} "
        f"(collaborative alone {r.ndcg_collaborative:.3f}{content})"
    )
    # Two investors whose goals differ, so their lists do too.
    people = tables.customers
    return [people.filter(pl.col("goal") == goal)["customer_id"][0] for goal in ("income", "growth")]


def _recommender_demo(url: str, known: list[str], k: int = 3) -> None:
    from clients import RecommenderClient

    with RecommenderClient(url) as rec:
        lists = rec.recommend(known, k=k)
        new = rec.recommend(["new-investor"], k=k, profile={f: [v] for f, v in NEW_CUSTOMER.items()})
    profile = ", ".join(
        f"{f.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{f.replace('_', ' ')} {v}"
        for f, v in NEW_CUSTOMER.items()
    )
    print(
        f"\n9. recommended {k} products each over gRPC to 2 investors with holdings and 1 new investor who has "
        f"only a profile ({profile}); only products the suitability rules allow:\n"
    )
    names = [*known, "new (profile only)"]
    rows = [
        (name, rank, r.product_id, f"{r.score:.3f}", r.reason)
        for name, recs in zip(names, [*lists, *new], strict=True)
        for rank, r in enumerate(recs, 1)
    ]
    print(text_table(rows, ("customer", "rank", "product", "score", "reason")))
