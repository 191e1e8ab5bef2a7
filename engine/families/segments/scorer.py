"""Scoring segments: a customer's raw columns → their segment id, its name, and the three traits of theirs that
most set that segment apart.

Inputs are checked and turned into features exactly as churn's are (:class:`engine.families.twin.TableEncoder`):
FP32 numbers with NaN for missing, BYTES text with empty for missing, and a category never seen in training read
as missing. In the clustering space a missing value is neutral (the table's mean, or its shares of a category's
values; :mod:`engine.families.segments.space`), so a row of nothing but gaps still gets a segment.

The reasons are per customer: for each column, the product (summed over the column's dimensions) of how far the
customer and their segment stand from the whole table, in the same direction. The three largest positive ones are
named as the customer's own traits ("young", "high balance", "channel app"); fewer than three leave empty names.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.device import Device, polars_engine
from engine.families.contract import N_REASONS, load_version, reason_names, schema_inputs, top_indices
from engine.families.segments.describe import trait_phrases
from engine.families.segments.model import Assigner
from engine.families.segments.space import SegmentSpace
from engine.families.twin import TableEncoder
from engine.serving.config import TensorSpec
from engine.tables.schema import TableSchema

__all__ = ["MODEL_FILE", "OUTPUTS", "PARAMS_FILE", "SegmentScorer"]

MODEL_FILE = "segments.npz"
PARAMS_FILE = "segments.json"
OUTPUTS = (
    TensorSpec("segment", "INT32", (1,)),
    TensorSpec("segment_name", "BYTES", (1,)),
    TensorSpec("reason_codes", "BYTES", (N_REASONS,)),
)


class SegmentScorer:
    """A trained segmentation version, ready to score."""

    def __init__(
        self,
        assigner: Assigner,
        space: SegmentSpace,
        ids: Sequence[int],
        names: Sequence[str],
        *,
        device: Device = "cpu",
        version: str = "",
    ) -> None:
        self.assigner = assigner
        self.space = space
        self.schema = space.schema
        self.ids = np.asarray(ids, dtype=np.int32)
        self.names = np.asarray(names, dtype=object)
        self.device = device
        self.version = version
        self.encoder = TableEncoder(self.schema, model="segments", engine=polars_engine(device), online=device == "cpu")
        # Where each segment stands from the table, per dimension: what a customer's reasons are weighed against.
        self._centre = space.centre
        self._apart = assigner.means - self._centre
        groups = space.groups
        # Trait phrases: a number column's (low, high) pair, then one per category value; -1 is no trait.
        phrases = trait_phrases(space)
        self._phrases = [p for pair in phrases for p in pair]
        self._width = len(self.schema.columns)
        # Sums per column are one product with a 0/1 [dimensions, columns] matrix.
        self._per_column = np.zeros((len(groups), self._width))
        self._per_column[np.arange(len(groups)), groups] = 1.0
        self._first_dim = np.searchsorted(groups, np.arange(self._width))
        self._categorical = np.array([c.kind == "categorical" for c in self.schema.columns])

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu") -> SegmentScorer:
        """Load a version folder written by :func:`engine.families.segments.train.train_segments`."""

        def read(d: Path) -> SegmentScorer:
            params = json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))
            space = SegmentSpace.from_dict(TableSchema.load(d / "schema.json"), params["space"])
            segments = params["segments"]
            return cls(
                Assigner.load(d / MODEL_FILE, params["method"]),
                space,
                [s["id"] for s in segments],
                [s["name"] for s in segments],
                device=device,
                version=d.name,
            )

        return load_version(version_dir, family="segments", model_file=MODEL_FILE, read=read)

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS

    @property
    def inputs(self) -> list[TensorSpec]:
        return schema_inputs(self.schema)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Check a request; return its columns as 1-D arrays. Any fault is an :class:`InvalidInputError` naming
        the input."""
        return self.encoder.validate(columns)

    def points(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """Validated rows as points of the clustering space."""
        return self.space.transform(self.encoder.features(rows))

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Segment validated rows (as :meth:`validate` returns); every output is computed."""
        x = self.encoder.features(rows)
        points = self.space.transform(x)
        position = self.assigner.assign(points)
        return {
            "segment": self.ids[position],
            "segment_name": self.names[position],
            "reason_codes": self.reasons(x, points, position),
        }

    def reasons(self, x: np.ndarray, points: np.ndarray, position: np.ndarray) -> np.ndarray:
        """The three traits of each customer that most set their segment apart (object array ``[rows, 3]``)."""
        n = len(points)
        per_column = ((points - self._centre) * self._apart[position]) @ self._per_column
        top = top_indices(per_column, N_REASONS, positive=True)
        # The phrase of each (row, column): a number's low or high side, or the customer's category value.
        side = (points[:, self._first_dim] > 0).astype(np.int64)
        code = np.where(self._categorical & ~np.isnan(x), x, -1).astype(np.int64)
        own_value = (self._first_dim + np.maximum(code, 0)) * 2 + 1
        phrase = np.where(self._categorical, own_value, self._first_dim * 2 + side)
        # A missing value (or a category never seen in training) is no trait of the customer's.
        phrase = np.where(np.isnan(x), -1, phrase)
        rows = np.arange(n)[:, None]
        chosen = np.where(top >= 0, phrase[rows, np.maximum(top, 0)], -1)
        return reason_names(chosen, self._phrases)

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate and score one request: ``{column: array}`` → ``{output: array}``."""
        return self.score_rows(self.validate(columns))
