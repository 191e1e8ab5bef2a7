"""Small per-request kernels of the served models: each row's top-k columns, a reason-coded score, and the check
of a coded matrix.

A one-row request pays NumPy's fixed cost per call several times over the work itself (an ``argsort``, a
``take_along_axis``, a ``where``, an ``errstate``...); each kernel here is one call. Each has a plain NumPy
twin (``<name>_ref``) that the tests compare it with.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["coded_fault", "coded_fault_ref", "reason_scores", "reason_scores_ref", "top_k", "top_k_ref"]


@numba.njit(cache=True, nogil=True)
def top_k(values: np.ndarray, k: int, positive: bool) -> np.ndarray:  # pragma: no cover - compiled
    """Column indices (INT32 ``[rows, k]``) of each row's ``k`` largest values, largest first, the lower index
    first among equal values; -1 where a row has fewer than ``k`` columns, and with ``positive`` where the value
    is not above zero."""
    n, width = values.shape
    out = np.full((n, k), -1, dtype=np.int32)
    taken = np.zeros(width, dtype=np.bool_)
    for i in range(n):
        taken[:] = False
        for r in range(min(k, width)):
            best = -1
            for j in range(width):
                if not taken[j] and (best < 0 or values[i, j] > values[i, best]):
                    best = j
            taken[best] = True
            if positive and not values[i, best] > 0:
                break
            out[i, r] = best
    return out


def top_k_ref(values: np.ndarray, k: int, positive: bool) -> np.ndarray:
    """:func:`top_k` in NumPy."""
    out = np.full((len(values), k), -1, dtype=np.int32)
    width = min(k, values.shape[1])
    if not len(values) or not width:
        return out
    top = np.argsort(-values, axis=1, kind="stable")[:, :width]
    if positive:
        top = np.where(np.take_along_axis(values, top, axis=1) > 0, top, -1)
    out[:, :width] = top
    return out


@numba.njit(cache=True, nogil=True)
def reason_scores(
    contributions: np.ndarray, a: float, b: float, threshold: float, k: int, action_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """A reason-coded score from additive contributions ``[rows, features + 1]`` (the last column the bias, so
    a row's sum is its margin), in one call:

    - the probability ``1 / (1 + exp(-(a * margin + b)))`` (FP32; Platt scaling of the margin);
    - the reasons: the ``k`` features that raise it most, as :func:`top_k` with ``positive`` (INT32, -1 none);
    - the action: ``action_of[first reason]`` where the probability reaches ``threshold``, 0 otherwise (INT32).
    """
    n, width = contributions.shape
    prob = np.empty(n, np.float32)
    actions = np.zeros(n, np.int32)
    reasons = top_k(contributions[:, : width - 1], k, True)
    for i in range(n):
        margin = 0.0
        for j in range(width):
            margin += contributions[i, j]
        prob[i] = 1.0 / (1.0 + math.exp(-(a * margin + b)))
        first = reasons[i, 0] if k > 0 else -1
        if first >= 0 and np.float64(prob[i]) >= threshold:
            actions[i] = action_of[first]
    return prob, reasons, actions


def reason_scores_ref(
    contributions: np.ndarray, a: float, b: float, threshold: float, k: int, action_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`reason_scores` in NumPy."""
    margin = contributions.astype(np.float64).sum(axis=1)
    prob = (1.0 / (1.0 + np.exp(-(a * margin + b)))).astype(np.float32)
    reasons = top_k_ref(contributions[:, :-1], k, True)
    first = reasons[:, 0] if k > 0 else np.full(len(prob), -1)
    actions = np.where((first >= 0) & (prob >= threshold), action_of[np.maximum(first, 0)], 0).astype(np.int32)
    return prob, reasons, actions


@numba.njit(cache=True, nogil=True)
def coded_fault(x: np.ndarray, codes: np.ndarray) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """The first fault of a feature matrix, row by row, as ``(row, column, kind)``: kind 1 an infinite value,
    2 a value of a coded column (``codes[j]`` > 0 codes) that is neither NaN nor a whole number in
    ``[0, codes[j])``; ``(-1, -1, 0)`` when there is none."""
    n, width = x.shape
    for i in range(n):
        for j in range(width):
            v = x[i, j]
            if math.isinf(v):
                return i, j, 1
            c = codes[j]
            if c > 0 and not math.isnan(v) and (v != math.floor(v) or v < 0 or v >= c):
                return i, j, 2
    return -1, -1, 0


def coded_fault_ref(x: np.ndarray, codes: np.ndarray) -> tuple[int, int, int]:
    """:func:`coded_fault` in NumPy."""
    with np.errstate(invalid="ignore"):
        inf = np.isinf(x)
        off = (codes > 0) & ~np.isnan(x) & ((x != np.floor(x)) | (x < 0) | (x >= codes))
    bad = np.where(inf, 1, np.where(off, 2, 0))
    flat = np.flatnonzero(bad)
    if not len(flat):
        return -1, -1, 0
    row, col = divmod(int(flat[0]), x.shape[1])
    return row, col, int(bad[row, col])
