"""The product vectors in a faiss index, and the exact, rule-aware retrieval the scorer makes on them.

Training writes an exact inner-product index (``IndexFlatIP``). Approximate indexes were tried on 100,000
generated products and dropped: the blended vectors (collaborative factors, content tokens, popularity) are far
from isotropic, and IVF and HNSW (on inner product, or on its L2 transform) found under 75% of the exact top 10
at the speeds that would have paid for them. Investment catalogues hold thousands to a few hundred thousand
products, where an exact scan of the products a customer may be shown is affordable.

Scanning is bound by memory, not arithmetic: in a server, between requests, other processes push the vectors
out of the caches. So a query reads only the vectors of the products it may be shown, and on the CPU reads their
8-bit codes first (:mod:`kernels.retrieval`: a quarter of the memory; the float vectors are read again only for
the few rows that may be among the best, so the lists stay exact). On 100,000 x 64 generated products (a median
29% allowed, 1,000 customers, the caches flushed before each query), faiss's flat scan of each slab behind an ID
selector took a median 1.5-2.0 ms a query and the kernel 0.4-0.7 ms; warm, 0.7-0.8 ms against 0.4 ms. Served,
one query's p50 went from 2.1 ms to 1.7 ms (``make bench-recommender``).

:class:`ProductIndex` lays the vectors out at load in slabs, one per diversification group (asset class), each
sorted by the ordering rules' product columns in rule order (``risk_level``, then ``min_horizon_years``, then
``min_investment`` under the default rules). The products one customer is allowed then lie in runs, so the
scan skips the rest in long strides. :meth:`ProductIndex.best` takes the ``per_group`` best allowed products of
each slab: the union of each group's best ``cap`` is exactly what greedy diversification over the whole ranked
catalogue would pick from, so the list is exact without ranking the catalogue. On a GPU (the device chosen in
:mod:`engine.device`) faiss searches each slab's allowed vectors there instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.device import Device, faiss_gpu_knn
from kernels.retrieval import quantize, top_per_slab

__all__ = ["ProductIndex", "build_index"]


def build_index(vectors: np.ndarray) -> Any:
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


class ProductIndex:
    """A version's product vectors, laid out in slabs by ``groups`` (ints, one per product; None: one slab) and
    sorted within each by the keys of ``order_by`` in turn (ascending, NaN last; none: catalogue order).

    Slab positions are what :meth:`best` takes its mask in: :meth:`laid_out` puts a catalogue column in that
    order, and :attr:`position` maps a product to its slab position."""

    def __init__(
        self,
        index: Any,
        *,
        groups: np.ndarray | None = None,
        order_by: Sequence[np.ndarray] = (),
        device: Device = "cpu",
    ) -> None:
        self.n = int(index.ntotal)
        self.dims = int(index.d)
        self.device = device
        vectors = index.reconstruct_n(0, self.n)
        group = np.zeros(self.n, np.int64) if groups is None else np.asarray(groups, np.int64)
        keys = [np.nan_to_num(np.asarray(k, np.float64), nan=np.inf) for k in order_by]
        #: slab position -> product id (np.lexsort sorts by its last key first)
        self.order = np.lexsort((*reversed(keys), group))
        self.laid = np.ascontiguousarray(vectors[self.order], dtype=np.float32)
        #: product id -> slab position
        self.position = np.empty(self.n, np.int64)
        self.position[self.order] = np.arange(self.n)
        bounds = np.flatnonzero(np.diff(group[self.order])) + 1
        self.edges = np.unique(np.array([0, *bounds.tolist(), self.n], dtype=np.int64))
        if device == "cpu":
            self.codes, self.step = quantize(self.laid)
        else:
            self._knn = faiss_gpu_knn()

    def laid_out(self, column: np.ndarray) -> np.ndarray:
        """A per-product ``column`` (catalogue order) in slab order."""
        return np.asarray(column)[self.order]

    def rows(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """The vectors of products ``ids`` (catalogue positions), ``[len(ids), dims]``."""
        return self.laid[self.position[np.asarray(ids, dtype=np.int64)]]

    def best(self, query: np.ndarray, allowed: np.ndarray, per_group: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``per_group`` best products of each slab among those ``allowed`` (a bool per slab position), together
        in score order: (scores, product ids). Exact."""
        q = np.ascontiguousarray(query, dtype=np.float32).ravel()
        if not np.isfinite(q).all():
            msg = "the query vector has NaN or infinite components; the version's files are damaged"
            raise ValueError(msg)
        if self.device == "cpu":
            scores, rows = top_per_slab(self.codes, self.step, self.laid, q, allowed, self.edges, per_group)
        else:
            scores, rows = self._gpu_best(q, allowed, per_group)
        rank = np.argsort(-scores, kind="stable")
        return scores[rank], self.order[rows[rank]]

    def _gpu_best(self, q: np.ndarray, allowed: np.ndarray, per_group: int) -> tuple[np.ndarray, np.ndarray]:
        found_scores, found_rows = [np.empty(0, np.float32)], [np.empty(0, np.int64)]
        for start, stop in zip(self.edges[:-1].tolist(), self.edges[1:].tolist(), strict=True):
            rows = start + np.flatnonzero(allowed[start:stop])
            if not len(rows):
                continue
            scores, at = self._knn(q.reshape(1, -1), self.laid[rows], min(per_group, len(rows)))
            keep = at >= 0
            found_scores.append(scores[keep])
            found_rows.append(rows[at[keep]])
        return np.concatenate(found_scores), np.concatenate(found_rows)
