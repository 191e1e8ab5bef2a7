"""The 8-bit retrieval kernel returns exactly what scoring every allowed row from its float vector returns."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.retrieval
from kernels.retrieval import error_bound, quantize, top_per_slab, top_per_slab_ref


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 2000),
    d=st.sampled_from([1, 3, 16, 64]),
    slabs=st.integers(1, 6),
    share=st.floats(0.0, 1.0),
    m=st.integers(1, 60),
    shape=st.sampled_from(["normal", "clustered", "duplicates", "skewed"]),
)
def test_kernel_equals_the_exact_scan(seed: int, n: int, d: int, slabs: int, share: float, m: int, shape: str) -> None:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d)) * rng.uniform(0.001, 5.0, d)
    if shape == "clustered":  # many near-equal scores: the case where codes alone would misorder
        v = rng.standard_normal((1, d)) + 1e-3 * v
    elif shape == "duplicates":  # exact ties
        v = v[rng.integers(0, max(1, n // 10), n)]
    elif shape == "skewed":  # one dimension dominates, one is all zero
        v[:, 0] *= 1000.0
        v[:, -1] = 0.0
    vectors = np.ascontiguousarray(v, dtype=np.float32)
    codes, step = quantize(vectors)
    query = rng.standard_normal(d).astype(np.float32)
    allowed = rng.random(n) < share
    edges = np.unique(np.concatenate([[0], rng.integers(0, n, slabs - 1), [n]])).astype(np.int64)

    got_scores, got_rows = top_per_slab(codes, step, vectors, query, allowed, edges, m)
    want_scores, want_rows = top_per_slab_ref(vectors, query, allowed, edges, m)

    assert len(got_rows) == len(want_rows)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6, atol=1e-6)
    assert allowed[got_rows].all()
    # Equal scores may come in either order within a slab: same slabs, same scores, distinct rows.
    slab_of = np.searchsorted(edges, got_rows, side="right")
    assert (slab_of == np.searchsorted(edges, want_rows, side="right")).all()
    assert len(set(got_rows.tolist())) == len(got_rows)
    exact = vectors.astype(np.float64) @ query.astype(np.float64)
    np.testing.assert_allclose(exact[got_rows], want_scores, rtol=1e-6, atol=1e-6)


def test_the_error_bound_holds_for_every_row() -> None:
    """The rescoring is exact only if no code's score lies further than the bound from the exact one."""
    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((5000, 64)) * rng.uniform(0.01, 2.0, 64)).astype(np.float32)
    codes, step = quantize(vectors)
    for _ in range(20):
        query = rng.standard_normal(64).astype(np.float32)
        approx = codes.astype(np.float64) @ (query.astype(np.float64) * step)
        exact = vectors.astype(np.float64) @ query.astype(np.float64)
        bound = error_bound(query, step)
        assert np.abs(approx - exact).max() <= bound
        assert np.abs(approx - exact).max() > bound / 10  # and it is not so loose that every row is rescored


def test_vectors_that_are_not_finite_are_refused() -> None:
    with pytest.raises(ValueError, match="must be finite"):
        quantize(np.array([[1.0, np.nan]], dtype=np.float32))


def test_the_module_example_runs() -> None:
    assert doctest.testmod(kernels.retrieval).failed == 0
