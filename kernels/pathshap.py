"""Path-dependent TreeSHAP (Lundberg et al. 2018, Algorithm 2, as XGBoost computes ``pred_contribs``) of a few
rows, over a :class:`kernels.forest.Forest`: the reasons of a flagged card authorization.

:mod:`kernels.treeshap` reads contributions from tables, but only for trees of at most 8 splits; the fraud
model's depth-4 trees have 15. XGBoost's own TreeSHAP costs a ``DMatrix`` and a ``predict`` per request: 0.7-0.9
ms for one row of the fraud model on this 2-core VM, hot, most of it fixed cost. This walks each tree once per
row, keeping the path's weights (extend, unwind, the unwound sums) in small arrays, one level of them per depth.
For trees of depth up to :data:`MAX_TABLE_DEPTH`, :func:`leaf_tables` computes each leaf's share once, with the
same extend and unwound sums, and :func:`table_contributions` reads a row's from them (what the fraud scorer
uses; the walk stays the reference the tests compare with).

The arithmetic is XGBoost's in float64 where it uses float32, so contributions agree to about 1e-6 (the tests
compare them).

>>> import xgboost as xgb
>>> from kernels.forest import Forest
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 3)).astype(np.float32)
>>> booster = xgb.train({"max_depth": 3}, xgb.DMatrix(x, label=x[:, 0] * 2 + x[:, 1]), 5)
>>> forest = Forest.from_model(booster.save_raw("json"), n_features=3, base=0.0)
>>> ours = path_contributions(forest, x[:4])
>>> theirs = booster.predict(xgb.DMatrix(x[:4]), pred_contribs=True)[:, :-1]
>>> bool(np.allclose(ours, theirs, atol=1e-5))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

if TYPE_CHECKING:
    from kernels.forest import Forest

__all__ = ["MAX_TABLE_DEPTH", "LeafTables", "leaf_tables", "path_contributions", "table_contributions"]

#: The deepest trees :func:`leaf_tables` tabulates: a leaf's table holds ``2^k * k`` numbers for its ``k``
#: features (depth 4: at most 64; depth 8: 2,048 per leaf, 256 leaves a tree).
MAX_TABLE_DEPTH = 6


@numba.njit(cache=True, nogil=True, inline="always")
def _extend(pf, pz, po, pw, level, depth, zero, one, feat):  # type: ignore[no-untyped-def]  # pragma: no cover
    pf[level, depth] = feat
    pz[level, depth] = zero
    po[level, depth] = one
    pw[level, depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        pw[level, i + 1] += one * pw[level, i] * (i + 1) / (depth + 1)
        pw[level, i] = zero * pw[level, i] * (depth - i) / (depth + 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _unwind(pf, pz, po, pw, level, depth, at):  # type: ignore[no-untyped-def]  # pragma: no cover
    one, zero = po[level, at], pz[level, at]
    following = pw[level, depth]
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            held = pw[level, i]
            pw[level, i] = following * (depth + 1) / ((i + 1) * one)
            following = held - pw[level, i] * zero * (depth - i) / (depth + 1)
        else:
            pw[level, i] = pw[level, i] * (depth + 1) / (zero * (depth - i))
    for i in range(at, depth):
        pf[level, i] = pf[level, i + 1]
        pz[level, i] = pz[level, i + 1]
        po[level, i] = po[level, i + 1]


@numba.njit(cache=True, nogil=True, inline="always")
def _unwound_sum(pz, po, pw, level, depth, at):  # type: ignore[no-untyped-def]  # pragma: no cover
    one, zero = po[level, at], pz[level, at]
    following = pw[level, depth]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            held = following * (depth + 1) / ((i + 1) * one)
            total += held
            following = pw[level, i] - held * zero * (depth - i) / (depth + 1)
        else:
            total += pw[level, i] / (zero * (depth - i) / (depth + 1))
    return total


@numba.njit(cache=True, nogil=True)
def _contributions(
    x: np.ndarray,
    root: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    value: np.ndarray,
    default_left: np.ndarray,
    categorical: np.ndarray,
    cat_start: np.ndarray,
    cat_size: np.ndarray,
    cat_member: np.ndarray,
    cover: np.ndarray,
    levels: int,
) -> np.ndarray:  # pragma: no cover - compiled
    n, m = x.shape
    phi = np.zeros((n, m), np.float64)
    # The path at each level of the walk (a tree's depth + 1 levels): feature, zero and one fractions, weight.
    pf = np.zeros((levels, levels + 1), np.int64)
    pz = np.zeros((levels, levels + 1), np.float64)
    po = np.zeros((levels, levels + 1), np.float64)
    pw = np.zeros((levels, levels + 1), np.float64)
    # The walk's stack of calls: node, path depth, level, zero and one fractions, the feature split on.
    size = 2 * levels + 2
    s_node = np.zeros(size, np.int64)
    s_depth = np.zeros(size, np.int64)
    s_level = np.zeros(size, np.int64)
    s_zero = np.zeros(size, np.float64)
    s_one = np.zeros(size, np.float64)
    s_feat = np.zeros(size, np.int64)
    for r in range(n):
        for t in range(len(root)):
            top = 0
            s_node[0], s_depth[0], s_level[0], s_zero[0], s_one[0], s_feat[0] = root[t], 0, 0, 1.0, 1.0, -1
            top = 1
            while top > 0:
                top -= 1
                node, depth, level = s_node[top], s_depth[top], s_level[top]
                if level > 0:  # the parent's path, then this step on it
                    for i in range(depth):
                        pf[level, i] = pf[level - 1, i]
                        pz[level, i] = pz[level - 1, i]
                        po[level, i] = po[level - 1, i]
                        pw[level, i] = pw[level - 1, i]
                _extend(pf, pz, po, pw, level, depth, s_zero[top], s_one[top], s_feat[top])
                if left[node] == -1:
                    for i in range(1, depth + 1):
                        w = _unwound_sum(pz, po, pw, level, depth, i)
                        phi[r, pf[level, i]] += w * (po[level, i] - pz[level, i]) * value[node]
                    continue
                split = feature[node]
                v = x[r, split]
                if np.isnan(v):
                    go_left = default_left[node]
                elif categorical[node]:
                    go_left = True
                    if v >= 0.0 and v < cat_size[node]:
                        go_left = not cat_member[cat_start[node] + int(v)]
                else:
                    go_left = v < value[node]
                hot, cold = (left[node], right[node]) if go_left else (right[node], left[node])
                zero_in, one_in = 1.0, 1.0
                at = -1
                for i in range(depth + 1):
                    if pf[level, i] == split:
                        at = i
                        break
                if at >= 0:  # split on before along this path: undone, then done again here
                    zero_in, one_in = pz[level, at], po[level, at]
                    _unwind(pf, pz, po, pw, level, depth, at)
                    depth -= 1
                # The cold child first on the stack, so the hot one is walked first, as XGBoost does.
                s_node[top], s_depth[top], s_level[top] = cold, depth + 1, level + 1
                s_zero[top], s_one[top], s_feat[top] = cover[cold] / cover[node] * zero_in, 0.0, split
                s_node[top + 1], s_depth[top + 1], s_level[top + 1] = hot, depth + 1, level + 1
                s_zero[top + 1], s_one[top + 1], s_feat[top + 1] = cover[hot] / cover[node] * zero_in, one_in, split
                top += 2
    return phi


def path_contributions(forest: Forest, x: np.ndarray) -> np.ndarray:
    """TreeSHAP contributions ``[rows, features]`` (float64, without XGBoost's bias column) of ``x`` under
    ``forest``, which must carry its nodes' covers (:meth:`kernels.forest.Forest.from_model` keeps them)."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    return _contributions(x32, *forest.arrays(), forest.cover, forest.depth + 2)


@dataclass(frozen=True)
class LeafTables:
    """Each leaf's share of every row's TreeSHAP contributions, tabulated once per forest (the idea of
    FastTreeSHAP v2, Yang 2021): a leaf adds to the features split on along its path only, and how much depends
    on the row through one bit per feature alone, whether the row follows the path at every split on it. So a
    leaf's contributions are a table over those bits, computed with the very extend and unwound sums the walk
    above uses; a row then costs a lookup per leaf instead of a walk with divisions at every node.

    ``split`` marks the forest's split nodes; ``path_*`` list each leaf's splits (node, whether the leaf lies left
    of it, its feature's slot), ``feats`` each leaf's features by slot, ``table`` each leaf's ``2^k`` rows of
    ``k`` contributions (row: the bits)."""

    split: np.ndarray
    path_off: np.ndarray
    path_node: np.ndarray
    path_left: np.ndarray
    path_slot: np.ndarray
    feat_off: np.ndarray
    feats: np.ndarray
    table_off: np.ndarray
    table: np.ndarray


def leaf_tables(forest: Forest) -> LeafTables | None:
    """The tables of ``forest`` (which must carry its covers), or ``None`` for trees deeper than
    :data:`MAX_TABLE_DEPTH` (their tables would outgrow the walk's cost)."""
    if forest.depth > MAX_TABLE_DEPTH:
        return None
    left, right, feature, cover = forest.left, forest.right, forest.feature, forest.cover
    path_off: list[int] = [0]
    path_node: list[int] = []
    path_left: list[bool] = []
    path_slot: list[int] = []
    feat_off: list[int] = [0]
    feats: list[int] = []
    zeros: list[float] = []
    leaf_values: list[float] = []
    table_off: list[int] = []
    size = 0
    for root in forest.root.tolist():
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if left[node] != -1:
                stack.append((int(right[node]), [*path, (node, False)]))
                stack.append((int(left[node]), [*path, (node, True)]))
                continue
            slots: dict[int, int] = {}
            zero: list[float] = []
            for i, (at, went_left) in enumerate(path):
                f = int(feature[at])
                child = path[i + 1][0] if i + 1 < len(path) else node
                if f not in slots:
                    slots[f] = len(zero)
                    zero.append(1.0)
                zero[slots[f]] *= float(cover[child]) / float(cover[at])
                path_node.append(at)
                path_left.append(went_left)
                path_slot.append(slots[f])
            path_off.append(len(path_node))
            feats.extend(slots)
            feat_off.append(len(feats))
            zeros.extend(zero)
            leaf_values.append(float(forest.value[node]))
            table_off.append(size)
            size += (1 << len(zero)) * len(zero)
    tables = LeafTables(
        split=np.ascontiguousarray(left != -1),
        path_off=np.asarray(path_off, np.int64),
        path_node=np.asarray(path_node, np.int64),
        path_left=np.asarray(path_left, np.bool_),
        path_slot=np.asarray(path_slot, np.int64),
        feat_off=np.asarray(feat_off, np.int64),
        feats=np.asarray(feats, np.int64),
        table_off=np.asarray(table_off, np.int64),
        table=np.zeros(size, np.float64),
    )
    _fill(tables.feat_off, np.asarray(zeros, np.float64), np.asarray(leaf_values, np.float64), tables.table_off,
          tables.table, forest.depth + 2)  # fmt: skip
    return tables


@numba.njit(cache=True, nogil=True)
def _fill(
    feat_off: np.ndarray, zeros: np.ndarray, values: np.ndarray, table_off: np.ndarray, table: np.ndarray, levels: int
) -> None:  # pragma: no cover - compiled
    """Each leaf's table: for every pattern of one fractions (bit j: the row follows the path at feature j's
    splits), the path extended feature by feature as the walk extends it, then each feature's unwound sum."""
    pf = np.zeros((1, levels + 1), np.int64)
    pz = np.zeros((1, levels + 1), np.float64)
    po = np.zeros((1, levels + 1), np.float64)
    pw = np.zeros((1, levels + 1), np.float64)
    for leaf in range(len(values)):
        first, k = feat_off[leaf], feat_off[leaf + 1] - feat_off[leaf]
        for bits in range(1 << k):
            _extend(pf, pz, po, pw, 0, 0, 1.0, 1.0, -1)
            for j in range(k):
                _extend(pf, pz, po, pw, 0, j + 1, zeros[first + j], float((bits >> j) & 1), j)
            row = table_off[leaf] + bits * k
            for i in range(1, k + 1):
                w = _unwound_sum(pz, po, pw, 0, k, i)
                table[row + pf[0, i]] = w * (po[0, i] - pz[0, i]) * values[leaf]


@numba.njit(cache=True, nogil=True)
def _looked_up(
    x: np.ndarray,
    split: np.ndarray,
    feature: np.ndarray,
    value: np.ndarray,
    default_left: np.ndarray,
    categorical: np.ndarray,
    cat_start: np.ndarray,
    cat_size: np.ndarray,
    cat_member: np.ndarray,
    path_off: np.ndarray,
    path_node: np.ndarray,
    path_left: np.ndarray,
    path_slot: np.ndarray,
    feat_off: np.ndarray,
    feats: np.ndarray,
    table_off: np.ndarray,
    table: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    n, m = x.shape
    phi = np.zeros((n, m), np.float64)
    went = np.zeros(len(feature), np.bool_)  # each split's side for the row, decided once, read by its leaves
    # The side is decided as forest_margin and the walk decide it, written out in each: one shared njit helper
    # (inline="always") made forest_margin 10 times slower here (15 → 143-154 µs a row of 353 trees).
    for r in range(n):
        for node in range(len(feature)):
            if not split[node]:
                continue
            v = x[r, feature[node]]
            if np.isnan(v):
                went[node] = default_left[node]
            elif categorical[node]:
                go_left = True
                if v >= 0.0 and v < cat_size[node]:
                    go_left = not cat_member[cat_start[node] + int(v)]
                went[node] = go_left
            else:
                went[node] = v < value[node]
        for leaf in range(len(table_off)):
            first, k = feat_off[leaf], feat_off[leaf + 1] - feat_off[leaf]
            if k == 0:
                continue
            bits = (1 << k) - 1
            for p in range(path_off[leaf], path_off[leaf + 1]):
                if went[path_node[p]] != path_left[p]:
                    bits &= ~(1 << path_slot[p])
            row = table_off[leaf] + bits * k
            for j in range(k):
                phi[r, feats[first + j]] += table[row + j]
    return phi


def table_contributions(forest: Forest, tables: LeafTables, x: np.ndarray) -> np.ndarray:
    """:func:`path_contributions` of ``x`` read from ``forest``'s :func:`leaf_tables`: the same numbers up to
    rounding (1e-15 here), about 4 times faster for the fraud model's depth-4 trees: one row of its 353 trees
    136-222 µs against the walk's 588-851 µs on this 2-core VM, hot. Building the tables took 33-58 ms."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    f = forest
    t = tables
    return _looked_up(
        x32, t.split, f.feature, f.value, f.default_left, f.categorical, f.cat_start, f.cat_size, f.cat_member,
        t.path_off, t.path_node, t.path_left, t.path_slot, t.feat_off, t.feats, t.table_off, t.table,
    )  # fmt: skip
