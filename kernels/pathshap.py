"""Path-dependent TreeSHAP (Lundberg et al. 2018, Algorithm 2, as XGBoost computes ``pred_contribs``) of a few
rows, over a :class:`kernels.forest.Forest`: the reasons of a flagged card authorization.

:mod:`kernels.treeshap` reads contributions from tables, but only for trees of at most 8 splits; the fraud
model's depth-4 trees have 15. XGBoost's own TreeSHAP costs a ``DMatrix`` and a ``predict`` per request: 0.7-0.9
ms for one row of the fraud model on this 2-core VM, hot, most of it fixed cost. This walks each tree once per
row, keeping the path's weights (extend, unwind, the unwound sums) in small arrays, one level of them per depth.

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

from typing import TYPE_CHECKING

import numba
import numpy as np

if TYPE_CHECKING:
    from kernels.forest import Forest

__all__ = ["path_contributions"]


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
