"""The product vectors in a faiss index, and the exact, rule-aware retrieval the scorer makes on them.

Training writes an exact inner-product index (``IndexFlatIP``). Approximate indexes were tried on 100,000
generated products and dropped: the blended vectors (collaborative factors, content tokens, popularity) are far
from isotropic, and IVF and HNSW (on inner product, or on its L2 transform) found under 75% of the exact top 10
at the speeds that would have paid for them. Investment catalogues hold thousands to a few hundred thousand
products, where an exact scan of the products a customer may be shown is affordable.

Scanning is bound by memory, not arithmetic: in a server, between requests, other processes push the vectors
out of the caches, and a scan of all 100,000 x 64 floats (26 MB) took 3 ms against 1 ms when warm. So a query
reads only the vectors of the products it may be shown. :class:`ProductIndex` lays the vectors out at load in
slabs, one per diversification group (asset class), each sorted by the ordering rules' product columns in rule
order (``risk_level``, then ``min_horizon_years``, then ``min_investment`` under the default rules). The products
one customer is allowed then lie in runs, and a faiss ID selector over each slab skips the rest without touching
their memory (a selector over scattered rows read as much memory as a full scan). :meth:`ProductIndex.best`
takes the ``per_group`` best allowed products of each slab: the union of each group's best ``cap`` is exactly
what greedy diversification over the whole ranked catalogue would pick from, so the list is exact without
ranking the catalogue. The scans go through :func:`engine.device.faiss_knn` (faiss on the GPU when the device
says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.device import Device, faiss_knn

__all__ = ["ProductIndex", "build_index"]


def build_index(vectors: np.ndarray) -> Any:
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


@dataclass(frozen=True)
class _Slab:
    start: int
    stop: int


class ProductIndex:
    """A version's product vectors, laid out in slabs by ``groups`` (ints, one per product; None: one slab) and
    sorted within each by the keys of ``order_by`` in turn (ascending, NaN last; none: catalogue order)."""

    def __init__(
        self,
        index: Any,
        *,
        groups: np.ndarray | None = None,
        order_by: Sequence[np.ndarray] = (),
        device: Device = "cpu",
        threads: int = 1,
    ) -> None:
        self.n = int(index.ntotal)
        self.threads = threads
        self.dims = int(index.d)
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
        edges = [0, *bounds.tolist(), self.n]
        self.slabs = [_Slab(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        self._knn = faiss_knn(device)

    def rows(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """The vectors of products ``ids`` (catalogue positions), ``[len(ids), dims]``."""
        return self.laid[self.position[np.asarray(ids, dtype=np.int64)]]

    def best(self, query: np.ndarray, allowed: np.ndarray, per_group: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``per_group`` best allowed products of each slab for one query, together in score order:
        (scores, product ids). Exact."""
        import faiss

        # OpenMP's thread count is the calling thread's own: a thread that never set it (a server's or a load
        # generator's worker) would split each small scan over every core: ten times slower on a busy 2-core host.
        faiss.omp_set_num_threads(self.threads)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        ok = allowed[self.order]
        found_scores, found_ids = [], []
        for slab in self.slabs:
            mask = ok[slab.start : slab.stop]
            count = int(np.count_nonzero(mask))
            if not count:
                continue
            scores, rows = self._knn(q, self.laid[slab.start : slab.stop], mask, min(per_group, count))
            keep = rows >= 0
            found_scores.append(scores[keep])
            found_ids.append(self.order[slab.start + rows[keep]])
        if not found_ids:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, ids = np.concatenate(found_scores), np.concatenate(found_ids)
        rank = np.argsort(-scores, kind="stable")
        return scores[rank], ids[rank]
