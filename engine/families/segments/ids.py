"""Segment ids that survive a retrain: the new segments matched to the previous version's.

Cluster numbers are arbitrary: a retrain on the same customers in another order numbers them differently, and a
campaign that targets "segment 2" would target someone else. So each version keeps its segments' profiles (the
means and shares of :class:`engine.families.segments.space.Profile`), and a retrain places both versions'
profiles in one common space, the new version's (numbers as z-scores against the new table, categories as
shares, over the dimensions both versions have), and pairs them by the Hungarian assignment of least total
distance (:func:`scipy.optimize.linear_sum_assignment`). A matched segment keeps its id; a new segment left over
(k grew) gets a fresh id, never one used before in the model's history (``next_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.families.segments.space import Profile, SegmentSpace

__all__ = ["MIN_COMMON", "Previous", "match_ids"]

#: The share of the new version's dimensions the previous version must have for its ids to carry over.
MIN_COMMON = 0.5


@dataclass(frozen=True)
class Previous:
    """What a retrain needs of the previous version."""

    version: int
    ids: tuple[int, ...]
    profiles: tuple[Profile, ...]
    next_id: int


def match_ids(
    space: SegmentSpace, profiles: Sequence[Profile], sizes: Sequence[int], previous: Previous | None
) -> tuple[list[int], int, bool]:
    """``(ids, next_id, matched)``: an id for each new segment, the first id never used, and whether the ids came
    from ``previous``. Without a previous version (or one of other columns), ids are 0..k-1, largest segment
    first."""
    k = len(profiles)
    by_size = sorted(range(k), key=lambda i: (-sizes[i], i))
    dims = space.dimensions
    if previous is not None:
        old = np.array([space.vector(p, dims=dims) for p in previous.profiles])
        common = ~np.isnan(old).any(0)
        if common.sum() >= MIN_COMMON * len(dims):
            new = np.array([space.vector(p, dims=dims) for p in profiles])[:, common]
            cost = np.linalg.norm(new[:, None, :] - old[None, :, common], axis=2)
            rows, cols = linear_sum_assignment(cost)
            ids: list[int | None] = [None] * k
            for r, c in zip(rows, cols, strict=True):
                ids[r] = previous.ids[c]
            fresh = max(previous.next_id, max(previous.ids, default=-1) + 1)
            for i in by_size:
                if ids[i] is None:
                    ids[i] = fresh
                    fresh += 1
            return [int(i) for i in ids if i is not None], fresh, True
    ids_out = [0] * k
    for rank, i in enumerate(by_size):
        ids_out[i] = rank
    start = previous.next_id if previous is not None else 0
    return [start + i for i in ids_out], start + k, False
