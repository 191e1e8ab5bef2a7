"""1:N identification over the face gallery, after embedding: one query at a time, exact scan and HNSW.

Enrols ``--size`` generated embeddings of ``--dim`` dimensions (SFace's 128 by default) in clusters that look like
people: ``--per`` faces each around the person's centre, cosine ~0.8 to it by default, so two photos of one person
score ~0.64 and two people ~0 ± 0.09, as SFace's genuine and impostor pairs do. Then times
``Gallery.identify(query, k=5)`` for ``--queries`` fresh faces of enrolled people (never enrolled themselves),
one at a time, for each index kind: p50, p99 and max in ms, and how often the planted person comes first (recall@1)
and among the five (recall@5). Also the time to build the index and to save and load the gallery.

    python -m bench.gallery [--size 100000] [--dim 128] [--per 5] [--queries 2000] [--kinds exact,hnsw]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.families.face.gallery import FILE, Gallery


def people(size: int, dim: int, per: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [size // per, dim], faces [size, dim] and the person of each face; ``spread``: the noise's norm
    relative to the centre's (cosine to the centre 1 / sqrt(1 + spread²))."""
    rng = np.random.default_rng(seed)
    n = size // per
    centres = rng.standard_normal((n, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owner = np.repeat(np.arange(n), per)
    faces = np.empty((len(owner), dim), np.float32)
    step = 100_000
    for start in range(0, len(owner), step):  # in parts: at 1M the noise alone would be another 0.5 GB
        part = owner[start : start + step]
        x = centres[part] + spread / np.sqrt(dim) * rng.standard_normal((len(part), dim), dtype=np.float32)
        faces[start : start + step] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return centres, faces, owner


def run(kind: str, faces: np.ndarray, owner: np.ndarray, queries: np.ndarray, planted: np.ndarray) -> None:
    limit = len(faces) if kind == "exact" else 0
    g = Gallery(faces.shape[1], exact_limit=limit)
    g.enroll_many([f"P{o}" for o in owner.tolist()], faces)
    started = time.perf_counter()
    g.build()
    built = time.perf_counter() - started
    times = np.empty(len(queries))
    first = among = 0
    for i, (q, p) in enumerate(zip(queries, planted.tolist(), strict=True)):
        started = time.perf_counter_ns()
        found = g.identify(q, 5)
        times[i] = (time.perf_counter_ns() - started) / 1e6
        ids = [person for person, _ in found]
        first += ids[0] == f"P{p}"
        among += f"P{p}" in ids
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as tmp:
        started = time.perf_counter()
        g.save(tmp)
        saved = time.perf_counter() - started
        size = (Path(tmp) / FILE).stat().st_size
        started = time.perf_counter()
        again = Gallery.load(tmp, exact_limit=limit)
        loaded = time.perf_counter() - started
        assert again.index_kind == g.index_kind
    p50, p99 = np.percentile(times, [50, 99])
    print(
        f"{kind:5} {len(g):>9,} faces  p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {times.max():7.3f} ms  "
        f"recall@1 {first / len(queries):.4f}  recall@5 {among / len(queries):.4f}  build {built:6.2f} s  "
        f"save {saved:5.2f} s  load {loaded:5.2f} s  file {size / 2**20:,.0f} MiB",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="enrolled faces (default 100,000)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimensions (default 128, SFace's)")
    parser.add_argument("--per", type=int, default=5, help="faces per person (default 5)")
    parser.add_argument("--spread", type=float, default=0.75, help="noise around a person's centre (default 0.75)")
    parser.add_argument("--queries", type=int, default=2000, help="identifications timed (default 2,000)")
    parser.add_argument("--kinds", default="exact,hnsw", help="index kinds to time (default exact,hnsw)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    centres, faces, owner = people(args.size, args.dim, args.per, args.spread, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    planted = rng.integers(0, len(centres), args.queries)
    noise = args.spread / np.sqrt(args.dim) * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries = centres[planted] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    same = float(np.mean(np.sum(queries * faces[planted * args.per], axis=1)))
    print(
        f"{len(faces):,} faces of {len(centres):,} people, {args.dim} dimensions; a query's cosine to one of its "
        f"person's faces: {same:.3f} on average",
        flush=True,
    )
    for kind in args.kinds.split(","):
        run(kind.strip(), faces, owner, queries, planted)


if __name__ == "__main__":
    main()
