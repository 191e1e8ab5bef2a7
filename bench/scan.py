"""End-to-end scan throughput (file → features → scores → alerts): finscore beside pandas + IsolationForest.

Over ~400 lines on purpose: every path it times (pandas baseline, in-process, served, with the audit trail)
must run on the same files in the same run, and each path is a short function beside the others.

``python -m bench.scan`` writes ``network_events(rows)`` once to ``--workdir`` as Parquet or CSV (reruns reuse
it), trains the threat autoencoder with ``train_threat`` on a separate ``network_events(train_rows)`` table into
a temporary model repository, and fits the baseline a SOC analyst's notebook would use on the same normal rows:
pandas, ``np.log1p`` on durations and byte counts, ``pd.get_dummies`` on protocol, service and flag,
``MinMaxScaler`` and ``IsolationForest`` with 100 trees (scikit-learn's default) and with 200 (the reference
recipe of ``bench/nslkdd.py`` and the data set's notes), its alert threshold calibrated like finscore's (1%
false positives on the held-out training normal rows). Training is not timed.

Then each path is timed from the file on disk to an alerts file on disk, in the same run:

- finscore in-process: ``engine.batch.scan.scan`` with a :class:`LocalSpec`, ECS JSON lines out;
- finscore through the bundled Triton server: :class:`ServerSpec` over shared memory for each ``--instances``
  count, and once over plain gRPC (unless ``--skip-server``);
- finscore as the ``finscore scan`` command runs it, in-process and over shared memory: the same scan plus
  its audit trail (each alert's subject pseudonymised, one hash-chained ``decision`` line per alert, in a log
  of the run's own). The trail is not part of file → alerts, and the baseline keeps none: these rows say
  what the record costs;
- the baseline: ``pd.read_parquet`` / ``read_csv`` → features → ``score_samples`` → threshold →
  ``DataFrame.to_json(orient="records", lines=True)`` for the flagged rows.

ROC-AUC (attack = ``label != "normal"``) is computed on the scanned rows outside the timed region: finscore's
scores with :meth:`engine.families.threat.ThreatScorer.score_frame` (every finscore path must flag exactly the rows it
flags, which is checked), the baseline's from its own timed run. Figures are printed, never asserted on.

Every path is timed in turn, ``--rounds`` times (default 1): a ratio to the baseline is the median of the
rounds' ratios, each from one round, so a machine that speeds up or slows down while the bench runs moves both
sides of each ratio (on a shared 2-core VM the baseline alone was seen to take 5.7 s in one run and 7.1 s in
the next). Each path runs its repeats in a process of its own (spawned, so it inherits nothing of this one's
memory), after an untimed scan of a 10,000-row file of the same events; the process reports its peak resident
memory (``VmHWM``): run at ``--rows`` 1M and 10M, it shows whether a path's memory grows with the rows.
``--paths`` times a subset (``baseline``, ``local``, ``local-audit``, ``shm``, ``grpc``, ``raw``,
``shm-audit``).

``--audit-pairs N`` also times what the audit trail costs the in-process scan the way a drifting machine least
disturbs: N pairs of scans in one process, each pair one scan without the trail and one with it, back to back
(the order turned every pair), and the median of the pairs' ratios. On this 2-core VM the rounds above, each
path in a process of its own some seconds apart, scattered from -20% to +39% around the trail's cost.

    python -m bench.scan [--rows 1000000] [--train-rows 50000] [--format parquet|csv] [--workdir DIR]
                         [--instances 1,2] [--skip-server] [--repeats 1] [--rounds 1] [--paths P,...]
                         [--audit-pairs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version as dist_version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.metrics import roc_auc_score

from bench.report import machine_facts, machine_line, save_figures

__all__ = ["Result", "SocBaseline", "in_child", "main", "pair_costs", "run", "time_audit_pairs"]

MODEL = "threat"
LABEL = "label"
NORMAL = "normal"
#: The threat model's twin fed feature matrices (what scans send to a local server).
MATRIX = "threat_features"
#: What the name of a path timed as ``finscore scan`` runs it ends with: with its audit trail.
AUDITED = " + audit trail"
#: Trees of the two baselines: scikit-learn's default, and the reference recipe of bench/nslkdd.py.
BASELINE_TREES = (100, 200)
#: The baseline's columns, as an analyst would pick them from the event table.
LOGGED = ["duration_s", "bytes_out", "bytes_in"]
NUMBERS = ["hour", "connections_per_min", "failed_logins", "rejected_rate"]
CATEGORIES = ["protocol", "service", "flag"]
#: ``train_threat``'s split of the normal rows (its seed and held-out share): the baseline learns from the
#: same rows and calibrates on the same held-out ones.
TRAIN_SEED = 42
HOLDOUT_SHARE = 0.2
FPR = 0.01
#: What ``--paths`` can name: the baselines, in-process, in-process + audit, and through Triton: shared memory
#: with feature matrices, plain gRPC with matrices, shared memory with raw columns, shm + audit.
PATHS = ("baseline", "local", "local-audit", "shm", "grpc", "raw", "shm-audit")
#: Rows of the file each timing process scans first, untimed: imports, JIT caches, sessions and thread pools
#: are then ready, as in a long-running job, and a process's first run is no outlier among its repeats.
WARMUP_ROWS = 10_000


@dataclass(frozen=True)
class Result:
    """The figures of one timed path.

    Attributes
    ----------
    path
        What was timed (``"finscore in-process"``, ``"finscore server shm, 1 instance"``, ...).
    rows
        Rows read from the file.
    seconds
        Median wall time of the repeats, from the file on disk to the alerts file on disk.
    all_seconds
        Every repeat's wall time.
    alerts
        Alerts written.
    roc_auc
        ROC-AUC of the path's scores against ``label != "normal"`` on the scanned rows (``None``: not known).
    note
        Where ``roc_auc`` comes from when not from the path's own scores.
    triton_seconds
        For a served scan, Triton's own compute per scan (input + infer + output of the model, from its
        statistics): the rest of ``seconds`` is the client, the transport and the scan's own work.
    peak_rss_mb
        Peak resident memory of the process that ran the path's repeats (imports included; the Triton
        server's own memory is not in it); the highest of the rounds.
    round_seconds
        With ``--rounds``: the median of each round's repeats, in round order (``seconds`` is their median).
    """

    path: str
    rows: int
    seconds: float
    all_seconds: list[float]
    alerts: int
    roc_auc: float | None
    note: str = ""
    triton_seconds: float | None = None
    peak_rss_mb: float | None = None
    round_seconds: list[float] | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


# --- data ---------------------------------------------------------------------------------------------------


def dataset(workdir: Path, *, rows: int, seed: int, fmt: str) -> Path:
    """``network_events(rows, seed)`` as ``<workdir>/data/events-<rows>-s<seed>.<fmt>``, written once."""
    from engine.demo.tables import network_events
    from engine.tables.io import write_table

    path = workdir / "data" / f"events-{rows}-s{seed}.{fmt}"
    if path.is_file():
        print(f"using {path}")
        return path
    t0 = time.perf_counter()
    write_table(network_events(rows, seed=seed), path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:,.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return path


def normal_split(labels: np.ndarray, *, seed: int = TRAIN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held_out)`` row positions of the normal rows, cut as ``train_threat`` cuts them."""
    normal_idx = np.random.default_rng(seed).permutation(np.flatnonzero(labels == NORMAL))
    n_hold = max(20, int(HOLDOUT_SHARE * len(normal_idx)))
    return np.sort(normal_idx[n_hold:]), normal_idx[:n_hold]


# --- the baseline -------------------------------------------------------------------------------------------


class SocBaseline:
    """pandas preprocessing + ``IsolationForest``, as a notebook would write it; higher score = more anomalous."""

    def __init__(self, train: pd.DataFrame, hold: pd.DataFrame, *, trees: int = 100) -> None:
        from sklearn.ensemble import IsolationForest
        from sklearn.preprocessing import MinMaxScaler

        from engine.families.metrics import threshold_at_fpr

        frame = self.features(train)
        self.columns: list[str] = list(frame.columns)
        x = frame.to_numpy(dtype=np.float64)
        self.scaler = MinMaxScaler().fit(x)
        self.forest = IsolationForest(n_estimators=trees, n_jobs=-1, random_state=0).fit(self.scaler.transform(x))
        self.threshold = threshold_at_fpr(self.score(hold), FPR)

    @staticmethod
    def features(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """log1p of durations and bytes, the other numbers as they are, one-hot categories (``columns``: the
        training table's, so a category not seen in training is dropped and a missing one is all zeros)."""
        x = pd.concat([np.log1p(df[LOGGED]), df[NUMBERS], pd.get_dummies(df[CATEGORIES], dtype=np.float64)], axis=1)
        return x if columns is None else x.reindex(columns=columns, fill_value=0.0)

    def score(self, df: pd.DataFrame) -> np.ndarray:
        x = self.scaler.transform(self.features(df, self.columns).to_numpy(dtype=np.float64))
        return -self.forest.score_samples(x)

    def scan(self, data: Path, out: Path) -> tuple[int, int, np.ndarray, pd.Series]:
        """File → alerts file; ``(rows, alerts, scores, labels)``."""
        df = pd.read_parquet(data) if data.suffix == ".parquet" else pd.read_csv(data)
        score = self.score(df)
        flagged = score >= self.threshold
        alerts = df.loc[flagged, ["event_id"]].assign(
            row=np.flatnonzero(flagged), anomaly_score=score[flagged], threshold=self.threshold, model="iforest"
        )
        alerts.to_json(out, orient="records", lines=True)
        return len(df), int(flagged.sum()), score, df[LABEL]


def _baseline_repeats(
    baseline: SocBaseline, data: Path, out: Path, repeats: int, warmup: Path
) -> tuple[list[float], Any]:
    """In the child: the baseline's scan of ``warmup`` (not timed), then of ``data`` ``repeats`` times;
    ``(rows, alerts, scores)`` of the last."""
    baseline.scan(warmup, out)
    seconds, (n, flagged, score, _) = _timed(
        lambda: baseline.scan(data, out), repeats, lambda: out.unlink(missing_ok=True)
    )
    return seconds, (n, flagged, score)


# --- finscore -----------------------------------------------------------------------------------------------


def _clean(out: Path) -> None:
    out.unlink(missing_ok=True)
    out.with_name(out.stem + ".summary.json").unlink(missing_ok=True)


def _timed(work: Callable[[], Any], repeats: int, before: Callable[[], None]) -> tuple[list[float], Any]:
    seconds, last = [], None
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        last = work()
        seconds.append(time.perf_counter() - t0)
    return seconds, last


def in_child(work: Callable[..., tuple[list[float], Any]], *args: Any) -> tuple[list[float], Any, float]:
    """``work(*args)`` in a spawned process: its result and the process's peak resident memory in MB."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        seconds, last, before, peak = pool.submit(_measured, work, *args).result()
    print(f"  peak RSS {peak:,.0f} MB ({before:,.0f} MB once the libraries were imported)")
    return seconds, last, peak


def _measured(work: Callable[..., tuple[list[float], Any]], *args: Any) -> tuple[list[float], Any, float, float]:
    import sklearn.ensemble  # noqa: F401

    import engine.batch.scan  # noqa: F401 - what every path imports, so ``before`` is the floor of them all

    before = _peak_rss_mb()
    seconds, last = work(*args)
    return seconds, last, before, _peak_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM``, whose count starts at ``exec``. (``ru_maxrss``
    does not: a spawned child starts with the peak of the process it was forked from.)"""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _scan_repeats(
    data: Path, out: Path, spec: Any, repeats: int, trail_dir: Path | None, warmup: Path
) -> tuple[list[float], Any]:
    """In the child: ``engine.batch.scan.scan`` of ``warmup`` (not timed: JIT caches, sessions, thread pools),
    then of ``data`` ``repeats`` times; with ``trail_dir``, as ``finscore scan`` runs it: subjects
    pseudonymised and one audit line per alert (the command always audits)."""
    from engine.batch.scan import scan
    from engine.batch.scan.run import CARRIED, SUBJECTS
    from engine.security.guard import OutputGuard

    trail = _bench_trail(trail_dir) if trail_dir is not None else None
    guard = OutputGuard.build(CARRIED, subject=SUBJECTS, pseudonym_key=trail.pseudonym_key) if trail else None
    scan([warmup], out, spec=spec, restart=True, progress=False, guard=guard, trail=trail)
    _clean(out)
    before = _served_compute(spec)
    seconds, summary = _timed(
        lambda: scan([data], out, spec=spec, restart=True, progress=False, guard=guard, trail=trail),
        repeats,
        lambda: _clean(out),
    )
    after = _served_compute(spec)
    triton = None if before is None or after is None else (after - before) / repeats
    return seconds, (summary.rows_read, summary.alerts, triton)


def time_audit_pairs(data: Path, out: Path, spec: Any, pairs: int, work: Path, warmup: Path) -> tuple[list[float], Any]:
    """In the child: ``pairs`` pairs of scans of ``data`` in this one process, each pair one scan without and one
    with the audit trail of :func:`_bench_trail` (the order turned every pair), after an untimed scan of
    ``warmup`` each way; the seconds as ``[plain, audited, plain, audited, ...]``."""
    from engine.batch.scan import scan
    from engine.batch.scan.run import CARRIED, SUBJECTS
    from engine.security.guard import OutputGuard

    trail = _bench_trail(work)
    guard = OutputGuard.build(CARRIED, subject=SUBJECTS, pseudonym_key=trail.pseudonym_key)
    ways: list[dict[str, Any]] = [{}, {"guard": guard, "trail": trail}]
    for way in ways:
        scan([warmup], out, spec=spec, restart=True, progress=False, **way)
        _clean(out)
    seconds: list[float] = []
    for k in range(pairs):
        pair = [0.0, 0.0]
        for i in (1, 0) if k % 2 else (0, 1):
            t0 = time.perf_counter()
            scan([data], out, spec=spec, restart=True, progress=False, **ways[i])
            pair[i] = time.perf_counter() - t0
            _clean(out)
        seconds += pair
    return seconds, None


def pair_costs(seconds: list[float]) -> tuple[float, list[float]]:
    """What the audit trail added in each pair of :func:`time_audit_pairs` (``[plain, audited, ...]``), and the
    median of those."""
    costs = [a / p - 1 for p, a in zip(seconds[0::2], seconds[1::2], strict=True)]
    return statistics.median(costs), costs


def _served_compute(spec: Any) -> float | None:
    """For a served scan, the seconds Triton has spent computing for the threat models so far (None in-process)."""
    from engine.batch.scan import ServerSpec

    if not isinstance(spec, ServerSpec):
        return None
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url=spec.url) as raw:
        return _triton_compute(raw)


def _finscore_path(
    name: str, data: Path, out: Path, spec: Any, *, repeats: int, warmup: Path, trail_dir: Path | None = None
) -> Result:
    """Time ``engine.batch.scan.scan`` in a process of its own; with ``trail_dir``, with the audit trail of
    :func:`_bench_trail`."""
    print(f"timing {name} ...", flush=True)
    seconds, (rows, alerts, triton), peak = in_child(_scan_repeats, data, out, spec, repeats, trail_dir, warmup)
    return Result(
        name, rows, statistics.median(seconds), seconds, alerts, None, triton_seconds=triton, peak_rss_mb=peak
    )


def _checked(result: Result, out: Path, flagged: np.ndarray, auc: float | None, *, local: bool) -> Result:
    """``result`` with the ROC-AUC of :meth:`ThreatScorer.score_frame`'s scores when the path flagged exactly
    the rows ``flagged`` that ``score_frame`` flags (every finscore path must), else none and a warning."""
    if np.array_equal(_alerted_rows(out), flagged):
        return replace(result, roc_auc=auc, note="" if local else "= in-process")
    print(f"warning: {result.path} flagged other rows than ThreatScorer.score_frame")
    return replace(result, roc_auc=None, note="alerts differ from in-process")


def _bench_trail(work: Path) -> Any:
    """An audit trail of the run's own (log and pseudonym key in ``work``), not the user's."""
    from engine.security.audit import AuditLog
    from engine.security.trail import Trail

    key = work / "pseudonym.key"
    if not key.is_file():
        key.write_bytes(os.urandom(32))
    return Trail(AuditLog(work / "audit.jsonl"), key.read_bytes())


def _alerted_rows(out: Path) -> np.ndarray:
    rows = pl.read_ndjson(out).select(pl.col("finscore").struct.field("row")).to_series()
    return np.sort(rows.to_numpy())


def _triton_compute(raw: Any) -> float:
    """Seconds Triton spent computing (input, infer, output) for the model so far, over its versions."""
    ns = 0
    for model in (MODEL, MATRIX):
        for version in raw.get_inference_statistics(model_name=model).model_stats:
            stats = version.inference_stats
            ns += stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
    return ns / 1e9


def _repository_with_instances(trained: Any, root: Path, instances: int) -> Any:
    """A copy of the trained repository whose configs run ``instances`` instances of both threat models."""
    from engine.serving.repository import ModelRepository

    source = trained.path.parent.parent
    target = root / f"model_repo-x{instances}"
    if not target.exists():
        shutil.copytree(source, target)
        for model in (MODEL, MATRIX):
            config = target / model / "config.pbtxt"
            text = config.read_text(encoding="utf-8").replace("{ count: 1 kind:", f"{{ count: {instances} kind:")
            config.write_text(text, encoding="utf-8")
    return ModelRepository(target)


def _server_paths(
    trained: Any,
    work: Path,
    data: Path,
    *,
    instances: list[int],
    repeats: int,
    warmup: Path,
    flagged: np.ndarray,
    auc: float | None,
    paths: frozenset[str] = frozenset(PATHS),
    turn: bool = False,
) -> tuple[list[Result], str]:
    """Scan through Triton over shared memory at each instance count, and over plain gRPC at the first; each
    must flag the rows ``score_frame`` flags (``flagged``), and then shares the in-process ROC-AUC ``auc``.
    ``turn``: time one server's paths in the reverse order (the results keep theirs)."""
    import tritonclient.grpc as grpcclient

    from engine.batch.scan import ServerSpec
    from engine.serving.server import ServerPorts, TritonServer

    results: list[Result] = []
    server_version = ""
    for n in instances:
        repository = _repository_with_instances(trained, work, n)
        log_path = work / f"triton-x{n}.log"
        plural = "s" if n > 1 else ""
        # (shared memory, feature matrices): the scan's default first, then what each choice is worth.
        ways = [(True, True), (False, True), (True, False)] if n == instances[0] else [(True, True)]
        ways = [w for w in ways if {(True, True): "shm", (False, True): "grpc", (True, False): "raw"}[w] in paths]
        audited = [(True, True, True)] if n == instances[0] and "shm-audit" in paths else []
        if not ways and not audited:
            continue
        with (
            TritonServer(repository, ports=ServerPorts.free(), models=[MODEL, MATRIX], log_path=log_path) as server,
            grpcclient.InferenceServerClient(url=server.grpc_url) as raw,
        ):
            server_version = raw.get_server_metadata().version
            todo = [(shm, matrix, False) for shm, matrix in ways] + audited
            timed: dict[tuple[bool, bool, bool], Result] = {}
            for shm, matrix, audit in todo[::-1] if turn else todo:
                spec = ServerSpec(server.grpc_url, MODEL, shared_memory=shm, matrix=matrix)
                how = f"{'shm' if shm else 'gRPC'}, {'matrices' if matrix else 'raw columns'}"
                name = f"finscore server {how}, {n} instance{plural}" + (AUDITED if audit else "")
                out = work / "out" / f"server-{'shm' if shm else 'grpc'}-{'m' if matrix else 'r'}-x{n}.alerts.jsonl"
                result = _finscore_path(
                    name, data, out, spec, repeats=repeats, warmup=warmup, trail_dir=work if audit else None
                )
                timed[shm, matrix, audit] = _checked(result, out, flagged, auc, local=False)
            results.extend(timed[w] for w in todo)
    return results, server_version


def _combined(rounds: list[list[Result]]) -> list[Result]:
    """Each path's results over the rounds as one: the median of the rounds' medians, every repeat, the
    highest peak memory; the first round's alerts and ROC-AUC (every round scans the same file)."""
    combined = []
    for i, first in enumerate(rounds[0]):
        each = [r[i] for r in rounds]
        tritons = [r.triton_seconds for r in each if r.triton_seconds is not None]
        peaks = [r.peak_rss_mb for r in each if r.peak_rss_mb is not None]
        combined.append(
            replace(
                first,
                seconds=statistics.median(r.seconds for r in each),
                all_seconds=[t for r in each for t in r.all_seconds],
                triton_seconds=statistics.median(tritons) if tritons else None,
                peak_rss_mb=max(peaks) if peaks else None,
                round_seconds=[r.seconds for r in each],
            )
        )
    return combined


def _ratio(base: Result, result: Result) -> tuple[float, list[float]]:
    """How many times faster ``result`` ran than ``base``: the median of the rounds' ratios (each from one
    round, so a machine that speeds up or slows down between rounds moves both sides), and those ratios."""
    if base.round_seconds and result.round_seconds:
        ratios = [b / r for b, r in zip(base.round_seconds, result.round_seconds, strict=True)]
        return statistics.median(ratios), ratios
    return base.seconds / result.seconds, [base.seconds / result.seconds]


def _audit_costs(results: list[Result]) -> list[str]:
    """For each audited path timed beside the same path without its audit trail: what the trail added in each
    round (both sides timed in that round, one after the other) and the median of those."""
    by_path = {r.path: r for r in results}
    lines = []
    for r in results:
        plain = by_path.get(r.path.removesuffix(AUDITED)) if r.path.endswith(AUDITED) else None
        if plain is None:
            continue
        costs = [
            a / p - 1
            for a, p in zip(r.round_seconds or [r.seconds], plain.round_seconds or [plain.seconds], strict=True)
        ]
        each = " ".join(f"{c:+.0%}" for c in costs)
        lines.append(
            f"{r.path}: {each} over {plain.path} in the {len(costs)} rounds (median {statistics.median(costs):+.1%})"
        )
    return lines


# --- the run ------------------------------------------------------------------------------------------------


def run(
    *,
    rows: int = 1_000_000,
    train_rows: int = 50_000,
    fmt: str = "parquet",
    workdir: Path = Path("build/bench-scan"),
    seed: int = 3,
    instances: list[int] | None = None,
    skip_server: bool = False,
    repeats: int = 1,
    rounds: int = 1,
    paths: frozenset[str] = frozenset(PATHS),
    audit_pairs: int = 0,
) -> dict[str, Any]:
    """Generate (or reuse) the data, train both models, and time every path (or those of ``paths``) in each of
    ``rounds`` rounds, ``repeats`` times a round.

    Returns
    -------
    dict
        ``machine`` (cores, CPU, load, versions), ``settings``, ``training`` and ``results`` (one
        :class:`Result` each, the baseline first).
    """
    from engine.batch.scan import LocalSpec
    from engine.demo.tables import network_events
    from engine.families.threat import ThreatScorer, train_threat
    from engine.serving.repository import ModelRepository

    instances = instances or [1, 2]
    load_before = os.getloadavg()[0]
    workdir.mkdir(parents=True, exist_ok=True)
    data = dataset(workdir, rows=rows, seed=seed, fmt=fmt)
    warmup = dataset(workdir, rows=WARMUP_ROWS, seed=seed, fmt=fmt)
    train = network_events(train_rows, seed=seed + 1)

    with tempfile.TemporaryDirectory(prefix="run-", dir=workdir) as tmp:
        work = Path(tmp)
        (work / "out").mkdir()
        print(f"training finscore threat on {train_rows:,} events ...", flush=True)
        trained = train_threat(train, label=LABEL, repo=ModelRepository(work / "model_repo"))
        auc = f"{trained.metrics.roc_auc:.4f}" if trained.metrics else "-"
        print(f"  {trained.epochs} epochs, {trained.seconds:.1f} s, held-out ROC-AUC {auc}")

        frame = train.to_pandas()
        fit_idx, hold_idx = normal_split(frame[LABEL].to_numpy())
        if len(hold_idx) != trained.rows["holdout_normal"]:
            print("warning: the baseline's held-out rows do not match train_threat's split")
        baselines, baseline_fit = [], None
        for trees in BASELINE_TREES if "baseline" in paths else ():
            t0 = time.perf_counter()
            baselines.append(SocBaseline(frame.iloc[fit_idx], frame.iloc[hold_idx], trees=trees))
            baseline_fit = time.perf_counter() - t0
            print(f"  IsolationForest({trees}) fitted on the same {len(fit_idx):,} normal rows in {baseline_fit:.1f} s")
        baseline_threshold = baselines[-1].threshold if baselines else None

        # What every finscore path must flag, and its ROC-AUC: the scorer's own scores of the whole table.
        table = pl.read_parquet(data) if fmt == "parquet" else pl.read_csv(data, infer_schema_length=None)
        attack = (table.get_column(LABEL) != NORMAL).to_numpy()
        scorer = ThreatScorer.load(trained.path, threads=os.cpu_count() or 1)
        ours = scorer.score_frame(table.select(scorer.schema.names), explain="none")
        local_auc, flagged = _auc(attack, ours["anomaly_score"]), np.flatnonzero(ours["is_threat"])
        del ours, table, scorer

        # As `finscore scan --local` does: two units at a time, half the cores each.
        spec = LocalSpec(str(trained.path), threads=max(1, (os.cpu_count() or 2) // 2))
        local_out = work / "out" / "in-process.alerts.jsonl"
        per_round, server_version = [], "not started"
        for k in range(rounds):
            if rounds > 1:
                print(f"round {k + 1} of {rounds}", flush=True)
            results = []
            for baseline in baselines:
                trees = baseline.forest.n_estimators
                name = f"pandas + IsolationForest({trees})"
                print(f"timing {name} ...", flush=True)
                base_out = work / "out" / f"iforest-{trees}.alerts.jsonl"
                seconds, (n, alerts, score), peak = in_child(
                    _baseline_repeats, baseline, data, base_out, repeats, warmup
                )
                results.append(
                    Result(name, n, statistics.median(seconds), seconds, alerts, _auc(attack, score), peak_rss_mb=peak)
                )
            # With and without the audit trail in turn, the order turned each round: a machine that slows
            # down for a while then weighs on both sides alike.
            local = [w for w in (("local", "", None), ("local-audit", AUDITED, work)) if w[0] in paths]
            timed = {}
            for path, name, trail_dir in local[::-1] if k % 2 else local:
                result = _finscore_path(
                    "finscore in-process" + name, data, local_out, spec, repeats=repeats, warmup=warmup,
                    trail_dir=trail_dir,
                )  # fmt: skip
                timed[path] = _checked(result, local_out, flagged, local_auc, local=not trail_dir)
            results.extend(timed[path] for path, _, _ in local)
            if not skip_server and paths & {"shm", "grpc", "raw", "shm-audit"}:
                served, server_version = _server_paths(
                    trained,
                    work,
                    data,
                    instances=instances,
                    repeats=repeats,
                    warmup=warmup,
                    flagged=flagged,
                    auc=local_auc,
                    paths=paths,
                    turn=k % 2 == 1,
                )
                results.extend(served)
            per_round.append(results)
        results = _combined(per_round)
        paired = None
        if audit_pairs:
            print(f"timing finscore in-process without and with the audit trail, {audit_pairs} pairs ...", flush=True)
            (work / "pairs").mkdir()
            paired, _, _ = in_child(time_audit_pairs, data, local_out, spec, audit_pairs, work / "pairs", warmup)

    machine = machine_facts(
        load_before,
        polars=pl.__version__,
        polars_threads=pl.thread_pool_size(),
        onnxruntime=dist_version("onnxruntime"),
        **{"scikit-learn": dist_version("scikit-learn")},
        pandas=pd.__version__,
        pyarrow=dist_version("pyarrow"),
        tritonserver=server_version,
        **{"nvidia-pytriton": dist_version("nvidia-pytriton")},
    )
    settings = {
        "rows": rows,
        "train_rows": train_rows,
        "format": fmt,
        "data": str(data),
        "seed": seed,
        "repeats": repeats,
        "rounds": rounds,
        "warmup_rows": WARMUP_ROWS,
        "instances": [] if skip_server else instances,
        "paths": sorted(paths),
        "audit_pairs": audit_pairs,
    }
    training = {
        "finscore_seconds": trained.seconds,
        "finscore_epochs": trained.epochs,
        "finscore_threshold": trained.threshold,
        "iforest_seconds": baseline_fit,
        "iforest_threshold": baseline_threshold,
        "normal_fit_rows": len(fit_idx),
        "normal_holdout_rows": len(hold_idx),
    }
    return {
        "machine": machine,
        "settings": settings,
        "training": training,
        "results": [asdict(r) | {"rows_per_second": r.rows_per_second} for r in results],
        "audit_pairs": paired,
    }


def _auc(attack: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(attack, score)) if 0 < attack.sum() < len(attack) else None


def _table(results: list[Result]) -> str:
    bases = [r for r in results if r.path.startswith("pandas")]
    header = (
        "path",
        "rows",
        "seconds",
        "rows/s",
        *(f"vs IF({b.path.split('(')[-1]}" for b in bases),
        "alerts",
        "peak RSS",
        "ROC-AUC",
    )
    lines = [
        (
            r.path,
            f"{r.rows:,}",
            f"{r.seconds:.2f}",
            f"{r.rows_per_second:,.0f}",
            *(f"{_ratio(b, r)[0]:.1f}x" for b in bases),
            f"{r.alerts:,}",
            "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:,.0f} MB",
            ("-" if r.roc_auc is None else f"{r.roc_auc:.4f}") + (f" ({r.note})" if r.note else ""),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in lines)])


def _runs(rounds: int, repeats: int) -> str:
    if rounds == 1:
        return f"{repeats} run{'s' if repeats > 1 else ''}"
    return f"{rounds} rounds" + (f" (each the median of {repeats})" if repeats > 1 else "")


def main(argv: list[str] | None = None) -> None:
    """Command line: measure, print the table, optionally write the figures as JSON.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``); see the module docstring.
    """
    from engine.errors import FinscoreError

    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows scanned (default 1,000,000)")
    parser.add_argument("--train-rows", type=int, default=50_000, help="rows of the training table (default 50,000)")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="the scanned file's format")
    parser.add_argument(
        "--workdir", type=Path, default=Path("build/bench-scan"), help="data cache and scratch (build/bench-scan)"
    )
    parser.add_argument("--seed", type=int, default=3, help="seed of the scanned data; training uses seed+1")
    parser.add_argument("--instances", default="1,2", help="Triton instance counts to try (default 1,2)")
    parser.add_argument("--skip-server", action="store_true", help="time only the in-process scan and the baseline")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per path and round (default 1)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of every path in turn; each ratio is the median of the rounds' ratios (default 1)",
    )
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"paths to time, comma-separated (default all: {','.join(PATHS)})"
    )
    parser.add_argument(
        "--audit-pairs",
        type=int,
        default=0,
        help="also time the in-process scan without and with its audit trail N times each in one process, "
        "alternating (what the trail costs, with the machine's drift on both sides of each pair)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        instances = [int(x) for x in args.instances.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--instances must be comma-separated integers, got {args.instances!r}")
    paths = frozenset(p.strip() for p in args.paths.split(",") if p.strip())
    if not paths or paths - set(PATHS):
        parser.error(f"--paths takes some of {','.join(PATHS)}, got {args.paths!r}")
    if (
        args.rows < 1
        or args.train_rows < 1000
        or min(args.repeats, args.rounds) < 1
        or args.audit_pairs < 0
        or not instances
        or min(instances) < 1
    ):
        parser.error(
            "--rows, --repeats, --rounds and --instances must be positive, --audit-pairs not negative "
            "and --train-rows at least 1000"
        )
    try:
        figures = run(
            rows=args.rows,
            train_rows=args.train_rows,
            fmt=args.format,
            workdir=args.workdir,
            seed=args.seed,
            instances=instances,
            skip_server=args.skip_server,
            repeats=args.repeats,
            rounds=args.rounds,
            paths=paths,
            audit_pairs=args.audit_pairs,
        )
    except FinscoreError as exc:  # e.g. a server that cannot start, or shared memory it cannot map
        raise SystemExit(f"bench.scan: {exc}") from None

    results = [Result(**{k: v for k, v in r.items() if k != "rows_per_second"}) for r in figures["results"]]
    t, m = figures["training"], figures["machine"]
    print()
    print(_table(results))
    print(
        f"seconds: file on disk -> alerts file on disk, median of {_runs(args.rounds, args.repeats)}, each process "
        f"warmed up on {WARMUP_ROWS:,} rows first; ratios: the median of the rounds' ratios; training not included "
        f"(finscore {t['finscore_seconds']:.1f} s, IsolationForest {t['iforest_seconds'] or 0:.1f} s, "
        f"both on the same {t['normal_fit_rows']:,} normal rows, thresholds at {FPR:.0%} FPR on "
        f"{t['normal_holdout_rows']:,} held-out normal rows)"
    )
    bases = [r for r in results if r.path.startswith("pandas")]
    for r in results if args.rounds > 1 and bases else ():
        if r not in bases:
            ratio, each = _ratio(bases[0], r)
            rounds = " ".join(f"{x:.1f}x" for x in each)
            print(f"{r.path}: {rounds} {bases[0].path} in the {args.rounds} rounds (median {ratio:.1f}x)")
    for line in _audit_costs(results):
        print(line)
    if figures["audit_pairs"]:
        median, costs = pair_costs(figures["audit_pairs"])
        plain = statistics.median(figures["audit_pairs"][0::2])
        print(
            f"finscore in-process{AUDITED}, timed in pairs in one process: {' '.join(f'{c:+.0%}' for c in costs)} "
            f"over the scan without it (plain {plain:.2f} s) in the {len(costs)} pairs (median {median:+.1%})"
        )
    for r in results:
        if r.triton_seconds is not None:
            print(f"{r.path}: Triton computed for {r.triton_seconds:.2f} s of the {r.seconds:.2f} s")
    print(machine_line(m))
    save_figures(figures, args.json)


if __name__ == "__main__":
    main()
