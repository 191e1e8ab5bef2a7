"""An XGBoost model's margin as a Numba kernel: one row in microseconds, where XGBoost's predictor takes hundreds.

XGBoost pays a fixed cost per call (an adapter over the input, its checks, its thread pool) that one card
authorization cannot spare: 220-470 µs for one row of ninety depth-4 trees on this CPU. Here the trees of a
model saved as JSON (``booster.save_raw("json")``) are flattened into arrays once; a row walks each tree from its
root, one comparison per level, and the leaves it reaches are summed.

Decisions follow XGBoost's (and :mod:`kernels.treeshap`'s): a missing value takes the split's default side; a
number goes left when it is below the threshold; a category goes right when it is in the split's set, left
otherwise (unseen or negative codes too).

:func:`parse_tree` reads one tree of the JSON; :mod:`kernels.treeshap` builds its tables from the same.

>>> import json
>>> tree = {"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0],
...         "split_conditions": [0.5, -1.0, 3.0], "default_left": [1, 0, 0], "split_type": [0, 0, 0],
...         "sum_hessian": [4.0, 3.0, 1.0], "categories": [], "categories_nodes": [],
...         "categories_segments": [], "categories_sizes": []}
>>> model = {"learner": {"gradient_booster": {"model": {"trees": [tree, tree],
...          "gbtree_model_param": {"num_parallel_tree": "1"}}}}}
>>> forest = Forest.from_model(json.dumps(model), n_features=1, base=0.25)
>>> forest.margin(np.array([[0.0], [1.0], [np.nan]], dtype=np.float32)).tolist()
[-1.75, 6.25, -1.75]
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["MAX_CATEGORY", "Forest", "XgbTree", "forest_margin", "forest_margin_ref", "parse_tree"]

#: Category codes a split's set may hold (XGBoost's own limit is 2**24; the arrays here stay small).
MAX_CATEGORY = 1 << 16


@dataclass(frozen=True)
class XgbTree:
    """One tree of an XGBoost JSON model, node by node (``left == -1`` at a leaf, whose value is ``threshold``)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    cover: np.ndarray
    #: The categories that go right, per categorical split node.
    categories: dict[int, list[int]]

    @property
    def splits(self) -> np.ndarray:
        """Node ids of the splits, in id order."""
        return np.flatnonzero(self.left != -1)


def parse_tree(tree: dict) -> XgbTree | None:
    """The tree, or ``None`` when it has vector leaves or a category code beyond :data:`MAX_CATEGORY`."""
    if tree.get("tree_param", {}).get("size_leaf_vector", "1") not in ("0", "1"):
        return None
    left = np.asarray(tree["left_children"], np.int64)
    categories: dict[int, list[int]] = {}
    flat = tree["categories"]
    for node, start, size in zip(
        tree["categories_nodes"], tree["categories_segments"], tree["categories_sizes"], strict=True
    ):
        cats = [int(c) for c in flat[start : start + size]]
        if any(c < 0 or c >= MAX_CATEGORY for c in cats):
            return None
        categories[int(node)] = cats
    split_type = np.asarray(tree["split_type"], np.int64)
    for node in np.flatnonzero(left != -1):
        if split_type[node] == 1:  # a category split with an empty set sends every row left
            categories.setdefault(int(node), [])
    return XgbTree(
        left=left,
        right=np.asarray(tree["right_children"], np.int64),
        feature=np.asarray(tree["split_indices"], np.int64),
        threshold=np.asarray(tree["split_conditions"], np.float32),
        default_left=np.asarray(tree["default_left"], np.bool_),
        cover=np.asarray(tree["sum_hessian"], np.float64),
        categories=categories,
    )


def trees_of(model_json: str | bytes | bytearray) -> list[XgbTree] | None:
    """Every tree of a model saved as JSON, or ``None`` when one is beyond :func:`parse_tree` or a round holds
    several trees (random forests)."""
    model = json.loads(model_json)["learner"]["gradient_booster"]["model"]
    if int(model.get("gbtree_model_param", {}).get("num_parallel_tree", "1")) != 1:
        return None
    parsed = [parse_tree(t) for t in model["trees"]]
    return None if any(p is None for p in parsed) else [p for p in parsed if p is not None]


@dataclass(frozen=True)
class Forest:
    """Every tree's nodes in flat arrays (children as indices into them, -1 at a leaf), and the base margin.

    ``value`` is a leaf's value and a split's threshold; a categorical split's set is the slice
    ``[cat_start, cat_start + cat_size)`` of ``cat_member`` (1 where a code goes right).
    """

    n_features: int
    base: float
    root: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    value: np.ndarray
    default_left: np.ndarray
    categorical: np.ndarray
    cat_start: np.ndarray
    cat_size: np.ndarray
    cat_member: np.ndarray
    #: Each node's cover (XGBoost's sum of hessians), which TreeSHAP weighs paths by.
    cover: np.ndarray
    #: The deepest leaf's depth, over the trees.
    depth: int

    @classmethod
    def from_model(cls, model_json: str | bytes | bytearray, *, n_features: int, base: float) -> Forest | None:
        """The forest of a model saved as JSON, or ``None`` when a tree is beyond :func:`parse_tree` or splits
        on a feature past ``n_features``. ``base`` is the margin before any tree (XGBoost's base score as a
        margin)."""
        trees = trees_of(model_json)
        if trees is None or any(len(t.splits) and t.feature[t.splits].max() >= n_features for t in trees):
            return None
        sizes = np.array([len(t.left) for t in trees], np.int64)
        root = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(trees) else np.zeros(0, np.int64)
        n = int(sizes.sum())
        left, right = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        cat_start, cat_size = np.zeros(n, np.int64), np.zeros(n, np.int64)
        categorical = np.zeros(n, np.bool_)
        members: list[np.ndarray] = []
        offset = 0
        for t, tree in enumerate(trees):
            at = int(root[t])
            inner = tree.left != -1
            left[at : at + len(tree.left)] = np.where(inner, tree.left + at, -1)
            right[at : at + len(tree.left)] = np.where(inner, tree.right + at, -1)
            for node, cats in tree.categories.items():
                member = np.zeros(max(cats, default=-1) + 1, np.bool_)
                member[cats] = True
                categorical[at + node] = True
                cat_start[at + node], cat_size[at + node] = offset, len(member)
                members.append(member)
                offset += len(member)
        return cls(
            n_features=n_features,
            base=float(base),
            root=root,
            left=left,
            right=right,
            feature=np.concatenate([t.feature for t in trees]) if trees else np.zeros(0, np.int64),
            value=np.concatenate([t.threshold for t in trees]) if trees else np.zeros(0, np.float32),
            default_left=np.concatenate([t.default_left for t in trees]) if trees else np.zeros(0, np.bool_),
            categorical=categorical,
            cat_start=cat_start,
            cat_size=cat_size,
            cat_member=np.concatenate(members) if members else np.zeros(0, np.bool_),
            cover=np.concatenate([t.cover for t in trees]) if trees else np.zeros(0, np.float64),
            depth=max((_depth(t) for t in trees), default=0),
        )

    def arrays(
        self,
    ) -> tuple[
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
        np.ndarray,
    ]:
        """The kernel's arrays, in its order."""
        return (
            self.root,
            self.left,
            self.right,
            self.feature,
            self.value,
            self.default_left,
            self.categorical,
            self.cat_start,
            self.cat_size,
            self.cat_member,
        )

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Each row's margin (float64): the base plus the leaf each tree sends it to."""
        return forest_margin(np.ascontiguousarray(x, dtype=np.float32), *self.arrays(), self.base)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """``1 / (1 + exp(-margin))`` as FP32: a binary logistic model's prediction."""
        return (1.0 / (1.0 + np.exp(-self.margin(x)))).astype(np.float32)

    def graded(self, x: np.ndarray, lower: float, upper: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`probability` and each row's grade (INT32): 2 from ``upper`` up, else 1 from ``lower`` up, else 0;
        the thresholds compared in FP32, as NumPy compares an FP32 array with a number. One call after the
        walk, not a NumPy call per step: a one-row request is what this serves."""
        return graded_probability(self.margin(x), lower, upper)


def _depth(tree: XgbTree) -> int:
    """The depth of the tree's deepest leaf (0 for a tree that is one leaf)."""
    deepest, level, nodes = 0, 0, [0]
    while nodes:
        deepest = level
        nodes = [c for n in nodes if tree.left[n] != -1 for c in (int(tree.left[n]), int(tree.right[n]))]
        level += 1
    return deepest


@numba.njit(cache=True, nogil=True)
def forest_margin(
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
    base: float,
) -> np.ndarray:  # pragma: no cover - compiled
    """``base`` plus, for each tree, the value of the leaf a row reaches, per row (float64)."""
    n = x.shape[0]
    out = np.full(n, base, np.float64)
    for r in range(n):
        total = 0.0
        for t in range(len(root)):
            node = root[t]
            while left[node] != -1:
                v = x[r, feature[node]]
                if np.isnan(v):
                    go_left = default_left[node]
                elif categorical[node]:
                    go_left = True
                    if v >= 0.0 and v < cat_size[node]:
                        go_left = not cat_member[cat_start[node] + int(v)]
                else:
                    go_left = v < value[node]
                node = left[node] if go_left else right[node]
            total += value[node]
        out[r] += total
    return out


@numba.njit(cache=True, nogil=True)
def graded_probability(
    margin: np.ndarray, lower: float, upper: float
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """FP32 probabilities of logistic margins and their grades (see :meth:`Forest.graded`)."""
    n = len(margin)
    prob = np.empty(n, np.float32)
    grade = np.zeros(n, np.int32)
    lo, hi = np.float32(lower), np.float32(upper)
    for i in range(n):
        p = np.float32(1.0 / (1.0 + np.exp(-margin[i])))
        prob[i] = p
        if p >= hi:
            grade[i] = 2
        elif p >= lo:
            grade[i] = 1
    return prob, grade


def forest_margin_ref(forest: Forest, x: np.ndarray) -> np.ndarray:
    """:func:`forest_margin` in NumPy: every row walks every tree one level at a time, all rows together."""
    x = np.asarray(x, dtype=np.float32)
    out = np.full(len(x), forest.base, np.float64)
    rows = np.arange(len(x))
    for start in forest.root:
        node = np.full(len(x), start, np.int64)
        while (inner := forest.left[node] != -1).any():
            v = x[rows, np.where(inner, forest.feature[node], 0)]
            code = np.where(np.isnan(v), -1, v).astype(np.int64)
            known = forest.categorical[node] & (v >= 0) & (code < forest.cat_size[node])
            member = (
                forest.cat_member[np.where(known, forest.cat_start[node] + code, 0)]
                if len(forest.cat_member)
                else known
            )
            go_left = np.where(
                np.isnan(v),
                forest.default_left[node],
                np.where(forest.categorical[node], ~(known & member), v < forest.value[node]),
            )
            node = np.where(inner, np.where(go_left, forest.left[node], forest.right[node]), node)
        out += forest.value[node]
    return out
