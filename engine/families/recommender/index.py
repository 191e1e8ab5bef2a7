"""The product vectors' faiss index: exact inner product up to :data:`EXACT_UP_TO` products, HNSW above, on the
GPU when the device asks for it (through :func:`engine.device.faiss_index`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EXACT_UP_TO", "build_index", "search"]

#: Up to here a query scans every product (about 1 ms for 100,000 products of 64 dimensions on one core).
EXACT_UP_TO = 200_000


def build_index(vectors: np.ndarray) -> Any:
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index: Any
    if len(x) <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    index.add(x)
    return index


def search(index: Any, query: np.ndarray, n: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best products for one query (scores, ids; ids -1 past the end), only ``allowed`` ones when a
    mask is given (a faiss ID selector, so the search itself skips the others)."""
    faiss: Any = __import__("faiss")  # its stubs lack the search parameters' keywords

    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    n = max(1, min(n, index.ntotal))
    params = None
    if allowed is not None:
        bits = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        is_hnsw = isinstance(index, faiss.IndexHNSW)
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(2 * n, 64)) if is_hnsw else None
        params = params or faiss.SearchParameters(sel=selector)
        scores, ids = index.search(q, n, params=params)
        del bits  # kept alive until the search is done
    else:
        scores, ids = index.search(q, n)
    return scores[0], ids[0]
