"""Two tables compared column by column (and by a model's score): what ``finscore drift`` prints and writes.

Without a model every column both tables hold is compared, an identifier too: a different id on every row
drifts by construction, which is why ``exclude`` exists rather than a guess at which columns are ids. With a
model, its input columns are compared (:mod:`engine.monitoring.model`): both files must hold them, as the model
would need them to score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from engine.errors import DataFileError, NotFoundError, UsageError
from engine.families.contract import REFERENCE_FILE
from engine.monitoring.drift import FeatureDrift, categorical_drift, column_kind, numeric_drift
from engine.monitoring.model import DriftModel, drift_model
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table, require_columns

__all__ = ["DEFAULT_THRESHOLD", "HEADER", "DriftReport", "drift_files", "drift_frames"]

#: PSI at or above which a column has drifted: credit scoring's "significant shift".
DEFAULT_THRESHOLD = 0.2
HEADER = ("column", "kind", "PSI", "test", "statistic", "p-value", "drifted")


@dataclass(frozen=True)
class DriftReport:
    """Every compared column, PSI descending, and what was compared against what."""

    features: tuple[FeatureDrift, ...]
    threshold: float
    reference: str
    current: str
    reference_rows: int
    current_rows: int
    model: DriftModel | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    def rows(self) -> list[tuple[str, ...]]:
        """The table's rows under :data:`HEADER`, figures rounded for reading."""
        return [
            (f.column, f.kind, f"{f.psi:.4f}", f.test, _figure(f.statistic), _p_value(f.p_value), _yes(f.drifted))
            for f in self.features
        ]

    def summary(self) -> str:
        """One line: which columns drifted, or that none did."""
        if not self.drifted:
            return f"no drift: every PSI is below {self.threshold:g} ({len(self.features)} compared)"
        names = ", ".join(f.column for f in self.drifted)
        return f"drift in {len(self.drifted)} of {len(self.features)} (PSI >= {self.threshold:g}): {names}"

    def as_dict(self) -> dict[str, object]:
        m = self.model
        model = None if m is None else {"name": m.name, "family": m.family, "version": m.version, "score": m.score}
        return {
            "reference": {"path": self.reference, "rows": self.reference_rows},
            "current": {"path": self.current, "rows": self.current_rows},
            "threshold": self.threshold,
            "model": model,
            "notes": list(self.notes),
            "drifted": [f.column for f in self.drifted],
            "features": [f.as_dict() for f in self.features],
        }


def _figure(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _p_value(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def _yes(drifted: bool) -> str:
    return "yes" if drifted else "no"


def _columns(
    reference: pl.DataFrame, current: pl.DataFrame, model: DriftModel | None, *, sources: tuple[str, str]
) -> tuple[list[str], list[str]]:
    """The columns to compare, and notes on the columns left out."""
    if model is not None:
        for df, source in zip((reference, current), sources, strict=True):
            require_columns(df.columns, list(model.columns), source=source)
        both = set(reference.columns) & set(current.columns)
        return [*model.columns, *(c for c in model.optional if c in both)], []
    in_current = set(current.columns)
    shared = [c for c in reference.columns if c in in_current]
    if not shared:
        msg = f"{sources[0]} and {sources[1]} have no column in common to compare"
        raise DataFileError(msg)
    notes = []
    for df, other, source in ((reference, current, sources[0]), (current, reference, sources[1])):
        alone = [c for c in df.columns if c not in set(other.columns)]
        if alone:
            notes.append(f"only in {source}, not compared: {', '.join(alone)}")
    return shared, notes


def _check_threshold(threshold: float) -> None:
    if not threshold > 0 or math.isinf(threshold):
        msg = f"--threshold must be a positive PSI such as 0.2, got {threshold}"
        raise UsageError(msg)


def drift_frames(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    model: DriftModel | None = None,
    exclude: Sequence[str] = (),
    sources: tuple[str, str] = ("the reference", "the current table"),
) -> DriftReport:
    """Drift of ``current`` against ``reference``: every column both hold, or the input columns and the score of
    ``model``, less ``exclude``; ``sources`` name the two tables in messages.

    Raises
    ------
    UsageError
        A threshold that is not a positive number, or an excluded column neither table holds.
    DataFileError
        A column a model needs is missing, or a column reads as numbers in one table and text in the other.
    """
    _check_threshold(threshold)
    unknown = [c for c in exclude if c not in reference.columns and c not in current.columns]
    if unknown:
        msg = f"--exclude {unknown[0]!r} is a column of neither {sources[0]} nor {sources[1]}"
        raise UsageError(msg)
    columns, notes = _columns(reference, current, model, sources=sources)
    features = []
    for name in (c for c in columns if c not in set(exclude)):
        ref, cur = reference.get_column(name), current.get_column(name)
        if column_kind(name, ref.dtype, cur.dtype, sources=sources) == "numeric":
            features.append(numeric_drift(name, ref, cur, threshold=threshold))
        else:
            features.append(categorical_drift(name, ref, cur, threshold=threshold))
    if model is not None and model.score is not None:
        scores = (model.scores(df, source=s) for df, s in zip((reference, current), sources, strict=True))
        features.append(numeric_drift(model.score, *scores, threshold=threshold, kind="score"))
    if model is not None and model.note:
        notes.append(model.note)
    features.sort(key=lambda f: (-f.psi, f.column))
    return DriftReport(
        tuple(features), threshold, sources[0], sources[1], reference.height, current.height, model, tuple(notes)
    )


def read_rows(path: str | Path) -> pl.DataFrame:
    """A CSV or Parquet file, or a folder of Parquet parts read as one table: a served model's sample of scored
    rows (``$FINSCORE_HOME/samples/<model>/<version>``, :mod:`engine.serving.sample`) is such a folder."""
    folder = Path(path)
    if not folder.is_dir():
        return read_table(folder)
    parts = sorted(folder.glob("*.parquet"))
    if not parts:
        msg = f"{folder}: the folder holds no Parquet parts (a model's sample is written as it unloads)"
        raise DataFileError(msg)
    return pl.concat([read_table(part) for part in parts], how="diagonal_relaxed")


def resolve_reference(value: str | Path, repo: Path | None) -> Path:
    """``value`` as a path; or, when no such path exists, ``MODEL`` or ``MODEL:VERSION`` of the repository folder
    ``repo``: the sample of its training inputs that version kept (:data:`REFERENCE_FILE`)."""
    path = Path(value)
    named = re.fullmatch(r"([A-Za-z0-9_.-]+)(?::(\d+))?", str(value))
    if path.exists() or repo is None or named is None:
        return path
    models = ModelRepository(repo)
    if not models.model_dir(named[1]).is_dir():
        return path  # neither a file nor a model: read_rows says there is no such file
    folder = models.model_dir(named[1]) / named[2] if named[2] else models.latest(named[1])
    if not folder.is_dir():
        msg = f"{named[1]} has no version {named[2]} in {models.root}"
        raise NotFoundError(msg)
    kept = folder / REFERENCE_FILE
    if not kept.is_file():
        msg = (
            f"{named[1]} version {folder.name} kept no sample of its training inputs ({REFERENCE_FILE}): trained "
            "before versions kept one, or by a family that keeps none; give --reference FILE"
        )
        raise DataFileError(msg)
    return kept


def drift_files(
    reference: str | Path,
    current: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    model: str | None = None,
    repo: Path | None = None,
    exclude: Sequence[str] = (),
) -> DriftReport:
    """:func:`drift_frames` of two CSV or Parquet files (or folders of Parquet parts); ``model`` names a served
    model of the repository folder ``repo`` (required with it); ``reference`` may name a model version of it
    (:func:`resolve_reference`)."""
    if model is not None and repo is None:
        msg = "drift_files needs the model repository folder (repo) to find a model"
        raise TypeError(msg)
    _check_threshold(threshold)  # before reading two files
    reference = resolve_reference(reference, repo)
    frames = read_rows(reference), read_rows(current)
    chosen = drift_model(model, repo=repo) if model is not None and repo is not None else None
    return drift_frames(
        *frames, threshold=threshold, model=chosen, exclude=exclude, sources=(str(reference), str(current))
    )
