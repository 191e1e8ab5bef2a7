"""Exact TreeSHAP for shallow trees as table look-ups: a Numba kernel, tens of times XGBoost's own on CPU.

A tree's path-dependent SHAP values (XGBoost's ``pred_contribs``) depend on a row only through the side it
takes at each of the tree's splits. A tree with ``k`` splits has ``2**k`` such patterns; for shallow trees
(depth 3: at most 7 splits, 128 patterns) every pattern's contributions are computed once, when the model
is loaded, as exact Shapley values of the tree's path-dependent expectation (Lundberg et al., 2018,
Algorithm 1: a split on a feature of the coalition follows the pattern, any other split averages its
children by cover). Scoring a row is then one decision per split and one look-up per tree.

A model's splits repeat their conditions: hundreds of trees over a few dozen features ask a few hundred
distinct questions (XGBoost's thresholds are histogram cuts). Each distinct condition is decided once per
row; a tree's splits then read those decisions, and the row's contributions are summed from the trees'
tables in the same pass (one kernel call per batch). The tables are packed as float32, ``2**k`` rows of the
tree's own features each: the look-ups of a row stay within a few hundred kilobytes.

Decisions follow XGBoost's: a missing value takes the split's default side; a number goes left when it is
below the threshold; a category goes right when it is in the split's set, left otherwise (unseen or
negative codes too).

:meth:`ShallowTreeShap.from_model` returns ``None`` for models it does not cover (a tree with more than
:data:`MAX_SPLITS` splits, vector leaves, several trees per round): the caller keeps XGBoost's own.

>>> import json
>>> tree = {"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0],
...         "split_conditions": [0.5, -1.0, 3.0], "default_left": [1, 0, 0], "split_type": [0, 0, 0],
...         "sum_hessian": [4.0, 3.0, 1.0], "categories": [], "categories_nodes": [],
...         "categories_segments": [], "categories_sizes": []}
>>> model = {"learner": {"gradient_booster": {"model": {"trees": [tree],
...          "gbtree_model_param": {"num_parallel_tree": "1"}}}}}
>>> shap = ShallowTreeShap.from_model(json.dumps(model), n_features=1, bias=0.5)
>>> shap.contributions(np.array([[0.0], [1.0], [np.nan]], dtype=np.float32)).tolist()
[[-1.0, 0.5], [3.0, 0.5], [-1.0, 0.5]]
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numba
import numpy as np

from kernels.forest import XgbTree, trees_of
from kernels.ranking import reason_scores

__all__ = [
    "MAX_SPLITS",
    "ShallowTreeShap",
    "pattern_contributions_ref",
    "tree_contributions",
    "tree_reason_scores",
]

#: What both TreeSHAP kernels read after the rows: 7 condition arrays, 6 tree and table arrays, the bias.
_KernelArrays = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float,
]  # fmt: skip
#: Trees with more splits than this are left to XGBoost (tables grow as 2**splits × 2**features).
MAX_SPLITS = 8


@dataclass(frozen=True)
class ShallowTreeShap:
    """Contribution tables of every tree of a model, and the arrays its kernel reads.

    Conditions ``c`` (each distinct split once): ``feature``, ``threshold``, ``nan_right`` (a missing value
    goes right), ``categorical`` and a slice ``[cat_start, cat_start + cat_size)`` of ``cat_member`` (1 where a
    category code goes right). Tree ``t`` has ``splits[t]`` splits; split ``k`` asks ``condition[t, k]``.
    The tree's contribution to feature ``slot_feature[t, j]`` (``j < slots[t]``) under ``pattern`` is
    ``table[offset[t] + pattern * slots[t] + j]``.
    """

    n_features: int
    bias: float
    feature: np.ndarray
    threshold: np.ndarray
    nan_right: np.ndarray
    categorical: np.ndarray
    cat_start: np.ndarray
    cat_size: np.ndarray
    cat_member: np.ndarray
    splits: np.ndarray
    condition: np.ndarray
    offset: np.ndarray
    slots: np.ndarray
    slot_feature: np.ndarray
    table: np.ndarray

    @classmethod
    def from_model(cls, model_json: str | bytes | bytearray, *, n_features: int, bias: float) -> ShallowTreeShap | None:
        """Tables for the model saved as XGBoost JSON (``booster.save_raw("json")``), or ``None`` when a tree
        is beyond this kernel. ``bias`` is the contributions' last column (XGBoost's expected margin)."""
        parsed = trees_of(model_json)
        if parsed is None or any(len(t.splits) > MAX_SPLITS for t in parsed):
            return None
        trees = [_Tree(t) for t in parsed]
        n_trees = len(trees)
        width = max([len(t.splits) for t in trees] + [1])
        slots = max([len(t.slot_feature) for t in trees] + [1])
        n_slots = np.array([len(t.slot_feature) for t in trees], np.int64)
        splits = np.array([len(t.splits) for t in trees], np.int64)
        offset = np.zeros(n_trees + 1, np.int64)
        offset[1:] = np.cumsum((1 << splits) * n_slots)
        condition = np.zeros((n_trees, width), np.int64)
        slot_feature = np.full((n_trees, slots), -1, np.int64)
        table = np.zeros(int(offset[-1]), np.float32)
        conditions: dict[tuple, int] = {}
        for t, tree in enumerate(trees):
            slot_feature[t, : n_slots[t]] = tree.slot_feature
            table[offset[t] : offset[t + 1]] = _tables(tree)[:, : n_slots[t]].ravel()
            for k, node in enumerate(tree.splits):
                cats = tree.categories.get(int(node))
                nan_right = not tree.default_left[node]
                key = (
                    (int(tree.feature[node]), "c", tuple(sorted(cats)), nan_right)
                    if cats is not None
                    else (int(tree.feature[node]), "n", float(tree.threshold[node]), nan_right)
                )
                condition[t, k] = conditions.setdefault(key, len(conditions))
        if any(key[0] >= n_features for key in conditions):
            return None
        return cls(
            n_features=n_features,
            bias=float(bias),
            splits=splits,
            condition=condition,
            offset=offset,
            slots=n_slots,
            slot_feature=slot_feature,
            table=table,
            **_condition_arrays(list(conditions)),
        )

    def _conditions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            self.feature,
            self.threshold,
            self.nan_right,
            self.categorical,
            self.cat_start,
            self.cat_size,
            self.cat_member,
        )

    def _arrays(self) -> _KernelArrays:
        """What both kernels read after the rows: the conditions, the trees' splits and the tables, the bias."""
        return (
            *self._conditions(),
            self.splits,
            self.condition,
            self.offset,
            self.slots,
            self.slot_feature,
            self.table,
            self.bias,
        )

    def patterns(self, x: np.ndarray) -> np.ndarray:
        """The side each row takes at each split, as one integer per (row, tree): bit ``k`` set = right."""
        return _patterns(np.ascontiguousarray(x, dtype=np.float32), *self._conditions(), self.splits, self.condition)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """``[rows, n_features + 1]`` float32 contributions, the last column the bias: as XGBoost's
        ``predict(pred_contribs=True)``, so a row's sum is its margin."""
        return tree_contributions(np.ascontiguousarray(x, dtype=np.float32), *self._arrays())

    def reason_scores(
        self, x: np.ndarray, *, a: float, b: float, threshold: float, k: int, action_of: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`kernels.ranking.reason_scores` of the contributions of ``x``, in one kernel call."""
        return tree_reason_scores(
            np.ascontiguousarray(x, dtype=np.float32), *self._arrays(), a, b, threshold, k, action_of
        )


def _condition_arrays(keys: list[tuple]) -> dict[str, np.ndarray]:
    """The kernel's arrays of the distinct conditions ``(feature, "n", threshold, nan_right)`` or
    ``(feature, "c", categories, nan_right)``, in order."""
    n = len(keys)
    arrays: dict[str, np.ndarray] = {
        "feature": np.array([k[0] for k in keys], np.int64).reshape(n),
        "threshold": np.array([k[2] if k[1] == "n" else 0.0 for k in keys], np.float32).reshape(n),
        "nan_right": np.array([k[3] for k in keys], np.bool_).reshape(n),
        "categorical": np.array([k[1] == "c" for k in keys], np.bool_).reshape(n),
        "cat_start": np.zeros(n, np.int64),
        "cat_size": np.zeros(n, np.int64),
    }
    members: list[np.ndarray] = []
    start = 0
    for i, key in enumerate(keys):
        if key[1] == "c":
            member = np.zeros(max(key[2], default=-1) + 1, np.bool_)
            member[list(key[2])] = True
            arrays["cat_start"][i], arrays["cat_size"][i] = start, len(member)
            members.append(member)
            start += len(member)
    arrays["cat_member"] = np.concatenate(members) if members else np.zeros(0, np.bool_)
    return arrays


class _Tree:
    """A parsed tree (:func:`kernels.forest.parse_tree`) with what the tables are laid out by."""

    def __init__(self, tree: XgbTree) -> None:
        self.left, self.right, self.feature = tree.left, tree.right, tree.feature
        self.threshold, self.cover, self.categories = tree.threshold, tree.cover, tree.categories
        self.default_left = tree.default_left
        #: Node ids of the splits, in id order; a split's bit is its position here.
        self.splits = tree.splits
        #: The distinct features the tree splits on; a split's slot is its feature's position here.
        self.slot_feature = np.unique(tree.feature[self.splits])


def _tables(tree: _Tree) -> np.ndarray:
    """``[2**splits, slots]``: each pattern's exact Shapley values over the tree's features."""
    n_nodes = len(tree.left)
    bit = np.full(n_nodes, -1, np.int64)
    bit[tree.splits] = np.arange(len(tree.splits))
    slot = np.full(n_nodes, -1, np.int64)
    slot[tree.splits] = np.searchsorted(tree.slot_feature, tree.feature[tree.splits])
    m = len(tree.slot_feature)
    weights = np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)]) if m else np.zeros(0)
    return _shapley_tables(
        tree.left, tree.right, tree.threshold.astype(np.float64), tree.cover, bit, slot, _order(tree), m, weights
    )


def _order(tree: _Tree) -> np.ndarray:
    """Node ids with every child before its parent."""
    order, stack = [], [0]
    while stack:
        node = stack.pop()
        order.append(node)
        if tree.left[node] != -1:
            stack += [int(tree.left[node]), int(tree.right[node])]
    return np.asarray(order[::-1], np.int64)


@numba.njit(cache=True)
def _shapley_tables(
    left: np.ndarray,
    right: np.ndarray,
    leaf: np.ndarray,
    cover: np.ndarray,
    bit: np.ndarray,
    slot: np.ndarray,
    order: np.ndarray,
    m: int,
    weights: np.ndarray,
) -> np.ndarray:
    k = 0
    for b in bit:
        if b >= 0:
            k += 1
    out = np.zeros((1 << k, max(m, 1)), np.float64)
    value = np.zeros(len(left), np.float64)
    f = np.zeros(1 << m, np.float64)
    for pattern in range(1 << k):
        for coalition in range(1 << m):
            for node in order:
                if left[node] == -1:
                    value[node] = leaf[node]
                elif (coalition >> slot[node]) & 1:
                    go_right = (pattern >> bit[node]) & 1
                    value[node] = value[right[node]] if go_right else value[left[node]]
                else:
                    value[node] = (
                        cover[left[node]] * value[left[node]] + cover[right[node]] * value[right[node]]
                    ) / cover[node]
            f[coalition] = value[0]
        for i in range(m):
            phi = 0.0
            for coalition in range(1 << m):
                if not (coalition >> i) & 1:
                    size = 0
                    c = coalition
                    while c:
                        size += c & 1
                        c >>= 1
                    phi += weights[size] * (f[coalition | (1 << i)] - f[coalition])
            out[pattern, i] = phi
    return out


@numba.njit(cache=True, nogil=True)
def _decide(
    x: np.ndarray,
    r: int,
    feature: np.ndarray,
    threshold: np.ndarray,
    nan_right: np.ndarray,
    categorical: np.ndarray,
    cat_start: np.ndarray,
    cat_size: np.ndarray,
    cat_member: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Row ``r``'s side (1 = right) at every distinct condition, into ``out``."""
    for c in range(len(feature)):
        v = x[r, feature[c]]
        if np.isnan(v):
            out[c] = nan_right[c]
        elif categorical[c]:
            out[c] = cat_member[cat_start[c] + int(v)] if v >= 0.0 and v < cat_size[c] else False
        else:
            out[c] = not (v < threshold[c])


@numba.njit(cache=True, nogil=True, inline="always")
def _pattern(side: np.ndarray, condition: np.ndarray, splits: np.ndarray, t: int) -> int:  # pragma: no cover
    """Tree ``t``'s pattern from a row's decisions ``side``: bit ``k`` set where split ``k`` goes right."""
    pattern = 0
    for k in range(splits[t]):
        pattern |= int(side[condition[t, k]]) << k
    return pattern


@numba.njit(cache=True, nogil=True)
def _patterns(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    nan_right: np.ndarray,
    categorical: np.ndarray,
    cat_start: np.ndarray,
    cat_size: np.ndarray,
    cat_member: np.ndarray,
    splits: np.ndarray,
    condition: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    n, n_trees = x.shape[0], len(splits)
    out = np.zeros((n, n_trees), np.int64)
    side = np.zeros(len(feature), np.uint8)
    for r in range(n):
        _decide(x, r, feature, threshold, nan_right, categorical, cat_start, cat_size, cat_member, side)
        for t in range(n_trees):
            out[r, t] = _pattern(side, condition, splits, t)
    return out


@numba.njit(cache=True, nogil=True)
def tree_contributions(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    nan_right: np.ndarray,
    categorical: np.ndarray,
    cat_start: np.ndarray,
    cat_size: np.ndarray,
    cat_member: np.ndarray,
    splits: np.ndarray,
    condition: np.ndarray,
    offset: np.ndarray,
    slots: np.ndarray,
    slot_feature: np.ndarray,
    table: np.ndarray,
    bias: float,
) -> np.ndarray:  # pragma: no cover - compiled
    """Each row's contributions, float32 ``[rows, n_features + 1]`` with ``bias`` last, in one pass: the row's
    decisions, each tree's pattern and its table row, summed per feature (in float64). Equal to
    :func:`pattern_contributions_ref` of :meth:`ShallowTreeShap.patterns`."""
    n, width, n_trees = x.shape[0], x.shape[1], len(splits)
    out = np.empty((n, width + 1), np.float32)
    acc = np.zeros(width, np.float64)
    side = np.zeros(len(feature), np.uint8)
    for r in range(n):
        _decide(x, r, feature, threshold, nan_right, categorical, cat_start, cat_size, cat_member, side)
        acc[:] = 0.0
        for t in range(n_trees):
            row = offset[t] + _pattern(side, condition, splits, t) * slots[t]
            for j in range(slots[t]):
                acc[slot_feature[t, j]] += table[row + j]
        for f in range(width):
            out[r, f] = acc[f]
        out[r, width] = bias
    return out


@numba.njit(cache=True, nogil=True)
def tree_reason_scores(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    nan_right: np.ndarray,
    categorical: np.ndarray,
    cat_start: np.ndarray,
    cat_size: np.ndarray,
    cat_member: np.ndarray,
    splits: np.ndarray,
    condition: np.ndarray,
    offset: np.ndarray,
    slots: np.ndarray,
    slot_feature: np.ndarray,
    table: np.ndarray,
    bias: float,
    a: float,
    b: float,
    cut: float,
    k: int,
    action_of: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`tree_contributions` then :func:`kernels.ranking.reason_scores` (threshold ``cut``): a served
    request pays one call, not two."""
    contributions = tree_contributions(
        x, feature, threshold, nan_right, categorical, cat_start, cat_size, cat_member, splits, condition, offset,
        slots, slot_feature, table, bias,
    )  # fmt: skip
    return reason_scores(contributions, a, b, cut, k, action_of)


def pattern_contributions_ref(
    patterns: np.ndarray,
    offset: np.ndarray,
    slots: np.ndarray,
    slot_feature: np.ndarray,
    table: np.ndarray,
    n_features: int,
) -> np.ndarray:
    """NumPy twin of :func:`tree_contributions` (the bias column left zero), from :meth:`ShallowTreeShap.patterns`."""
    out = np.zeros((patterns.shape[0], n_features + 1), np.float64)
    for t in range(patterns.shape[1]):
        for j in range(int(slots[t])):
            out[:, slot_feature[t, j]] += table[offset[t] + patterns[:, t] * slots[t] + j]
    return out
