"""bench.scan's rounds: each ratio is taken within a round, then the median across rounds."""

from __future__ import annotations

import pytest

from bench.scan import AUDITED, Result, _audit_costs, _combined, _ratio, pair_costs


def _result(path: str, seconds: float, *, triton: float | None = None, peak: float = 500.0) -> Result:
    return Result(path, 1000, seconds, [seconds], 10, None, triton_seconds=triton, peak_rss_mb=peak)


def test_rounds_are_combined_path_by_path() -> None:
    rounds = [
        [_result("base", 6.0), _result("ours", 0.60, triton=0.3, peak=510.0)],
        [_result("base", 7.5), _result("ours", 0.70, triton=0.5, peak=530.0)],
        [_result("base", 5.0), _result("ours", 0.55, triton=0.4, peak=520.0)],
    ]
    base, ours = _combined(rounds)
    assert base.path == "base" and ours.path == "ours"
    assert ours.round_seconds == [0.60, 0.70, 0.55] and ours.seconds == 0.60 and ours.all_seconds == [0.60, 0.70, 0.55]
    assert ours.triton_seconds == 0.4 and ours.peak_rss_mb == 530.0
    ratio, each = _ratio(base, ours)
    assert each == pytest.approx([10.0, 7.5 / 0.7, 5.0 / 0.55])
    assert ratio == pytest.approx(10.0)
    # The median of the rounds' ratios, not the ratio of the medians: they differ when a slow round of the
    # baseline meets a fast round of ours.
    skewed = _combined([[_result("b", 5.0), _result("o", 1.0)], [_result("b", 9.0), _result("o", 0.9)],
                        [_result("b", 6.0), _result("o", 2.0)]])  # fmt: skip
    assert _ratio(*skewed)[0] == pytest.approx(5.0) and skewed[0].seconds / skewed[1].seconds == pytest.approx(6.0)


def test_one_round_is_the_plain_ratio() -> None:
    base, ours = _result("base", 6.0), _result("ours", 0.5)
    assert _ratio(base, ours) == (12.0, [12.0])
    (only,) = _combined([[ours]])
    assert only.round_seconds == [0.5] and only.seconds == 0.5


def test_the_audit_trail_is_costed_against_the_same_path_in_the_same_round() -> None:
    plain, audited, alone = "finscore in-process", "finscore in-process" + AUDITED, "finscore server" + AUDITED
    rounds = [
        [_result(plain, 0.50), _result(audited, 0.55), _result(alone, 0.9)],
        [_result(plain, 0.60), _result(audited, 0.57), _result(alone, 0.8)],
        [_result(plain, 0.40), _result(audited, 0.48), _result(alone, 0.7)],
    ]
    (line,) = _audit_costs(_combined(rounds))  # a path whose plain twin was not timed has no line
    assert line == f"{audited}: +10% -5% +20% over {plain} in the 3 rounds (median +10.0%)"


def test_the_audit_trail_timed_in_pairs_is_costed_pair_by_pair() -> None:
    median, costs = pair_costs([0.50, 0.55, 0.60, 0.57, 0.40, 0.48])  # plain, audited, plain, audited, ...
    assert [round(c, 6) for c in costs] == [0.1, -0.05, 0.2] and round(median, 6) == 0.1
