"""A served model's sample of scored rows, switched on for churn alone: written under FINSCORE_HOME at unload,
pseudonymised, and equal to what was scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import tritonclient.grpc as grpcclient

from clients import ModelClient
from engine.families.churn import ChurnScorer, ChurnTrainResult
from engine.families.threat import ThreatTrainResult
from engine.serving.server import ServerPorts, TritonServer


def test_a_sampling_model_writes_what_it_scored_pseudonymised(
    trained: ChurnTrainResult,
    threat_trained: ThreatTrainResult,
    scorer: ChurnScorer,
    customers: pl.DataFrame,
    tmp_path: Path,
) -> None:
    assert threat_trained.path.parent.parent == trained.path.parent.parent  # one repository, two models
    home = tmp_path / "home"
    env = {"FINSCORE_HOME": str(home), "FINSCORE_SAMPLE": "churn", "FINSCORE_SAMPLE_EVERY": "2"}
    env |= {"FINSCORE_AUDIT_LOG": str(home / "audit.jsonl"), "FINSCORE_PSEUDONYM_KEY_FILE": str(home / "p.key")}
    frame = customers.head(9)
    with TritonServer(
        trained.path.parent.parent, ports=ServerPorts.free(), models=["churn", "threat"], env=env,
        log_path=tmp_path / "triton.log",
    ) as server:  # fmt: skip
        with ModelClient(server.grpc_url, "churn") as client:
            served = client.infer(frame)
        with grpcclient.InferenceServerClient(server.grpc_url) as raw:
            raw.unload_model("churn")  # the sample's last part is written at unload
            assert raw.is_model_ready("threat")
    version = trained.path.name
    parts = list((home / "samples" / "churn" / version).glob("*.parquet"))
    assert len(parts) == 1 and not (home / "samples" / "threat").exists()  # only the model named samples
    sample = pl.read_parquet(parts[0])
    kept = list(range(0, 9, 2))
    # Churn's requests carry its inputs, not the customer id: nothing in the sample names the customer.
    ids = frame.get_column(scorer.schema.id_column).to_list()
    assert scorer.schema.id_column not in sample.columns and "subject" not in sample.columns
    assert not any(str(i).encode() in parts[0].read_bytes() for i in ids)
    inputs = [c.name for c in scorer.schema.columns]
    assert set(inputs) | {"churn_probability", "retention_action", "sampled_at"} == set(sample.columns)
    np.testing.assert_allclose(
        sample.get_column("churn_probability").to_numpy(), served["churn_probability"].reshape(-1)[kept], atol=1e-6
    )
    number = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    expected = frame.get_column(number).cast(pl.Float32).gather(kept).to_list()
    assert sample.get_column(number).to_list() == expected  # the rows kept are the rows scored, in order
