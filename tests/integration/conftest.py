from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.families.assistant import AssistantTrainResult
from engine.families.churn import ChurnTrainResult
from engine.families.face import FaceTrainResult
from engine.families.fraud import FraudTrainResult
from engine.families.propensity import PropensityTrainResult
from engine.families.recommender import RecommenderTrainResult
from engine.families.segments import SegmentsTrainResult
from engine.families.threat import ThreatTrainResult
from engine.serving.server import ServerPorts, TritonServer


@pytest.fixture(scope="session")
def server(
    trained: ChurnTrainResult,
    threat_trained: ThreatTrainResult,
    fraud_trained: FraudTrainResult,
    recommender_trained: RecommenderTrainResult,
    propensity_trained: PropensityTrainResult,
    segments_trained: SegmentsTrainResult,
    assistant_trained: AssistantTrainResult,
    face_trained: FaceTrainResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonServer]:
    """The real bundled tritonserver on free ports, serving the trained churn, threat, fraud, recommender,
    propensity, segments, assistant and face versions; always stopped."""
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    srv = TritonServer(
        trained.path.parent.parent,
        ports=ServerPorts.free(),
        log_path=log,
        ready_timeout=120,
    )
    with srv:
        yield srv
    print(f"Triton log kept at {log}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
