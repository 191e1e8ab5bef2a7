"""A batch command's decision lines written by one compiled pass (``AuditLog.append_decisions``): the same bytes,
hashes included, as the Polars writer (``append_frame``) writes for the same decisions at the same time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.errors import InvalidInputError
from engine.security import audit
from engine.security.audit import AuditLog, Decisions, verify
from engine.security.trail import DecisionAudit, Trail

KEY = b"k" * 32
NOW = dt.datetime(2026, 12, 7, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
MINTED = ("request_id", "batch", "subject")


class _FrozenClock(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # noqa: ARG003 - the log asks for UTC
        return NOW


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both writers stamp the same time, so their lines and hashes can be compared byte for byte."""
    monkeypatch.setattr(audit, "datetime", _FrozenClock)


def _scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores of every spelling: fractions, whole numbers, tiny ones (``5e-6``), halfway cases, signs, NaN."""
    kinds = [
        rng.random(n) * 3,
        rng.integers(0, 10**7, n) / 1e6 + 5e-7,  # exactly between two 6-decimal values, give or take a bit
        np.exp(rng.normal(0, 6, n)) * rng.choice([-1.0, 1.0], n),
        rng.integers(-20, 20, n).astype(np.float64),
        rng.integers(0, 12, n) * 1e-6,
        np.array([0.0, -0.0, 4e-7, -4e-7, 1e-5, 1.2e-5, 9.9e-6, 999_999_999.9999994, np.nan] * (n // 9 + 1))[:n],
    ]
    return np.concatenate(kinds)


def _decisions(rng: np.random.Generator, n: int, *, batches: bool = True) -> Decisions:
    """Several batches' decisions joined, as a scan queues them: prefixes, batches, decisions and subjects vary."""
    parts = []
    for k in range(4):
        rows = np.sort(rng.choice(10**9, n, replace=False))
        subject = pl.Series([rng.bytes(16).hex() if rng.random() < 0.7 else None for _ in range(n)])
        decision = pl.Series(rng.choice(["alert", "clear", "review"], n).tolist()).scatter([1], [None])
        parts.append(
            Decisions.of(
                "0123456789abcdef",
                rows,
                prefix=f"{k % 2}:",
                batch=f"u{k:05d}-{k:05d}" if batches else None,
                subject=subject if k else None,
                decision=decision if k != 2 else pl.Series(["alert"] * n),
                score=_scores(rng, n)[rng.permutation(6 * n)[:n]],
            )
        )
    return Decisions.join(parts)


def _both(tmp_path: Path, decisions: Decisions) -> tuple[bytes, bytes]:
    compiled, framed = AuditLog(tmp_path / "compiled.jsonl", key=KEY), AuditLog(tmp_path / "framed.jsonl", key=KEY)
    compiled.append_decisions("decision", decisions, model="threat", version="3")
    framed.append_frame("decision", decisions.frame(), minted=MINTED, model="threat", version="3")
    return compiled.path.read_bytes(), framed.path.read_bytes()


@pytest.mark.parametrize("batches", [True, False])
def test_the_compiled_lines_are_the_bytes_polars_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batches: bool
) -> None:
    monkeypatch.setattr(audit, "SEAL", 97)  # several sealed parts, the last one short
    decisions = _decisions(np.random.default_rng(7), 300, batches=batches)
    compiled, framed = _both(tmp_path, decisions)
    assert compiled == framed
    assert compiled.count(b"\n") == len(decisions) == 1200 and compiled.count(b'"hash"') == -(-1200 // 97)
    assert b'"score":null' in compiled and b"e-6" in compiled and b'"score":-0.0' in compiled
    assert (b'"batch":"u00001-00001"' in compiled) == batches
    assert verify(tmp_path / "compiled.jsonl", key=KEY).ok


def test_scores_are_rounded_as_polars_rounds() -> None:
    x = _scores(np.random.default_rng(3), 200_000)
    ours = Decisions.of("r", np.arange(len(x)), prefix="", batch=None, subject=None, decision=pl.Series(["a"] * len(x)),
                        score=x).score  # fmt: skip
    theirs = pl.Series(x).round(6).to_numpy()
    assert np.array_equal(ours, theirs, equal_nan=True)


@pytest.mark.parametrize(
    ("decision", "score"),
    [('say "hi"', 0.5), ("Zürich", 0.5), ("alert", 1e9), ("alert", -3.5e12)],
)
def test_what_the_pass_cannot_spell_goes_through_polars_to_the_same_lines(
    tmp_path: Path, decision: str, score: float
) -> None:
    decisions = Decisions.of(
        "0123456789abcdef", np.array([3, 5]), prefix="0:", batch="b", subject=None,
        decision=pl.Series([decision, "alert"]), score=np.array([score, 0.25]),
    )  # fmt: skip
    compiled, framed = _both(tmp_path, decisions)
    assert compiled == framed and compiled.count(b"\n") == 2


@pytest.mark.parametrize(
    ("decision", "score", "message"),
    [
        ("alert", np.inf, "'score' holds a NaN or infinite number"),
        ("4111 1111 1111 1111", 0.5, "'decision' holds what looks like a card number"),
    ],
)
def test_a_bad_decision_is_refused_and_nothing_is_written(
    tmp_path: Path, decision: str, score: float, message: str
) -> None:
    decisions = Decisions.of(
        "0123456789abcdef", np.array([1]), prefix="", batch=None, subject=None,
        decision=pl.Series([decision]), score=np.array([score]),
    )  # fmt: skip
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(InvalidInputError, match=message):
        log.append_decisions("decision", decisions, model="m")
    assert not log.path.exists() or not log.path.read_bytes()


def test_a_batch_command_audits_through_the_compiled_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows numbered by the command take the compiled pass; its lines are those the Polars path writes."""
    frame = pl.DataFrame(
        {"row": [0, 1, 2], "customer": ["c1", None, "c3"], "action": ["call", "none", "call"], "p": [0.9, 0.1, 0.5]}
    )
    used = []
    real = AuditLog.append_decisions

    def spy(self: AuditLog, event: str, decisions: Decisions, **shared: object) -> tuple[int, str]:
        used.append(len(decisions))
        return real(self, event, decisions, **shared)

    monkeypatch.setattr(AuditLog, "append_decisions", spy)
    run = DecisionAudit(
        Trail(AuditLog(tmp_path / "audit.jsonl"), KEY), command="score", model="churn", version=2,
        decision="action", score="p", subject="customer", run="fedcba9876543210",
    )  # fmt: skip
    run.record(frame)
    run.flush()
    assert used == [3] and run.written == 3
    slow = DecisionAudit(
        Trail(AuditLog(tmp_path / "slow.jsonl"), KEY), command="score", model="churn", version=2,
        decision="action", score="p", subject="customer", run="fedcba9876543210",
    )  # fmt: skip
    slow.record(frame.with_columns(pl.col("row").cast(pl.String)))  # text rows: searched, written by Polars
    slow.flush()
    assert used == [3]
    assert (tmp_path / "audit.jsonl").read_bytes() == (tmp_path / "slow.jsonl").read_bytes()


def test_a_decision_given_once_writes_what_its_column_writes(tmp_path: Path) -> None:
    """``record(decided=...)`` (a scan's "alert" for every row, no column of it): the same lines as the column,
    through the compiled pass and through Polars (text rows)."""
    frame = pl.DataFrame({"row": [4, 9, 12], "score": [0.25, 3.0, 1e-6]})
    logs = []
    for name, rows in (("compiled", pl.col("row")), ("polars", pl.col("row").cast(pl.String))):
        for given in (True, False):
            path = tmp_path / f"{name}-{given}.jsonl"
            run = DecisionAudit(
                Trail(AuditLog(path), KEY), command="scan", model="threat", version=1,
                decision="decision", score="score", run="0123456789abcdef",
            )  # fmt: skip
            rows_of = frame.with_columns(rows)
            if given:
                run.record(rows_of, batch="u00000-b000000", prefix="0:", decided="alert")
            else:
                run.record(rows_of.with_columns(pl.lit("alert").alias("decision")), batch="u00000-b000000", prefix="0:")
            run.flush()
            logs.append(path.read_bytes())
    assert logs[0] == logs[1] and logs[2] == logs[3]
    assert b'"decision":"alert"' in logs[0] and logs[0].count(b"\n") == 3
