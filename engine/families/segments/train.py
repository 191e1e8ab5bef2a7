"""Training segments: schema → the clustering space → k-means or Gaussian mixtures → names, stable ids, PNGs.

With ``k="auto"`` the number of segments is chosen among 2..:data:`K_MAX` on a seeded sample of at most
:data:`SAMPLE_ROWS` rows: by silhouette for k-means (a distance ratio, so no choice of scale), by BIC for
Gaussian mixtures (their own likelihood, with the parameters' price). The chosen model is then fitted on every
row. The mixtures' covariances get a floor of :data:`GMM_REG_COVAR` (the space is in standard deviations): one-hot
columns have no spread inside a segment made of one category, and with scikit-learn's default floor (1e-6)
their likelihood grows without bound, so BIC always asked for the most segments.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.device import Device, kmeans_class, polars_engine
from engine.errors import DataFileError, SchemaError, UsageError
from engine.families.contract import TrainResult, publish_version, table_config
from engine.families.segments.describe import segment_names, traits
from engine.families.segments.ids import Previous, match_ids
from engine.families.segments.model import METHODS, Assigner, Method
from engine.families.segments.plots import write_plots
from engine.families.segments.scorer import MODEL_FILE, OUTPUTS, PARAMS_FILE
from engine.families.segments.space import Profile, SegmentSpace
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table
from engine.tables.schema import Column, TableSchema, infer_schema

__all__ = ["Segment", "SegmentMetrics", "SegmentsTrainResult", "segments_config", "train_segments"]

MODEL_NAME = "segments"
MIN_ROWS = 20
K_MIN, K_MAX = 2, 8
K_LIMIT = 50
SAMPLE_ROWS = 5000
#: A category column with more values than this is left out (free text, names, post codes): one-hot over it
#: would drown the other columns, and a segment "named Maria" says nothing.
MAX_ONE_HOT = 12
KMEANS_INITS = 4
GMM_REG_COVAR = 0.1


@dataclass(frozen=True)
class Segment:
    id: int
    name: str
    size: int
    traits: tuple[str, ...]


@dataclass(frozen=True)
class SegmentMetrics:
    """The figures of a segmentation: printable, and the numbers of ``metrics.json``."""

    k: int
    rows: int
    silhouette: float
    bic: float | None = None
    scores: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"k": self.k, "rows": self.rows, "silhouette": self.silhouette}
        if self.bic is not None:
            out["bic"] = self.bic
        return out

    def table(self) -> str:
        lines = [f"  {'segments (k)':<22} {self.k}", f"  {'silhouette (sample)':<22} {self.silhouette:.4f}"]
        if self.bic is not None:
            lines.append(f"  {'BIC':<22} {self.bic:,.0f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SegmentsTrainResult(TrainResult):
    metrics: SegmentMetrics
    schema: TableSchema
    method: Method
    segments: tuple[Segment, ...]
    plots: tuple[Path, ...]
    #: The version whose ids this one kept, if any.
    matched_version: int | None = None


def segments_config(schema: TableSchema, *, instance_count: int = 1, device: Device = "cpu") -> ModelConfig:
    """The served ``segments`` model's config: one input per raw column the segmentation uses."""
    return table_config(MODEL_NAME, schema, OUTPUTS, device=device, instance_count=instance_count)


def _schema(df: pl.DataFrame, id_column: str | None, drop: Sequence[str]) -> TableSchema:
    absent = [c for c in drop if c not in df.columns]
    if absent:
        msg = f"--drop column {absent[0]!r} is not in the table (columns: {', '.join(df.columns[:12])})"
        raise DataFileError(msg)
    inferred = infer_schema(df.drop(drop), id_column=id_column)
    kept: list[Column] = []
    excluded = dict(inferred.excluded) | {c: "--drop" for c in drop}
    for col in inferred.columns:
        if col.kind == "categorical" and len(col.vocabulary) > MAX_ONE_HOT:
            excluded[col.name] = f"text with {len(col.vocabulary)} values, too many to one-hot (max {MAX_ONE_HOT})"
        else:
            kept.append(col)
    if not kept:
        msg = "no column to segment on: every column is an id, constant, dropped or text with too many values"
        raise SchemaError(msg)
    return TableSchema(columns=tuple(kept), id_column=inferred.id_column, excluded=excluded)


def _fit(method: Method, points: np.ndarray, k: int, *, seed: int, device: Device) -> tuple[Assigner, Any]:
    if method == "kmeans":
        km = kmeans_class(device)(n_clusters=k, n_init=KMEANS_INITS, random_state=seed).fit(points)
        return Assigner("kmeans", np.asarray(km.cluster_centers_, dtype=np.float64)), km
    # cuML has no Gaussian mixtures: scikit-learn's on either device.
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(k, covariance_type="full", reg_covar=GMM_REG_COVAR, random_state=seed, n_init=1)
    gm.fit(points)
    return Assigner("gmm", gm.means_, gm.weights_, gm.precisions_cholesky_), gm


def _silhouette(points: np.ndarray, positions: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(positions)) < 2:
        return float("nan")
    return float(silhouette_score(points, positions, random_state=seed))


def _choose_k(method: Method, sample: np.ndarray, *, seed: int, device: Device) -> tuple[int, dict[int, float]]:
    """The k of 2..K_MAX with the best silhouette (k-means) or the least BIC (gmm) on ``sample``."""
    scores: dict[int, float] = {}
    for k in range(K_MIN, min(K_MAX, len(sample) - 1) + 1):
        assigner, fitted = _fit(method, sample, k, seed=seed, device=device)
        if method == "gmm":
            scores[k] = float(fitted.bic(sample))
        else:
            scores[k] = _silhouette(sample, assigner.assign(sample), seed)
    finite = {k: s for k, s in scores.items() if np.isfinite(s)}
    if not finite:
        return K_MIN, scores
    best = min(finite, key=finite.__getitem__) if method == "gmm" else max(finite, key=finite.__getitem__)
    return best, scores


def _previous(repo: ModelRepository) -> Previous | None:
    """The newest version's segments, if the repository has a readable one (else ids start afresh)."""
    if not repo.versions(MODEL_NAME):
        return None
    try:
        path = repo.latest(MODEL_NAME)
        raw = json.loads((path / PARAMS_FILE).read_text(encoding="utf-8"))
        segs = raw["segments"]
        return Previous(
            int(path.name),
            tuple(int(s["id"]) for s in segs),
            tuple(Profile.from_dict(s["profile"]) for s in segs),
            int(raw["next_id"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _parse_k(k: int | str) -> int | None:
    if isinstance(k, str) and k.strip().lower() == "auto":
        return None
    try:
        n = int(k)
    except (TypeError, ValueError):
        n = 0
    if not K_MIN <= n <= K_LIMIT:
        msg = f"--k must be 'auto' or a whole number {K_MIN}-{K_LIMIT}, got {k!r}"
        raise UsageError(msg)
    return n


def train_segments(
    data: str | os.PathLike[str],
    *,
    k: int | str = "auto",
    method: Method = "kmeans",
    id_column: str | None = None,
    drop: Sequence[str] = (),
    repo: ModelRepository | None = None,
    seed: int = 42,
    device: Device = "cpu",
    instance_count: int = 1,
    threads: int | None = None,
) -> SegmentsTrainResult:
    """Segment the customers of ``data`` and write the segmentation as the next version in ``repo``."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    if method not in METHODS:
        msg = f"--method must be one of {', '.join(METHODS)}, got {method!r}"
        raise UsageError(msg)
    fixed_k = _parse_k(k)
    repo = repo or ModelRepository()
    df = read_table(data)
    schema = _schema(df, id_column, drop)
    if df.height < MIN_ROWS or (fixed_k is not None and fixed_k > df.height // 2):
        msg = f"{data}: too few rows to segment ({df.height:,}); need {MIN_ROWS}+ and at least 2 per segment"
        raise SchemaError(msg)

    x = schema.features(df, engine=polars_engine(device))
    space = SegmentSpace.fit(schema, x)
    points = space.transform(x)
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(len(points), min(SAMPLE_ROWS, len(points)), replace=False))
    sample = points[sample_rows]

    # One thread unless told: these fits are small, and OpenMP's spinning threads on cores other work is using
    # cost far more than they gain.
    with threadpool_limits(threads or 1):
        scores: dict[int, float] = {}
        if fixed_k is None:
            chosen, scores = _choose_k(method, sample, seed=seed, device=device)
        else:
            chosen = fixed_k
        assigner, fitted = _fit(method, points, chosen, seed=seed, device=device)
        positions = assigner.assign(points)
        # Empty segments (possible with mixtures) are dropped: a segment nobody is in has no profile to name.
        alive = np.flatnonzero(np.bincount(positions, minlength=assigner.k) > 0)
        if len(alive) < assigner.k:
            assigner = assigner.reordered(alive)
            positions = assigner.assign(points)
        silhouette = _silhouette(sample, positions[sample_rows], seed)
        bic = float(fitted.bic(points)) if method == "gmm" else None

    kk = assigner.k
    sizes = np.bincount(positions, minlength=kk)
    profiles = [space.profile(x[positions == r]) for r in range(kk)]
    previous = _previous(repo)
    ids, next_id, matched = match_ids(space, profiles, sizes.tolist(), previous)
    # Segments are kept in id order: position r of the saved arrays is the r-th smallest id.
    order = np.argsort(ids, kind="stable")
    assigner = assigner.reordered(order)
    ids = [ids[i] for i in order]
    profiles = [profiles[i] for i in order]
    sizes = sizes[order]
    positions = np.argsort(order)[positions]

    z = np.array([space.z_scores(p) for p in profiles])
    found = [traits(space, z[r], space.vector(p)) for r, p in enumerate(profiles)]
    names = segment_names(found, ids)
    segments = tuple(Segment(ids[r], names[r], int(sizes[r]), tuple(t for _, t in found[r])) for r in range(kk))

    writer = repo.new_version(MODEL_NAME)
    assigner.save(writer.path / MODEL_FILE)
    schema.save(writer.path / "schema.json")
    params = {
        "method": method,
        "space": space.as_dict(),
        "segments": [
            {"id": s.id, "name": s.name, "size": s.size, "traits": list(s.traits), "profile": p.as_dict()}
            for s, p in zip(segments, profiles, strict=True)
        ],
        "next_id": next_id,
        "matched_version": previous.version if matched and previous is not None else None,
        "seed": seed,
    }
    (writer.path / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
    legend = [f"{s.id}: {s.name} ({s.size / len(points):.0%})" for s in segments]
    dim_labels = [name if value is None else f"{name}={value}" for name, value in space.dimensions]
    written = write_plots(writer.path, sample, positions[sample_rows], legend, z, dim_labels)

    metrics = SegmentMetrics(kk, len(points), silhouette, bic, scores)
    figures = {
        **metrics.as_dict(),
        "method": method,
        "sample_rows": len(sample_rows),
        ("bic_by_k" if method == "gmm" else "silhouette_by_k"): {str(kv): s for kv, s in scores.items()},
        "segments": [{"id": s.id, "name": s.name, "size": s.size} for s in segments],
        "matched_version": params["matched_version"],
    }
    final = publish_version(
        writer,
        segments_config(schema, instance_count=instance_count, device=device),
        figures,
        reference=df.select(schema.names),
    )
    plots = tuple(final / p.name for p in written)
    matched_version = params["matched_version"]
    seconds = time.perf_counter() - started
    return SegmentsTrainResult(
        writer.version,
        final,
        metrics,
        seconds,
        schema,
        method,
        segments,
        plots,
        matched_version if isinstance(matched_version, int) else None,
    )
