"""The ``finscore bench`` command's options and body (the suite itself is :mod:`bench.suite`)."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

__all__ = ["add_arguments", "bench_command"]


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _rates(text: str) -> list[float] | None:
    if text == "auto":
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or comma-separated requests/s, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"rates must be positive, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the served model to measure (e.g. churn)")
    p.add_argument("--concurrency", type=_ints, default=[1, 4, 16], help="closed-loop levels (default 1,4,16)")
    p.add_argument(
        "--rate", type=_rates, default=None,
        help="open-loop requests/s, comma-separated; 'auto' (default): 0.5x and 1.5x the best closed-loop throughput; "
        "'0' or an empty list is not allowed: use --arrivals none to skip open loops",
    )  # fmt: skip
    p.add_argument("--arrivals", default="constant,poisson", help="open-loop arrivals: constant,poisson or none")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per point (default 10)")
    p.add_argument(
        "--windows", type=int, default=3,
        help="closed-loop windows of --duration per point against Triton and FastAPI, their mean reported "
        "(default 3, as perf_analyzer's trials)",
    )  # fmt: skip
    p.add_argument("--warmup", type=float, default=2.0, help="seconds run unmeasured before each point (default 2)")
    p.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    p.add_argument(
        "--client", choices=("stub", "tritonclient"), default="stub",
        help="gRPC requests serialised once (stub, as perf_analyzer) or sent with tritonclient's infer",
    )  # fmt: skip
    p.add_argument("--url", help="a running server's gRPC HOST:PORT (default: start the bundled server on free ports)")
    p.add_argument("--tls-ca", type=Path, help="with --url: gRPC over TLS, the CA (PEM) that signed the server's cert")
    p.add_argument("--tls-cert", type=Path, help="with --url: mutual TLS, this client's certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="with --url: mutual TLS, this client's private key (PEM)")
    p.add_argument("--repo", type=Path, help="model repository (default: model_repo/ or FINSCORE_REPO)")
    p.add_argument("--data", type=Path, help="CSV or Parquet rows to send (default: random values per input)")
    p.add_argument("--no-baselines", action="store_true", help="skip the in-process and FastAPI baselines")
    p.add_argument("--fastapi-workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--no-perf-analyzer", action="store_true", help="skip the perf_analyzer cross-check")
    p.add_argument(
        "--no-floor", action="store_true", help="skip the floor: a no-op model with the model's inputs and outputs"
    )
    p.add_argument(
        "--floor-rounds", type=int, default=3,
        help="rounds of the floor and the model, one window of --duration each, at each level; each ratio to the "
        "floor is their median (default 3)",
    )  # fmt: skip
    p.add_argument("--sweep", action="store_true", help="also sweep instances x queue delay x max batch size")
    p.add_argument("--sweep-instances", type=_ints, default=[1, 2], help="instance counts (default 1,2)")
    p.add_argument("--sweep-delay", type=_ints, default=[0, 500], help="queue delays in µs (default 0,500)")
    p.add_argument("--sweep-max-batch", type=_ints, default=[256, 4096], help="max batch sizes (default 256,4096)")
    p.add_argument("--p99-budget", type=float, default=20.0, help="the sweep's p99 budget in ms (default 20)")
    p.add_argument("--apply", action="store_true", help="write the sweep's choice into the model's config.pbtxt")
    p.add_argument("--json", type=Path, help="figures file (default build/bench/<model>-<time>.json)")
    p.add_argument("--compare", type=Path, help="an earlier figures file: list regressions, exit 1 if any")
    p.add_argument("--tolerance", type=float, default=0.10, help="regression tolerance, a fraction (default 0.10)")


def _check(args: argparse.Namespace) -> None:
    from engine.errors import UsageError

    arrivals = [] if args.arrivals == "none" else [a.strip() for a in args.arrivals.split(",") if a.strip()]
    unknown = [a for a in arrivals if a not in ("constant", "poisson")]
    problems = [
        (args.duration <= 0, "--duration must be positive"),
        (args.warmup < 0, "--warmup must not be negative"),
        (args.windows < 1, "--windows must be at least 1"),
        (args.floor_rounds < 1, "--floor-rounds must be at least 1"),
        (args.batch < 1, "--batch must be at least 1"),
        (0 in args.concurrency, "--concurrency levels must be at least 1"),
        (bool(unknown), f"--arrivals takes constant, poisson or none, not {', '.join(unknown)}"),
        (args.tolerance <= 0, "--tolerance must be a positive fraction, e.g. 0.1"),
        (args.apply and not args.sweep, "--apply writes the sweep's choice: add --sweep"),
        (
            bool(args.tls_ca or args.tls_cert or args.tls_key) and (not args.url or args.sweep),
            "--tls-ca/--tls-cert/--tls-key reach a running server: give its --url (not --sweep, which starts its own)",
        ),
    ]
    for bad, msg in problems:
        if bad:
            raise UsageError(msg)
    args.arrivals = arrivals


def bench_command(args: argparse.Namespace) -> int:
    from bench.report_files import compare, compare_table, load_figures, markdown, write_reports
    from bench.suite import Plan, run
    from clients.tls import Tls
    from engine.settings import resolve_settings

    _check(args)
    old = load_figures(args.compare) if args.compare else None  # a bad file fails before minutes of measuring
    repo = resolve_settings(repo=args.repo).repo
    plan = Plan(
        model=args.model, concurrency=args.concurrency, rates=args.rate, arrivals=args.arrivals,
        duration=args.duration, windows=args.windows, warmup=args.warmup, batch=args.batch, client=args.client,
        url=args.url, repo=repo,
        tls=Tls.from_files(args.tls_ca, args.tls_cert, args.tls_key),
        data=args.data,
        baselines=not args.no_baselines, fastapi_workers=args.fastapi_workers, perf_analyzer=not args.no_perf_analyzer,
        floor=not args.no_floor, floor_rounds=args.floor_rounds,
        sweep=args.sweep, sweep_instances=args.sweep_instances, sweep_delays_us=args.sweep_delay,
        sweep_max_batches=args.sweep_max_batch, p99_budget_ms=args.p99_budget,
    )  # fmt: skip
    figures = run(plan)
    out = args.json or Path("build/bench") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    paths = write_reports(figures, out)
    print()
    print(markdown(figures))
    _headline(figures)
    print("written: " + ", ".join(str(p) for p in paths))
    chosen = (figures.get("sweep") or {}).get("chosen")
    if args.apply and chosen:
        from bench.sweep import apply

        config = Path(repo) / args.model / "config.pbtxt"
        apply(config, chosen)
        print(f"wrote the chosen configuration into {config}; restart the server to use it")
    if old is None:
        return 0
    rows = compare(figures, old, tolerance=args.tolerance)
    print(compare_table(rows, args.tolerance))
    return 1 if any(r["regression"] for r in rows) else 0


def _cores(run: dict) -> str:
    cores = run.get("client_cores")
    return f" (client {cores:.2f} cores)" if cores else ""


def _headline(figures: dict) -> None:
    """The comparisons the suite exists for: finscore vs perf_analyzer (first in the mode shaped like finscore's
    client at that level, then in its other mode), Triton vs the FastAPI baseline, and the model vs the floor."""
    from bench.perf_analyzer import mode_like

    closed = [r for r in figures["runs"] if r["mode"] == "closed"]
    ours = {r["level"]: r for r in closed if r["target"] == "triton" and r["config"] == "default"}
    pa = {(r["level"], r["config"]): r for r in closed if r["target"] == "perf_analyzer" and r["throughput"]}
    api = {r["level"]: r for r in closed if r["target"] == "fastapi" and r["throughput"]}
    for level, run in sorted(ours.items()):
        like = mode_like(run.get("driver", ""))
        for mode in dict.fromkeys((like, "sync", "async")):
            if (ref := pa.get((level, mode))) is None:
                continue
            shaped = " (its mode shaped like finscore's client)" if mode == like else ""
            print(
                f"c={level}: finscore {run['throughput']:,.0f}/s p50 {run['p50_ms']:.2f} ms{_cores(run)}, "
                f"perf_analyzer {mode} {ref['throughput']:,.0f}/s p50 {ref['p50_ms']:.2f} ms{_cores(ref)}: "
                f"throughput {run['throughput'] / ref['throughput'] - 1:+.1%}{shaped}"
            )
        if level in api:
            ratio = run["throughput"] / api[level]["throughput"]
            print(f"c={level}: Triton {ratio:.2f}x the FastAPI baseline's throughput")
    for line in floor_lines(closed):
        print(line)


def floor_lines(closed: list[dict]) -> list[str]:
    """Per level, the model beside the floor: each round's ratios (p50, throughput) and their medians."""
    rounds: dict[tuple[int, str], dict[str, dict]] = {}
    for r in closed:
        if r["target"] in ("floor", "triton") and r["config"].startswith("round ") and r["throughput"]:
            rounds.setdefault((r["level"], r["config"]), {})[r["target"]] = r
    lines = []
    for level in sorted({level for level, _ in rounds}):
        pairs = [p for (lv, _), p in sorted(rounds.items(), key=lambda kv: int(kv[0][1].split()[1])) if lv == level]
        pairs = [p for p in pairs if len(p) == 2]
        if not pairs:
            continue
        p50 = [p["triton"]["p50_ms"] / p["floor"]["p50_ms"] for p in pairs]
        share = [p["triton"]["throughput"] / p["floor"]["throughput"] for p in pairs]
        model_p50 = statistics.median(p["triton"]["p50_ms"] for p in pairs)
        floor_p50 = statistics.median(p["floor"]["p50_ms"] for p in pairs)
        lines.append(
            f"c={level}: beside the floor in {len(pairs)} rounds, the model's p50 is "
            f"{' '.join(f'{x:.2f}x' for x in p50)} the floor's (median {statistics.median(p50):.2f}x; p50 "
            f"{model_p50:.2f} vs {floor_p50:.2f} ms), its throughput {' '.join(f'{x:.0%}' for x in share)} of the "
            f"floor's (median {statistics.median(share):.0%})"
        )
    return lines
