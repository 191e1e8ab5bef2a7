"""``finscore bench MODEL``: latency and throughput of a served model, beside perf_analyzer and the baselines.

One run, on one server (the bundled Triton started on free ports against ``--repo``, or the one at ``--url``):

1. closed loops of batch-``--batch`` requests at each ``--concurrency``, each over ``--windows`` back-to-back
   windows (their mean reported, each kept) with Triton's own per-stage times (queue, compute input, infer,
   output) and average executed batch from its statistics API, each followed by perf_analyzer (the 2.51
   binary, whose ``-s 100 --max-trials 3`` also averages 3 windows) at the same concurrency on the same rows;
2. open loops at each ``--rate`` (``auto``: half and one and a half times the best closed-loop throughput), with
   constant and Poisson arrivals, latency from each request's intended send time;
3. the floor (with the bundled server, unless ``--no-floor``): ``<model>_floor``, a no-op python-backend model
   with the model's config (:mod:`bench.floor_model`), served beside it and measured at the same levels and
   windows, so every report shows the serving stack's own limit and the model's share of it, in the same run;
   (the sweep, when asked, comes last: it reloads the model);
4. the baselines under the same load generator: the scorer in this process, and a FastAPI + uvicorn JSON
   endpoint serving the same version folder (both need the repository, so not with ``--url`` alone);
5. with ``--sweep``, instances × queue delay × max batch size, the best configuration under ``--p99-budget``.

Figures go to ``--json`` (default ``build/bench/<model>-<time>.json``) with a Markdown summary and PNG plots
beside it; ``--compare OLD.json`` lists regressions beyond ``--tolerance`` and exits with status 1 if any.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from bench import load
from bench.report import machine_facts
from bench.targets import HttpTarget, InProcessTarget, TritonTarget, request_pool

__all__ = ["Plan", "run", "server_breakdown"]

_STAGES = (("queue", "queue_us"), ("compute_input", "compute_input_us"), ("compute_infer", "compute_infer_us"))
_STAGES += (("compute_output", "compute_output_us"),)


@dataclass
class Plan:
    """What one ``finscore bench`` run measures (the command line's options)."""

    model: str
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    rates: list[float] | None = None  # None: automatic, from the closed loops' best throughput
    arrivals: list[str] = field(default_factory=lambda: ["constant", "poisson"])
    duration: float = 10.0
    warmup: float = 2.0
    #: Back-to-back windows of ``duration`` per closed-loop point against Triton and FastAPI (perf_analyzer
    #: runs 3 trials: ``-s 100 --max-trials 3``); the in-process baseline and the sweep take one each.
    windows: int = 3
    batch: int = 1
    #: "stub" (requests serialised once, as perf_analyzer) or "tritonclient" (the Python client's infer).
    client: str = "stub"
    url: str | None = None
    #: gRPC over TLS to the server at ``url`` (clients.Tls; None: plaintext).
    tls: Any = None
    repo: Path = Path("model_repo")
    data: Path | None = None
    baselines: bool = True
    fastapi_workers: int = 1
    perf_analyzer: bool = True
    #: Serve the floor (:mod:`bench.floor_model`) beside the model and measure it at the same levels.
    floor: bool = True
    #: Rounds of the floor and the model measured one after the other at each level (one window each, the order
    #: alternating), so that each ratio to the floor comes from neighbouring windows; the report gives their median.
    floor_rounds: int = 3
    sweep: bool = False
    sweep_instances: list[int] = field(default_factory=lambda: [1, 2])
    sweep_delays_us: list[int] = field(default_factory=lambda: [0, 500])
    sweep_max_batches: list[int] = field(default_factory=lambda: [256, 4096])
    p99_budget_ms: float = 20.0


def _stats(client: grpcclient.InferenceServerClient, model: str) -> dict[str, int]:
    totals = dict.fromkeys(["inferences", "executions"] + [f"{s}_{k}" for s, _ in _STAGES for k in ("ns", "n")], 0)
    for s in client.get_inference_statistics(model_name=model).model_stats:
        totals["inferences"] += s.inference_count
        totals["executions"] += s.execution_count
        for stage, _ in _STAGES:
            duration = getattr(s.inference_stats, stage)
            totals[f"{stage}_ns"] += duration.ns
            totals[f"{stage}_n"] += duration.count
    return totals


def server_breakdown(before: dict[str, int], after: dict[str, int]) -> dict[str, float | None] | None:
    """Triton's mean time per request in each stage (µs) and its average executed batch between two snapshots."""
    d = {k: after[k] - before[k] for k in after}
    if not d["executions"]:
        return None
    out: dict[str, float | None] = {
        key: d[f"{stage}_ns"] / d[f"{stage}_n"] / 1000 if d[f"{stage}_n"] else None for stage, key in _STAGES
    }
    out["avg_batch"] = d["inferences"] / d["executions"]
    return out


def _record(
    target: str, config: str, mode: str, level: float, m: load.Measurement, server: Any = None, cores: float = 0.0
) -> dict:
    return {
        "target": target, "config": config, "mode": mode, "level": level, **m.as_dict(), "server": server,
        "client_cores": cores,
    }  # fmt: skip


class _Cores:
    """The CPU cores a client used from now to :meth:`used`: CPU time over wall time, of this process (the load
    generator) or of its finished children (``RUSAGE_CHILDREN``: perf_analyzer). On a machine the server shares,
    a client that takes more CPU leaves the server less, and measures less."""

    def __init__(self, who: int = resource.RUSAGE_SELF) -> None:
        self.who = who
        self.cpu, self.wall = self._cpu(), time.perf_counter()

    def _cpu(self) -> float:
        usage = resource.getrusage(self.who)
        return usage.ru_utime + usage.ru_stime

    def used(self) -> float:
        return (self._cpu() - self.cpu) / max(time.perf_counter() - self.wall, 1e-9)


class _Runner:
    """Measures one target after another on the same server, printing a line per point."""

    def __init__(self, plan: Plan, url: str, stats: grpcclient.InferenceServerClient) -> None:
        self.plan, self.url, self.stats = plan, url, stats
        self.runs: list[dict[str, Any]] = []

    def say(self, what: str) -> None:
        print(f"  {what}", flush=True)

    def closed(
        self, target: Any, level: int, *, config: str = "default", server: bool = False, windows: int = 1
    ) -> dict:
        p = self.plan
        served = getattr(target, "model", p.model)  # the floor's statistics are its own
        before = _stats(self.stats, served) if server else None
        cores = _Cores()
        m = load.closed_loop(target, concurrency=level, duration=p.duration, warmup=p.warmup, windows=windows)
        used = cores.used()
        breakdown = server_breakdown(before, _stats(self.stats, served)) if before is not None else None
        rec = _record(target.name, config, "closed", level, m, breakdown, used)
        self.runs.append(rec)
        spread = f" (windows {' '.join(f'{w:,.0f}' for w in m.window_throughputs)})" if m.window_throughputs else ""
        self.say(
            f"{target.name} closed c={level}: {m.throughput:,.0f}/s{spread}, p99 {m.p99_ms:.2f} ms, {m.errors} errors, "
            f"client {used:.2f} cores"
        )
        return rec

    def opened(self, target: Any, rate: float, arrivals: str) -> dict:
        p = self.plan
        before = _stats(self.stats, p.model)
        cores = _Cores()
        m = load.open_loop(target, rate=rate, duration=p.duration, arrivals=arrivals, warmup=p.warmup)
        breakdown = server_breakdown(before, _stats(self.stats, p.model))
        rec = _record(target.name, "default", arrivals, rate, m, breakdown, cores.used())
        self.runs.append(rec)
        self.say(
            f"{target.name} {arrivals} {rate:,.0f}/s: answered {m.throughput:,.0f}/s, p99 from intended send "
            f"{m.p99_ms:.2f} ms (from actual send {m.service.get('p99_ms', float('nan')):.2f} ms), {m.errors} errors"
        )
        self.say("    p50 from intended send, second by second (ms): " + " ".join(
            f"{v:.3g}" for v in m.service["p50_by_second_ms"]))  # fmt: skip
        return rec


def _auto_rates(runs: list[dict[str, Any]], batch: int) -> list[float]:
    best = max((r["throughput"] for r in runs if r["target"] == "triton"), default=0.0) / batch
    return [round(best * 0.5), round(best * 1.5)] if best else []


def _triton(runner: _Runner, plan: Plan, target: TritonTarget, pool: dict) -> None:
    """Closed loops, each followed by perf_analyzer at the same level (same server state, so the two agree or
    disagree for their own reasons), then the open loops."""
    print(
        f"Triton {plan.model} over gRPC, batch {plan.batch}"
        + (", each level beside perf_analyzer:" if plan.perf_analyzer else ":"),
        flush=True,
    )
    from bench.perf_analyzer import mode_like

    for level in plan.concurrency:
        rec = runner.closed(target, level, server=True, windows=plan.windows)
        if plan.perf_analyzer:
            # perf_analyzer shaped like this client first, then its default sync mode where that differs.
            for mode in dict.fromkeys((mode_like(rec["driver"]), "sync")):
                _perf_analyzer(runner, plan, pool, level, mode)
    rates = plan.rates if plan.rates is not None else _auto_rates(runner.runs, plan.batch)
    for rate in rates:
        for arrivals in plan.arrivals:
            runner.opened(target, rate, arrivals)


def _floor(runner: _Runner, plan: Plan, model: TritonTarget, name: str, pool: dict, stats: Any) -> None:
    """The floor model and the model in rounds at each level: one window of each per round, floor first in odd
    rounds and the model first in even ones, so a drift of the machine weighs on both alike. Each round's pair
    gives one ratio (``config`` "round k" on both records); the report takes their median."""
    print(
        f"the floor ({name}: the model's inputs read, constant outputs) and {plan.model} in {plan.floor_rounds} "
        f"rounds of one window each, batch {plan.batch}:",
        flush=True,
    )
    floor = TritonTarget(
        model.url, name, pool, stats.get_model_metadata(name), batch=plan.batch, client=plan.client,
        tls=plan.tls,
    )  # fmt: skip
    floor.name = "floor"
    try:
        for level in plan.concurrency:
            for k in range(1, plan.floor_rounds + 1):
                pair = (floor, model) if k % 2 else (model, floor)
                for target in pair:
                    runner.closed(target, level, config=f"round {k}", server=True)
    finally:
        floor.close()


def _perf_analyzer(runner: _Runner, plan: Plan, pool: dict, level: int, mode: str) -> None:
    from bench import perf_analyzer

    cores = _Cores(resource.RUSAGE_CHILDREN)
    recs = perf_analyzer.run(
        runner.url, plan.model, pool, concurrency=[level], duration=plan.duration, batch=plan.batch, mode=mode,
        tls=plan.tls,
    )  # fmt: skip
    used = cores.used()  # over its whole run (start-up and every trial), a little under its windows' own
    for rec in recs:
        runner.runs.append({**rec, "client_cores": used})
        runner.say(
            f"perf_analyzer {mode} c={level} ({' '.join(['-s 100 --max-trials 3', *perf_analyzer.MODES[mode]])}): "
            f"{rec['throughput']:,.0f}/s, p99 {rec['p99_ms']:.2f} ms, "
            f"client {used:.2f} cores"
        )


def _baselines(runner: _Runner, plan: Plan, model: str, version_dir: Path, pool: dict) -> None:
    """The in-process scorer and FastAPI baselines of ``model`` (for a feature-tensor twin: its raw model, fed
    the raw rows, as a user's own endpoint would be)."""
    from bench.fastapi_app import FastAPIServer

    print(f"baselines on {version_dir}:", flush=True)
    runner.closed(InProcessTarget(model, version_dir, pool, batch=plan.batch), 1)
    with FastAPIServer(model, version_dir, workers=plan.fastapi_workers) as api:
        target = HttpTarget(api.host, api.port, pool, batch=plan.batch)
        for level in plan.concurrency:
            runner.closed(target, level, windows=plan.windows)
        target.close()


def _sweep(runner: _Runner, plan: Plan, target: TritonTarget) -> dict[str, Any]:
    from bench.sweep import sweep

    level = max(plan.concurrency)
    print(f"configuration sweep at concurrency {level}, p99 budget {plan.p99_budget_ms:g} ms:", flush=True)

    def measure() -> dict[str, Any]:
        m = load.closed_loop(target, concurrency=level, duration=plan.duration, warmup=plan.warmup)
        runner.say(f"{m.throughput:,.0f}/s, p99 {m.p99_ms:.2f} ms, {m.errors} errors")
        return {"throughput": m.throughput, "p99_ms": m.p99_ms, "errors": m.errors}

    result = sweep(
        runner.url, plan.model, measure, instances=plan.sweep_instances, delays_us=plan.sweep_delays_us,
        max_batches=plan.sweep_max_batches, budget_p99_ms=plan.p99_budget_ms, on_config=runner.say,
    )  # fmt: skip
    return {**result, "concurrency": level}


def _probe(client: Any, plan: Plan, pool: dict[str, Any]) -> None:
    """One request of the pool, before minutes of measuring: a model that refuses it (random ids a recommender
    does not know, say) gets one sentence, with the server's own, rather than a run of errors."""
    from engine.errors import InvalidInputError

    try:
        client.infer_arrays({name: arr[: plan.batch] for name, arr in pool.items()})
    except InvalidInputError as exc:
        where = f"the rows of {plan.data}" if plan.data else "random values of its inputs (give --data FILE)"
        msg = f"model {plan.model!r} refuses a request built from {where}: {exc}"
        raise InvalidInputError(msg) from None


@dataclass(frozen=True)
class _Raw:
    """What a feature-tensor twin is measured beside: its raw model, and the raw rows its pool was encoded from."""

    model: str
    pool: dict[str, Any]
    #: A client's cost of encoding one row for the twin (p50 and p99, µs): spent before a request is sent, so
    #: outside the figures of the server, and reported beside them.
    encode_us: dict[str, float]


def _raw_model_of(config: Path) -> list[str]:
    """The raw model a twin's ``config.pbtxt`` names (its ``raw_model`` parameter), as a list of none or one."""
    import re

    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    found = re.search(r'key:\s*"raw_model"\s*value:\s*\{\s*string_value:\s*"([^"]+)"', text)
    return [found.group(1)] if found else []


def _twin_pool(stats: Any, plan: Plan, parameters: dict[str, str]) -> tuple[dict[str, Any], _Raw]:
    """The pool of a feature-tensor twin: raw rows (from ``--data`` or random, as for the raw model) encoded as
    a client encodes them (:class:`clients.features.FeatureRoute`), and the raw side of the comparison."""
    import numpy as np

    from clients.features import FeatureRoute

    raw = parameters["raw_model"]
    config = stats.get_model_config(raw, as_json=True)["config"]
    optional = {t["name"] for t in config.get("input", []) if t.get("optional")}
    raw_pool = request_pool(stats.get_model_metadata(raw).inputs, data=plan.data, model=raw, optional=optional)
    route = FeatureRoute.from_parameters(raw, parameters)
    one = [{name: arr[i : i + plan.batch] for name, arr in raw_pool.items()} for i in range(64)]
    times = []
    for rows in one * 4:
        t0 = time.perf_counter_ns()
        route.encode(rows)
        times.append((time.perf_counter_ns() - t0) / 1000)
    spent = {"p50_us": float(np.percentile(times, 50)), "p99_us": float(np.percentile(times, 99))}
    print(
        f"{plan.model} is the feature-tensor twin of {raw}: requests carry rows encoded as a client encodes them "
        f"(batch {plan.batch}: p50 {spent['p50_us']:.0f} µs, p99 {spent['p99_us']:.0f} µs in the client, "
        "before each request and outside the figures below); the baselines serve the raw rows",
        flush=True,
    )
    return route.encode(raw_pool), _Raw(raw, raw_pool, spent)


def run(plan: Plan) -> dict[str, Any]:
    """Measure everything ``plan`` asks for; the figures (see :mod:`bench.report_files`)."""
    from engine.serving.repository import ModelRepository
    from engine.serving.server import ServerPorts, TritonServer

    load_before = os.getloadavg()[0]
    version_dir = None
    with ExitStack() as stack:
        url, repo = plan.url, ModelRepository(plan.repo)
        if url is None:
            version_dir = repo.latest(plan.model)  # one sentence if untrained
        elif plan.baselines and plan.model in repo.trained_models():
            version_dir = repo.latest(plan.model)
        elif plan.baselines:
            print(f"baselines skipped: {plan.repo} has no trained {plan.model} to serve them from (--repo DIR)")
        floor = None
        if url is None:
            # A feature-tensor twin is served with its raw model: the rows it is fed are encoded from that model's.
            models, more = [plan.model, *_raw_model_of(repo.root / plan.model / "config.pbtxt")], []
            if plan.floor:
                from bench.floor import floor_repository

                more = [Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="finscore-floor-")))]
                floor = floor_repository(repo.root, plan.model, more[0])
                models.append(floor)
            server = TritonServer(plan.repo, ports=ServerPorts.free(), models=models, more_repositories=more)
            url = stack.enter_context(server).grpc_url
        elif plan.floor:
            print("floor skipped: it is served only by the bundled server (not with --url)")
        tls_kwargs = plan.tls.client_kwargs() if plan.tls else {}
        stats = stack.enter_context(grpcclient.InferenceServerClient(url=url, **tls_kwargs))
        from clients import ModelClient

        with ModelClient(url, plan.model, tls=plan.tls) as probe:
            probe.inputs  # noqa: B018 - reads the metadata: one sentence if the server is down or lacks the model
            metadata = stats.get_model_metadata(plan.model)
            config = stats.get_model_config(plan.model, as_json=True)["config"]
            parameters = ModelClient._parameters_of(config)
            raw = None
            if parameters.get("encoding"):
                pool, raw = _twin_pool(stats, plan, parameters)
            else:
                optional = {t["name"] for t in config.get("input", []) if t.get("optional")}
                pool = request_pool(metadata.inputs, data=plan.data, model=plan.model, optional=optional)
            _probe(probe, plan, pool)
        target = TritonTarget(url, plan.model, pool, metadata, batch=plan.batch, client=plan.client, tls=plan.tls)
        stack.callback(target.close)
        runner = _Runner(plan, url, stats)
        _triton(runner, plan, target, pool)
        if floor is not None:
            _floor(runner, plan, target, floor, pool, stats)
        if plan.baselines and version_dir is not None:
            if raw is None:
                _baselines(runner, plan, plan.model, version_dir, pool)
            else:
                _baselines(runner, plan, raw.model, repo.latest(raw.model), raw.pool)
        sweep = _sweep(runner, plan, target) if plan.sweep else None
        server_version = stats.get_server_metadata().version
    machine = machine_facts(load_before, tritonserver=server_version, tritonclient=dist_version("tritonclient"))
    settings = {
        "model": plan.model, "url": plan.url or "bundled server", "version_dir": str(version_dir or ""),
        "batch": plan.batch, "client": plan.client, "duration_s": plan.duration, "warmup_s": plan.warmup,
        "windows": plan.windows,
        "data": str(plan.data or "random"),
        "twin_of": raw.model if raw is not None else "",
        "client_encode_us": raw.encode_us if raw is not None else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    return {"machine": machine, "settings": settings, "runs": runner.runs, "sweep": sweep}
