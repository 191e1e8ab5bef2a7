"""A trained segmentation: what assigns a point of the space to a segment, in NumPy only.

K-means keeps its centroids (the nearest one wins); Gaussian mixtures keep each component's weight, mean and
precision Cholesky factor (the most probable component wins, as scikit-learn's ``predict``). Both are saved as
plain arrays in ``segments.npz``, row ``r`` the segment at position ``r`` of ``segments.json``: the served model
loads no estimator and no pickle, and the same code assigns rows in training and in serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["METHODS", "Assigner", "Method"]

Method = Literal["kmeans", "gmm"]
METHODS: tuple[Method, ...] = ("kmeans", "gmm")


@dataclass(frozen=True)
class Assigner:
    """Assigns points of the space to segment positions 0..k-1."""

    method: Method
    means: np.ndarray  # [k, d]: centroids, or the components' means
    weights: np.ndarray | None = None  # [k] (gmm)
    precisions_cholesky: np.ndarray | None = None  # [k, d, d] (gmm)

    @property
    def k(self) -> int:
        return int(self.means.shape[0])

    def reordered(self, order: np.ndarray) -> Assigner:
        """The same model with its segments in ``order`` (position r holds the old segment ``order[r]``)."""
        return Assigner(
            self.method,
            self.means[order],
            None if self.weights is None else self.weights[order],
            None if self.precisions_cholesky is None else self.precisions_cholesky[order],
        )

    def scores(self, points: np.ndarray) -> np.ndarray:
        """``[rows, k]``, larger is closer: minus the squared distance (k-means), or the log of weight times
        density (gmm)."""
        x = points.astype(np.float64)
        if self.method == "kmeans":
            c = self.means.astype(np.float64)
            return -((x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :])
        assert self.weights is not None and self.precisions_cholesky is not None
        d = x.shape[1]
        out = np.empty((len(x), self.k))
        for r in range(self.k):
            p = self.precisions_cholesky[r]
            y = (x - self.means[r]) @ p
            log_det = np.log(np.diag(p)).sum()
            out[:, r] = -0.5 * (d * np.log(2 * np.pi) + (y * y).sum(1)) + log_det + np.log(self.weights[r])
        return out

    def assign(self, points: np.ndarray) -> np.ndarray:
        """The segment position (INT32) of each point."""
        if not len(points):
            return np.empty(0, dtype=np.int32)
        return self.scores(points).argmax(1).astype(np.int32)

    def save(self, path: Path) -> None:
        arrays = {"means": self.means}
        if self.weights is not None and self.precisions_cholesky is not None:
            arrays |= {"weights": self.weights, "precisions_cholesky": self.precisions_cholesky}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path, method: Method) -> Assigner:
        with np.load(path) as z:
            if method == "gmm":
                return cls(method, z["means"], z["weights"], z["precisions_cholesky"])
            return cls(method, z["means"])
