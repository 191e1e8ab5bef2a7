"""``make run``: synthetic customers → train churn → start Triton → score over gRPC → print → stop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from engine.bulk import score_file_through
from engine.churn import train_churn
from engine.demo_data import CHURN_ID, CHURN_LABEL, churn_customers
from engine.io import write_table
from engine.repo import ModelRepository
from engine.server import ServerPorts, TritonServer

__all__ = ["run_demo"]


def _table(rows: Sequence[tuple[object, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def run_demo(
    *, rows: int = 5000, workdir: Path = Path("build/demo"), repo: Path | None = None, sample: int = 8
) -> None:
    from clients import ModelClient

    workdir.mkdir(parents=True, exist_ok=True)
    data = write_table(churn_customers(rows), workdir / "customers.parquet")
    print(f"1. wrote {rows:,} synthetic customers to {data}")

    repository = ModelRepository(repo) if repo else ModelRepository()
    result = train_churn(data, label=CHURN_LABEL, id_column=CHURN_ID, repo=repository)
    print(f"2. trained churn version {result.version} ({result.rounds} trees) into {result.path}")
    print(result.metrics.table())

    ports = ServerPorts.free()
    with TritonServer(repository, ports=ports, models=["churn"], log_path=workdir / "triton.log") as server:
        print(f"3. Triton is serving churn on gRPC {server.grpc_url}")
        customers = pl.read_parquet(data)
        with ModelClient(server.grpc_url, "churn") as client:
            # Half who did churn, half who did not: the table shows both kinds of answer.
            picked = pl.concat(
                customers.filter(pl.col(CHURN_LABEL) == value).sample(sample // 2, seed=1) for value in ("Yes", "No")
            ).drop(CHURN_LABEL)
            out = client.infer(picked)
            print(f"4. scored {sample} customers over gRPC:\n")
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
            print(_table(table, ("customer", "churn_probability", "reason_codes", "retention_action")))
            summary = score_file_through(client, data, workdir / "scores.parquet", progress=False)
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
    print("6. Triton stopped.")
