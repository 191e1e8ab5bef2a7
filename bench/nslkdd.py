"""Threat-model quality on NSL-KDD, beside an IsolationForest trained on the same normal rows in the same run.

Reads ``../shared/data/nsl-kdd`` (research data, never copied into the project: converted to Parquet in a
temporary folder per run). finscore's autoencoder is trained with ``train_threat`` on KDDTrain+ (label
``label``, normal value ``normal``: it learns from normal rows only); the IsolationForest is the reference
recipe of the data set's SOURCES.md (log1p on duration and byte counts, one-hot protocol/service/flag,
min-max scaled, 200 trees) fitted on all normal rows of KDDTrain+. Both are scored on KDDTest+ and
KDDTest-21, whose attacks include 17 types absent from training.

    python -m bench.nslkdd [--data DIR] [--seed N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

COLUMNS = (
    "duration,protocol_type,service,flag,src_bytes,dst_bytes,land,wrong_fragment,urgent,hot,num_failed_logins,"
    "logged_in,num_compromised,root_shell,su_attempted,num_root,num_file_creations,num_shells,num_access_files,"
    "num_outbound_cmds,is_host_login,is_guest_login,count,srv_count,serror_rate,srv_serror_rate,rerror_rate,"
    "srv_rerror_rate,same_srv_rate,diff_srv_rate,srv_diff_host_rate,dst_host_count,dst_host_srv_count,"
    "dst_host_same_srv_rate,dst_host_diff_srv_rate,dst_host_same_src_port_rate,dst_host_srv_diff_host_rate,"
    "dst_host_serror_rate,dst_host_srv_serror_rate,dst_host_rerror_rate,dst_host_srv_rerror_rate,label,difficulty"
).split(",")
CATEGORIES = ["protocol_type", "service", "flag"]
LOGGED = ["duration", "src_bytes", "dst_bytes"]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nsl-kdd"


def load(path: Path) -> pl.DataFrame:
    """One NSL-KDD file with its column names; the difficulty column is annotation, not a feature."""
    return pl.read_csv(path, has_header=False, new_columns=COLUMNS).drop("difficulty")


def isolation_forest(train_normal: pl.DataFrame, seed: int):  # noqa: ANN201 - returns a scoring function
    """The reference IsolationForest recipe, fitted on ``train_normal``; returns ``frame -> anomaly score``."""
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import MinMaxScaler

    vocab = {c: sorted(train_normal.get_column(c).unique().to_list()) for c in CATEGORIES}
    numbers = [c for c in COLUMNS if c not in (*CATEGORIES, "label", "difficulty")]

    def matrix(df: pl.DataFrame) -> np.ndarray:
        num = df.select(
            [pl.col(c).cast(pl.Float64).log1p() if c in LOGGED else pl.col(c).cast(pl.Float64) for c in numbers]
        ).to_numpy()
        hot = [np.stack([(df.get_column(c) == v).to_numpy() for v in vocab[c]], axis=1) for c in CATEGORIES]
        return np.hstack([num, *hot]).astype(np.float64)

    scaler = MinMaxScaler().fit(matrix(train_normal))
    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1).fit(scaler.transform(matrix(train_normal)))
    return lambda df: -forest.score_samples(np.clip(scaler.transform(matrix(df)), -1.0, 2.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nslkdd", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"NSL-KDD folder (default {DEFAULT_DATA})")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    files = {name: args.data / f"{name}.txt.gz" for name in ("KDDTrain+", "KDDTest+", "KDDTest-21")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        print(f"NSL-KDD not found ({missing[0]}); pass --data DIR")
        return 1

    from engine.families.threat import ThreatScorer, train_threat
    from engine.serving.repository import ModelRepository

    train = load(files["KDDTrain+"])
    tests = {name: load(files[name]) for name in ("KDDTest+", "KDDTest-21")}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "KDDTrain+.parquet"
        train.write_parquet(table)
        started = time.perf_counter()
        trained = train_threat(
            table, label="label", normal="normal", repo=ModelRepository(Path(tmp) / "repo"), seed=args.seed
        )
        finscore_fit = time.perf_counter() - started
        scorer = ThreatScorer.load(trained.path, threads=2)
        started = time.perf_counter()
        forest = isolation_forest(train.filter(pl.col("label") == "normal"), args.seed)
        forest_fit = time.perf_counter() - started
        for name, df in tests.items():
            y = (df.get_column("label") != "normal").to_numpy()
            out = scorer.score_frame(df)
            alert = out["is_threat"]
            results[name] = {
                "rows": df.height,
                "attacks": int(y.sum()),
                "finscore_roc_auc": float(roc_auc_score(y, out["anomaly_score"])),
                "finscore_alert_fpr": float(alert[~y].mean()),
                "finscore_alert_recall": float(alert[y].mean()),
                "isolation_forest_roc_auc": float(roc_auc_score(y, forest(df))),
            }
    print(f"NSL-KDD: trained on the normal rows of KDDTrain+ ({trained.rows['train']:,} rows for the autoencoder")
    print(f"  after its validation and calibration splits; all {train.filter(pl.col('label') == 'normal').height:,}")
    print("  normal rows for the IsolationForest)")
    print(f"  fit: finscore {finscore_fit:.1f} s ({trained.epochs} epochs), IsolationForest {forest_fit:.1f} s")
    print(f"  finscore alert threshold {trained.threshold:.4g} (1% of held-out training normals)\n")
    header = f"  {'test set':<11} {'rows':>7} {'attacks':>8}  {'finscore AUC':>12}  {'IsolationForest AUC':>19}"
    print(header + f"  {'alert FPR':>9}  {'alert recall':>12}")
    for name, r in results.items():
        auc = f"{r['finscore_roc_auc']:>12.4f}  {r['isolation_forest_roc_auc']:>19.4f}"
        alerts = f"{r['finscore_alert_fpr']:>9.4f}  {r['finscore_alert_recall']:>12.4f}"
        print(f"  {name:<11} {r['rows']:>7,} {r['attacks']:>8,}  {auc}  {alerts}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
