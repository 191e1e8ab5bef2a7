"""Card numbers and customer ids sent down every path of the live server and the batch commands, valid and
broken, come back in no error message, and (with the log scan after the suites) land in no server log, alert
file or audit log. The audit log records every decision the batch commands write and every model load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients import FraudClient
from engine.cli import main
from engine.security.audit import verify
from engine.security.trail import Trail
from engine.serving.server import TritonServer
from tests.leak_scan import find_leaks

PANS = ["4111111111111111", "5500 0000 0000 0004", "378282246310005"]  # Visa, Mastercard (spaced), Amex
CUSTOMER = "C0019999999"
T0 = 1_950_000_000_000_000  # after anything else the session's fraud state holds


def _infer_error(server: TritonServer, model: str, inputs: list) -> str:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.infer(model, inputs)
    except InferenceServerException as exc:
        return exc.message() or ""
    finally:
        client.close()
    return ""


def _text(name: str, values: list[str]) -> grpcclient.InferInput:
    arr = np.array([[v.encode()] for v in values], dtype=object)
    t = grpcclient.InferInput(name, list(arr.shape), "BYTES")
    t.set_data_from_numpy(arr)
    return t


def _leaked(message: str) -> bool:
    compact = message.replace(" ", "")
    return CUSTOMER in message or any(p.replace(" ", "") in compact for p in PANS)


def test_card_numbers_in_every_text_input_come_back_in_no_error(server: TritonServer, customers: pl.DataFrame) -> None:
    messages = []
    # Churn: every text input holds a card number or the customer id, an unknown category each.
    client = grpcclient.InferenceServerClient(server.grpc_url)
    meta = client.get_model_metadata("churn")
    row = customers.head(1)
    inputs = []
    for i, spec in enumerate(meta.inputs):
        if spec.datatype == "BYTES":
            inputs.append(_text(spec.name, [(PANS + [CUSTOMER])[i % 4]]))
        else:
            value = row.get_column(spec.name).cast(pl.Float32).fill_null(0).to_numpy().reshape(1, 1)
            t = grpcclient.InferInput(spec.name, [1, 1], spec.datatype)
            t.set_data_from_numpy(value.astype(np.float32))
            inputs.append(t)
    messages.append(_infer_error(server, "churn", inputs))  # unknown categories score as unknown: no error
    # A card number where a number belongs: the wrong dtype.
    number = next(i for i, spec in enumerate(meta.inputs) if spec.datatype != "BYTES")
    inputs[number] = _text(meta.inputs[number].name, [PANS[0]])
    messages.append(_infer_error(server, "churn", inputs))
    # Fraud: a valid authorization of a card number, then the same card broken in each way the state refuses.
    with FraudClient(server.grpc_url) as fraud:
        ok = fraud.authorize(
            {
                "transaction_id": [f"leak-{PANS[0]}"],
                "card_id": [PANS[1]],
                "terminal_id": [PANS[2]],
                "amount": [12.5],
                "timestamp": [T0],
            }
        )
        assert ok["decision"][0] in {"approve", "review", "decline"}
        for body in (
            {"transaction_id": [f"leak-{PANS[0]}"], "card_id": [PANS[1]], "amount": [1.0], "timestamp": [T0 + 1]},
            {"transaction_id": [PANS[2]], "card_id": [PANS[1]], "amount": [1.0], "timestamp": [T0 - 1]},
            {"transaction_id": [PANS[2]], "card_id": [PANS[1]], "amount": [float("nan")], "timestamp": [T0 + 2]},
        ):
            with pytest.raises(Exception) as info:  # noqa: PT011 - the kinds differ; the text is what is checked
                fraud.authorize(body)
            messages.append(str(info.value))
        with pytest.raises(Exception) as info:  # noqa: PT011
            fraud.report([PANS[0]], [1])
        messages.append(str(info.value))
    assert messages[1] and all(messages[2:]) and len(messages) == 6
    assert not [m for m in messages if _leaked(m)], messages
    assert client.is_server_live() and all(client.is_model_ready(m) for m in ("churn", "fraud", "threat"))
    client.close()
    assert find_leaks([server.log_path]) == []  # the scan after the suites reads it again, with the rest


def test_batch_commands_mask_cards_and_audit_every_decision_and_load(
    server: TritonServer, customers: pl.DataFrame, events: pl.DataFrame, tmp_path: Path
) -> None:
    trail = Trail.from_env()
    loads = [x for x in _lines(trail.path) if x["event"] == "model_load" and x["where"] == "triton"]
    assert {x["model"] for x in loads} >= {"churn", "threat", "fraud"}
    assert all(x["instance"] and x["version"] for x in loads)

    data = tmp_path / "customers.parquet"
    ids = [PANS[i % 3] if i % 2 else CUSTOMER[:-4] + f"{i:04d}" for i in range(200)]
    customers.head(200).with_columns(pl.Series("customer_id", ids)).write_parquet(data)
    scores = tmp_path / "scores.parquet"
    url = ["--url", server.grpc_url, "--no-progress"]
    assert main(["score", "churn", "--data", str(data), "--out", str(scores), *url]) == 0
    written = pl.read_parquet(scores)
    assert written.height == 200 and not any(p in str(written["id"].to_list()) for p in PANS)
    assert written["id"].str.contains(r"\*").sum() == 100

    events_in = tmp_path / "events.parquet"
    events.head(3000).with_columns(pl.lit(PANS[0]).alias("event_id")).write_parquet(events_in)
    alerts = tmp_path / "alerts.jsonl"
    assert main(["scan", str(events_in), "--out", str(alerts), *url]) == 0
    found = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert found and {a["finscore"]["record_id"] for a in found} == {"411111******1111"}

    lines = _lines(trail.path)
    runs = [x for x in lines if x["event"] == "run"][-2:]
    assert [(r["command"], r["status"]) for r in runs] == [("score", "written"), ("scan", "written")]
    by_run = {
        r["run"]: [x for x in lines if x["event"] == "decision" and x["request_id"].startswith(r["run"])] for r in runs
    }
    assert [len(by_run[r["run"]]) for r in runs] == [200, len(found)]
    assert {x["subject"] for x in by_run[runs[0]["run"]]} >= {trail.subject(PANS[1]), trail.subject(ids[0])}
    assert verify(trail.path).ok
    assert find_leaks([trail.path, alerts, server.log_path]) == []


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
