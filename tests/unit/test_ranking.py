"""The per-request kernels equal their NumPy twins (kernels/ranking.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kernels.ranking import coded_fault, coded_fault_ref, reason_scores, reason_scores_ref, top_k, top_k_ref

# Few distinct values, so ties (and zeros, for ``positive``) are common.
_VALUES = st.sampled_from([-2.0, -0.5, 0.0, -0.0, 0.25, 1.0, 3.0])


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(0, 6), st.integers(0, 7)), elements=_VALUES),
    st.integers(1, 5),
    st.booleans(),
)
def test_top_k_equals_its_numpy_twin(values: np.ndarray, k: int, positive: bool) -> None:
    got = top_k(values, k, positive)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, top_k_ref(values, k, positive))


def test_top_k_reads_float64_and_strided_views() -> None:
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(50, 9))
    view = wide[:, :-1]  # the contributions without their bias column
    np.testing.assert_array_equal(top_k(view, 3, True), top_k_ref(view, 3, True))


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(0, 6), st.integers(1, 6)), elements=_VALUES),
    st.sampled_from([0.5, 1.0, -2.0]),
    st.sampled_from([-1.0, 0.0, 0.3]),
    st.sampled_from([0.0, 0.4, 0.6, 1.1]),
    st.integers(1, 4),
)
def test_reason_scores_equal_their_numpy_twin(
    contribs: np.ndarray, a: float, b: float, threshold: float, k: int
) -> None:
    action_of = np.arange(10, 10 + contribs.shape[1], dtype=np.int32)
    prob, reasons, actions = reason_scores(contribs, a, b, threshold, k, action_of)
    ref = reason_scores_ref(contribs, a, b, threshold, k, action_of)
    assert (prob.dtype, reasons.dtype, actions.dtype) == (np.float32, np.int32, np.int32)
    np.testing.assert_allclose(prob, ref[0], rtol=1e-6)
    np.testing.assert_array_equal(reasons, ref[1])
    np.testing.assert_array_equal(actions, ref[2])


def test_reason_scores_act_on_the_first_reason_only_at_the_threshold() -> None:
    contribs = np.array([[0.5, 2.0, -1.0, 0.0], [-0.5, -2.0, -1.0, 0.0], [0.5, 2.0, -1.0, -9.0]], np.float32)
    prob, reasons, actions = reason_scores(contribs, 1.0, 0.0, 0.5, 3, np.array([7, 8, 9, 0], np.int32))
    assert reasons[0].tolist() == [1, 0, -1] and reasons[1].tolist() == [-1, -1, -1]
    assert prob[0] == np.float32(1 / (1 + np.exp(-1.5))) and prob[2] < 0.5
    assert actions.tolist() == [8, 0, 0]  # row 1 has no reason; row 2 is below the threshold


_CELLS = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, 2.0, 2.5, -1.0, 3.0, 7.0])


@settings(max_examples=300, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 5), st.just(4)), elements=_CELLS))
def test_coded_fault_equals_its_numpy_twin(x: np.ndarray) -> None:
    codes = np.array([0, 3, 2, 0], dtype=np.float32)  # numbers, 3 categories, yes/no, numbers
    assert coded_fault(x, codes) == coded_fault_ref(x, codes)


def test_coded_fault_names_the_first_fault_row_by_row() -> None:
    codes = np.array([0, 3], dtype=np.float32)
    x = np.array([[1e30, 2.0], [np.nan, np.nan], [5.0, 3.0], [np.inf, 0.5]], dtype=np.float32)
    assert coded_fault(x, codes) == (2, 1, 2)
    assert coded_fault(x[[0, 1, 3]], codes) == (2, 0, 1)
    assert coded_fault(x[:2], codes) == (-1, -1, 0)
