"""The served models' sample of scored rows (engine.serving.sample): bounded, rotating, pseudonymised, guarded."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.families.fraud import FraudTrainResult
from engine.security.trail import subject_of
from engine.serving.sample import ScoredSample
from tests.unit.test_serving import fake_pb_utils, fraud_shell

KEY = b"k" * 32
VISA = "4111111111111111"


def _batch(start: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    ids = np.array([f"C{start + i:05d}".encode() for i in range(n)], dtype=object)
    notes = np.array([f"card {VISA}".encode() if (start + i) % 2 else b"plain" for i in range(n)], dtype=object)
    rows = {"customer_id": ids, "note": notes, "tenure": np.arange(start, start + n, dtype=np.float32), "kind": "x"}
    outputs = {
        "p": np.linspace(0, 1, n, dtype=np.float32).reshape(-1, 1),
        "reasons": np.full((n, 3), b"r", dtype=object),  # wider than one value a row: left out
    }
    return rows, outputs


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime)


def test_one_row_in_every_is_kept_across_batches_pseudonymised_and_guarded(tmp_path: Path) -> None:
    sample = ScoredSample(tmp_path, name="churn_0", subjects=["customer_id"], pseudonym_key=KEY, every=3)
    for start, n in ((0, 5), (5, 2), (7, 9)):
        sample.add(*_batch(start, n))
    sample.close()
    (part,) = _parts(tmp_path)
    frame = pl.read_parquet(part)
    kept = list(range(0, 16, 3))  # counted across batches: rows 0, 3, 6, 9, 12, 15
    assert frame.get_column("tenure").to_list() == [float(k) for k in kept]
    assert "customer_id" not in frame.columns and "reasons" not in frame.columns and "kind" not in frame.columns
    assert frame.get_column("subject").to_list() == [subject_of(f"C{k:05d}", KEY) for k in kept]
    assert not any(VISA in v for v in frame.get_column("note").to_list())  # card numbers masked
    assert VISA not in part.read_bytes().decode("latin-1")
    assert {"p", "sampled_at"} <= set(frame.columns)


def test_parts_rotate_so_the_sample_stays_bounded(tmp_path: Path) -> None:
    sample = ScoredSample(
        tmp_path, name="m", subjects=["customer_id"], pseudonym_key=KEY, every=1, part_rows=4, parts=2
    )
    for k in range(5):
        sample.add(*_batch(4 * k, 4))
        time.sleep(0.02)  # distinct modification times, so the oldest part is the one removed
    sample.close()
    parts = _parts(tmp_path)
    assert len(parts) == 2
    tenure = pl.concat([pl.read_parquet(p) for p in parts]).get_column("tenure").to_list()
    assert tenure == [float(t) for t in range(12, 20)]  # the newest two parts of four rows


def test_nothing_kept_writes_nothing(tmp_path: Path) -> None:
    sample = ScoredSample(tmp_path / "s", name="m", subjects=[], pseudonym_key=KEY, every=100)
    sample.add(*_batch(0, 1))  # row 0 is kept
    sample.add(*_batch(1, 50))  # rows 1-50: none
    sample.close()
    assert [pl.read_parquet(p).height for p in _parts(tmp_path / "s")] == [1]
    empty = ScoredSample(tmp_path / "e", name="m", subjects=[], pseudonym_key=KEY)
    empty.close()
    assert not (tmp_path / "e").exists()


def test_the_served_fraud_model_samples_cards_by_pseudonym_only(
    fraud_trained: FraudTrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stateful model reads its requests in order: its sample takes the authorizations it scored.
    from tests.unit.test_erasure import PAN, T0, _authorization

    home = tmp_path / "home"
    monkeypatch.setenv("FINSCORE_HOME", str(home))
    monkeypatch.setenv("FINSCORE_AUDIT_LOG", str(home / "audit.jsonl"))
    monkeypatch.delenv("FINSCORE_PSEUDONYM_KEY_FILE", raising=False)
    monkeypatch.setenv("FINSCORE_SAMPLE", "churn, fraud")
    monkeypatch.setenv("FINSCORE_SAMPLE_EVERY", "1")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    m = fraud_shell(fraud_trained.path, tmp_path / "fraud")
    responses = m.execute([_authorization(f"s-{i}", PAN, T0 + i * 1_000_000) for i in range(3)])
    assert all(r.error is None for r in responses)
    m.finalize()
    (part,) = (home / "samples" / "fraud" / fraud_trained.path.name).glob("*.parquet")
    sample = pl.read_parquet(part)
    key = (home / "pseudonym.key").read_bytes()
    assert sample.height == 3 and "card_id" not in sample.columns
    assert sample.get_column("subject").to_list() == [subject_of(PAN, key)] * 3
    assert sample.get_column("transaction_id").to_list() == ["s-0", "s-1", "s-2"]
    assert {"fraud_probability", "decision_code", "amount"} <= set(sample.columns)
    assert PAN.encode() not in part.read_bytes()
