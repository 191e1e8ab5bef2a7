"""The product vectors in a faiss index, and the exact, rule-aware retrieval the scorer makes on them.

Training writes an exact inner-product index (``IndexFlatIP``). Approximate indexes were tried on 100,000
generated products and dropped: the blended vectors (collaborative factors, content tokens, popularity) are far
from isotropic, and IVF and HNSW (on inner product, or on its L2 transform) found under 75% of the exact top 10
at the speeds that would have paid for them. Investment catalogues hold thousands to a few hundred thousand
products, where an exact scan of the products a customer may be shown is affordable.

:class:`ProductIndex` lays the vectors out at load in slabs: one per diversification group (asset class), each
sorted by the first ordering rule's product column (``risk_level`` under ``risk_level <= risk_tolerance``), so
the products a customer may be shown gather at the front of each slab. :meth:`ProductIndex.best` then scans, in
each group, only up to the last allowed product, and takes the ``per_group`` best allowed ones: from the slab's
own best when most of it is allowed, else from the allowed vectors alone. The union of each group's best
``cap`` is exactly what greedy diversification over the whole ranked catalogue would pick from, so the list is
exact without ranking the catalogue. The scans go through :func:`engine.device.faiss_knn` (faiss on the GPU
when the device says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.device import Device, faiss_knn

__all__ = ["ProductIndex", "build_index"]

#: From this share of a slab allowed, its candidates come from the slab's own best (then filtered); below it,
#: from the allowed vectors alone (gathered, a scan of that share).
WHOLE_SLAB_SHARE = 0.3


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
    sorted within each by ``order_by`` (ascending, NaN last; None: catalogue order)."""

    def __init__(
        self,
        index: Any,
        *,
        groups: np.ndarray | None = None,
        order_by: np.ndarray | None = None,
        device: Device = "cpu",
        threads: int = 1,
    ) -> None:
        self.n = int(index.ntotal)
        self.threads = threads
        self.dims = int(index.d)
        #: [products, dims] in catalogue order (the reasons read a product's parts from here).
        self.vectors = np.ascontiguousarray(index.reconstruct_n(0, self.n), dtype=np.float32)
        group = np.zeros(self.n, np.int64) if groups is None else np.asarray(groups, np.int64)
        key = np.zeros(self.n) if order_by is None else np.nan_to_num(np.asarray(order_by, float), nan=np.inf)
        #: slab position -> product id
        self.order = np.lexsort((key, group))
        self.laid = np.ascontiguousarray(self.vectors[self.order])
        bounds = np.flatnonzero(np.diff(group[self.order])) + 1
        edges = [0, *bounds.tolist(), self.n]
        self.slabs = [_Slab(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        self._knn = faiss_knn(device)

    def _scan(self, q: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of ``vectors`` for the one query ``q``: (scores, row numbers; -1 past the end)."""
        scores, at = self._knn(q, vectors, max(1, min(k, len(vectors))))
        return scores[0], at[0]

    def best(self, query: np.ndarray, allowed: np.ndarray, per_group: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``per_group`` best allowed products of each slab for one query, together in score order:
        (scores, product ids). Exact."""
        import faiss

        # OpenMP's thread count is the calling thread's own: a thread that never set it (a server's or a load
        # generator's worker) would split each small scan over every core, 16 times slower on a busy 2-core host.
        faiss.omp_set_num_threads(self.threads)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        ok = allowed[self.order]
        found_scores, found_ids = [], []
        for slab in self.slabs:
            front = np.flatnonzero(ok[slab.start : slab.stop])
            if not len(front):
                continue
            stop = slab.start + int(front[-1]) + 1  # nothing allowed lies past here
            want = min(per_group, len(front))
            share = len(front) / (stop - slab.start)
            scores = ids = np.empty(0)
            if share >= WHOLE_SLAB_SHARE:
                scores, at = self._scan(q, self.laid[slab.start : stop], int(want / share * 2))
                keep = (at >= 0) & ok[slab.start + np.maximum(at, 0)]
                scores, ids = scores[keep], slab.start + at[keep]
            if len(ids) < want:  # few allowed, or too few among the slab's best: the allowed alone
                positions = slab.start + front
                scores, at = self._scan(q, self.laid[positions], want)
                scores, ids = scores[at >= 0], positions[at[at >= 0]]
            found_scores.append(scores[:want])
            found_ids.append(self.order[ids[:want]])
        if not found_ids:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, ids = np.concatenate(found_scores), np.concatenate(found_ids)
        rank = np.argsort(-scores, kind="stable")
        return scores[rank], ids[rank]
