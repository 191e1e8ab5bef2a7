"""The served models' own metrics, counted per batch and sent from a thread (engine.serving.metrics), against a
fake of the backend's MetricFamily; tests/integration/test_prometheus.py reads them through a real Prometheus."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.errors import FinscoreError, InvalidInputError, StateUnavailableError
from engine.serving.metrics import Monitored, ServingMetrics, reason_of


class _Family:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    made: dict[str, _Family] = {}
    name: str
    kind: str
    values: dict[tuple[tuple[str, str], ...], float]
    calls: int

    def __new__(cls, name: str, description: str, kind: str) -> _Family:
        # As in Triton, a family made again under its name (another instance, another model) is the same one.
        if name not in cls.made:
            family = cls.made[name] = super().__new__(cls)
            family.name, family.kind, family.values, family.calls = name, kind, {}, 0
        return cls.made[name]

    def Metric(self, labels: dict[str, str]) -> Any:  # noqa: N802 - the backend's name
        family, key = self, tuple(sorted(labels.items()))

        class _Metric:
            def increment(self, value: float) -> None:
                assert value > 0, "only what changed is sent"
                family.calls += 1
                family.values[key] = family.values.get(key, 0) + value

        return _Metric()

    def value(self, **labels: str) -> float:
        return self.values.get(tuple(sorted({"model": "m", "version": "2", **labels}.items())), 0)


class _Backend:
    MetricFamily = _Family


@pytest.fixture()
def families() -> dict[str, _Family]:
    _Family.made = {}
    return _Family.made


def _metrics(monitored: Monitored | None) -> ServingMetrics:
    return ServingMetrics(_Backend, model="m", version="2", monitored=monitored, flush_ms=3_600_000)


def test_scores_are_counted_as_a_cumulative_histogram(families: dict[str, _Family]) -> None:
    m = _metrics(Monitored("p", buckets=(0.1, 0.5, 0.9)))
    m.scored({"p": np.array([0.05, 0.1, 0.3, 0.5, 0.7, 0.95, np.nan], dtype=np.float32)})
    m.scored({"p": np.array([[0.2], [0.99]])})  # [rows, 1], as outputs are; FP64 this time
    m.close()
    bucket = families["finscore_score_bucket"]
    # Prometheus' rule: a bucket counts the scores at or below its bound (an FP32 0.1 is at 0.1); NaN is no score.
    assert [bucket.value(le=le) for le in ("0.1", "0.5", "0.9", "+Inf")] == [2, 5, 6, 8]
    assert families["finscore_score_count"].value() == 8
    expected = float(np.array([0.05, 0.1, 0.3, 0.5, 0.7, 0.95], dtype=np.float32).sum(dtype=np.float64)) + 1.19
    assert families["finscore_score_sum"].value() == pytest.approx(expected)


def test_decisions_are_counted_by_name_from_codes_text_or_yes_no(families: dict[str, _Family]) -> None:
    codes = _metrics(Monitored("p", decision="code", names=("approve", "review", "decline")))
    codes.scored({"p": np.array([0.1, 0.6, 0.9, 0.1]), "code": np.array([0, 1, 2, 0], dtype=np.int32)})
    codes.close()
    decided = families["finscore_decisions_total"]
    assert [decided.value(decision=d) for d in ("approve", "review", "decline")] == [2, 1, 1]
    alerts = _metrics(Monitored("s", buckets=(1.0,), decision="flag", names=("clear", "alert")))
    alerts.scored({"s": np.array([0.5, 3.0, 4.0]), "flag": np.array([False, True, True])})
    text = _metrics(Monitored("p", decision="action"))
    text.scored({"p": np.array([0.2, 0.8]), "action": np.array([b"none", "call"], dtype=object)})
    alerts.close()
    text.close()
    assert decided.value(decision="alert") == 2 and decided.value(decision="clear") == 1
    assert decided.value(decision="none") == 1 and decided.value(decision="call") == 1


def test_nothing_is_sent_until_a_flush_and_only_what_changed(families: dict[str, _Family]) -> None:
    m = _metrics(Monitored("p", buckets=(0.5,)))
    m.scored({"p": np.array([0.1, 0.2])})
    m.rejected("invalid_input", 3)
    assert all(f.calls == 0 for f in families.values())  # execute only counts
    m.flush()
    calls = sum(f.calls for f in families.values())
    m.flush()  # nothing new: no call
    assert sum(f.calls for f in families.values()) == calls
    m.scored({"p": np.array([0.7])})
    m.close()
    assert families["finscore_score_bucket"].value(le="0.5") == 2
    assert families["finscore_score_bucket"].value(le="+Inf") == 3
    assert families["finscore_rejected_total"].value(reason="invalid_input") == 3


def test_a_model_without_a_score_counts_refusals_only(families: dict[str, _Family]) -> None:
    m = _metrics(None)
    m.scored({"scores": np.array([[0.1, 0.2]])})
    m.rejected("missing_input")
    m.close()
    assert families["finscore_score_count"].value() == 0
    assert families["finscore_rejected_total"].value(reason="missing_input") == 1


def test_the_thread_sends_on_its_own(families: dict[str, _Family]) -> None:
    m = ServingMetrics(_Backend, model="m", version="2", monitored=Monitored("p"), flush_ms=10)
    m.scored({"p": np.array([0.3])})
    import time

    deadline = time.monotonic() + 10
    while families["finscore_score_count"].value() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert families["finscore_score_count"].value() == 1
    m.close()


def test_reasons_of_refusals() -> None:
    missing = InvalidInputError("input 'x' is missing from the request")
    missing.reason = "missing_input"  # type: ignore[attr-defined]
    assert reason_of(missing) == "missing_input"
    assert reason_of(InvalidInputError("bad")) == "invalid_input"
    assert reason_of(StateUnavailableError("down")) == "state_unavailable"
    assert reason_of(FinscoreError("no")) == "refused"
    assert reason_of(ValueError("bug")) == "internal"


def test_execute_keeps_batches_for_the_thread_and_counts_them_itself_past_the_bound(
    families: dict[str, _Family], monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.serving.metrics as metrics

    monkeypatch.setattr(metrics, "FOLD_ROWS", 4)
    m = _metrics(Monitored("p", buckets=(0.5,), decision="code", names=("no", "yes")))
    kept = []
    for _ in range(10):  # 20 rows: more than the bound, with no flush between them
        m.scored({"p": np.array([0.25, 0.75]), "code": np.array([0, 1], dtype=np.int32)})
        kept.append(m._kept_rows)
    assert max(kept) <= 4  # never more than the bound kept uncounted
    m.close()
    assert families["finscore_score_bucket"].value(le="0.5") == 10
    assert families["finscore_score_count"].value() == 20
    assert families["finscore_score_sum"].value() == pytest.approx(10.0)
    decided = families["finscore_decisions_total"]
    assert decided.value(decision="no") == 10 and decided.value(decision="yes") == 10
