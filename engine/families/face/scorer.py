"""The three served face models: ``face_detect``, ``face_embed`` and ``face_verify``.

Each takes photos as encoded bytes (BYTES ``[1]``, JPEG or PNG) and checks them in :meth:`validate`: a request
whose photo is not an image, or (embed, verify) holds no face or several, is refused there with one sentence
saying which and how many, before anything is scored or recorded.

``face_verify`` composes detection and the two embeddings in its own process rather than calling the other two
models through BLS: a verification is two photos' worth of work, and BLS would add three round trips through
the stub's shared memory, with the photos' bytes, to each. The threshold ``match`` applies comes from the
version's calibration (:mod:`engine.families.face.calibrate`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from engine.device import Device
from engine.errors import InvalidInputError
from engine.families.contract import N_REASONS, load_version
from engine.families.face.pack import DETECTOR_FILE, RECOGNIZER_FILE, Graphs
from engine.families.face.pipeline import FacePipeline, Faces, align, decode_image, one_face
from engine.serving.config import TensorSpec
from engine.serving.metrics import Monitored

__all__ = [
    "PARAMS_FILE",
    "REASONS",
    "FaceDetectScorer",
    "FaceEmbedScorer",
    "FaceVerifyScorer",
    "photo_digest",
]

T = TypeVar("T")
R = TypeVar("R")

PARAMS_FILE = "face.json"
#: A face narrower than this (pixels of the photo) gives a less certain embedding.
SMALL_FACE = 80
#: A detection score below this: a turned, blurred or covered face.
UNCLEAR_FACE = 0.9
#: A similarity this close to the threshold is a near call.
NEAR = 0.05
#: ``face_verify``'s reason codes: what makes a decision less certain, worst first; "" pads.
REASONS = ("near_threshold", "face_a_small", "face_b_small", "face_a_unclear", "face_b_unclear")


def photo_digest(data: bytes) -> str:
    """The SHA-256 of a photo's bytes: what the audit log's pseudonym of a photo is made from."""
    return hashlib.sha256(data).hexdigest()


class _FaceScorer:
    """What the three face scorers share: the version folder's pipeline and parameters, and reading photos."""

    OUTPUTS: ClassVar[Sequence[TensorSpec]]
    INPUTS: ClassVar[tuple[TensorSpec, ...]]
    #: The file whose absence means "not trained" (the detector alone for face_detect).
    MODEL_FILE: ClassVar[str] = RECOGNIZER_FILE
    family: ClassVar[str] = "face"

    def __init__(
        self, pipeline: FacePipeline, params: Mapping[str, Any], *, version: str = "", workers: int = 2
    ) -> None:
        self.pipeline = pipeline
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self.params = dict(params)
        self.threshold = float(params["threshold"])
        self.version = version

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu", threads: int = 1) -> Any:
        """Load a version folder written by :func:`engine.families.face.train.train_face`."""

        def read(d: Path) -> _FaceScorer:
            params = json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))
            pipeline = FacePipeline(
                d,
                device=device,
                threads=threads,
                recognizer=cls.MODEL_FILE == RECOGNIZER_FILE,
                graphs=Graphs.of(params),
            )
            return cls(pipeline, params, version=d.name)

        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidProtobuf

        return load_version(
            version_dir, family=cls.family, model_file=cls.MODEL_FILE, read=read, errors=(Fail, InvalidProtobuf)
        )

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self.INPUTS)

    def photos(
        self, columns: Mapping[str, object], names: Sequence[str], *, one: bool
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each input of ``names``: its photos decoded, their faces and digests (object arrays, one per row); with
        ``one``, a photo without exactly one face is refused. The first fault, in input and row order, is raised."""
        found: list[tuple[str, int, object, str]] = []
        for name in names:
            if name not in columns:
                msg = f"input {name!r} is missing from the request"
                raise InvalidInputError(msg)
            values = np.asarray(columns[name], dtype=object).reshape(-1)
            if values.size == 0:
                msg = f"input {name!r} has no rows; send one photo per row"
                raise InvalidInputError(msg)
            found += [(name, i, v, f"{name} (row {i})" if values.size > 1 else name) for i, v in enumerate(values)]

        def read(item: tuple[str, int, object, str]) -> tuple[np.ndarray, Faces, str]:
            image = decode_image(item[2], field=item[3])
            faces = self.pipeline.detect(image)
            if one:
                one_face(faces, field=item[3])
            return image, faces, photo_digest(bytes(item[2]))  # type: ignore[call-overload]

        done = self.each(read, found)
        out = {}
        for name in names:
            rows = [r for (n, *_), r in zip(found, done, strict=True) if n == name]
            arrays = tuple(np.empty(len(rows), dtype=object) for _ in range(3))
            for i, row in enumerate(rows):
                for array, value in zip(arrays, row, strict=True):
                    array[i] = value
            out[name] = arrays
        return out  # type: ignore[return-value]

    def each(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` of each item, on :attr:`workers` threads when there are several (decoding and ONNX Runtime
        release the GIL: the two photos of a verification take about the time of one on two cores)."""
        if len(items) < 2 or self.workers < 2:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="finscore-face")
        return list(self._pool.map(fn, items))

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate and score one request: ``{input: array}`` → ``{output: array}``."""
        return self.score_rows(self.validate(columns))  # type: ignore[attr-defined, no-any-return]

    def embeddings(self, images: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """The embedding of each row's one face."""
        rows = list(zip(images, faces, strict=True))
        vectors = self.each(lambda row: self.pipeline.embed_crops([align(row[0], row[1].landmarks[0])]), rows)
        return np.concatenate(vectors) if vectors else np.empty((0, self.pipeline.dim), dtype=np.float32)


class FaceDetectScorer(_FaceScorer):
    """``face_detect``: every face of a photo. The lists are flat, ``faces`` entries long per row (4 box values
    x1, y1, x2, y2; 10 landmark values, x then y of: eyes, nose tip, mouth corners; 1 score), best score first."""

    MODEL_FILE: ClassVar[str] = DETECTOR_FILE
    INPUTS = (TensorSpec("image", "BYTES", (1,)),)
    OUTPUTS: ClassVar[Sequence[TensorSpec]] = (
        TensorSpec("faces", "INT32", (1,)),
        TensorSpec("boxes", "FP32", (-1,)),
        TensorSpec("landmarks", "FP32", (-1,)),
        TensorSpec("scores", "FP32", (-1,)),
    )

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        images, faces, _ = self.photos(columns, ["image"], one=False)["image"]
        return {"image": images, "faces": faces}

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        found: list[Faces] = list(rows["faces"])
        most = max((len(f) for f in found), default=0)
        counts = np.array([len(f) for f in found], dtype=np.int32)
        # Rows of a batch with fewer faces than its most are padded with NaN.
        boxes = np.full((len(found), 4 * most), np.nan, dtype=np.float32)
        marks = np.full((len(found), 10 * most), np.nan, dtype=np.float32)
        scores = np.full((len(found), most), np.nan, dtype=np.float32)
        for i, f in enumerate(found):
            boxes[i, : 4 * len(f)] = f.boxes.reshape(-1)
            marks[i, : 10 * len(f)] = f.landmarks.reshape(-1)
            scores[i, : len(f)] = f.scores
        return {"faces": counts, "boxes": boxes, "landmarks": marks, "scores": scores}


class FaceEmbedScorer(_FaceScorer):
    """``face_embed``: a photo of one face → its L2-normalised embedding (the dot product of two is their
    cosine similarity)."""

    INPUTS = (TensorSpec("image", "BYTES", (1,)),)
    OUTPUTS: ClassVar[Sequence[TensorSpec]] = (TensorSpec("embedding", "FP32", (128,)),)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        images, faces, _ = self.photos(columns, ["image"], one=True)["image"]
        return {"image": images, "faces": faces}

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        return {"embedding": self.embeddings(rows["image"], rows["faces"])}


class FaceVerifyScorer(_FaceScorer):
    """``face_verify``: two photos of one face each → their ``similarity`` and whether it reaches the calibrated
    threshold (``match``); ``reasons`` names up to three of :data:`REASONS` that make the decision less
    certain. ``digest_a``/``digest_b`` (not served) are the photos' SHA-256, which the audit pseudonymizes."""

    INPUTS = (TensorSpec("image_a", "BYTES", (1,)), TensorSpec("image_b", "BYTES", (1,)))
    OUTPUTS: ClassVar[Sequence[TensorSpec]] = (
        TensorSpec("similarity", "FP32", (1,)),
        TensorSpec("match", "BOOL", (1,)),
        TensorSpec("reasons", "BYTES", (N_REASONS,)),
    )
    monitored: ClassVar[Monitored] = Monitored(
        "similarity", buckets=(0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), decision="match", names=("rejected", "matched")
    )

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        read = self.photos(columns, ["image_a", "image_b"], one=True)
        (images_a, faces_a, digests_a), (images_b, faces_b, digests_b) = read["image_a"], read["image_b"]
        if len(images_a) != len(images_b):
            msg = f"inputs 'image_a' and 'image_b' hold {len(images_a)} and {len(images_b)} rows; send pairs"
            raise InvalidInputError(msg)
        return {
            "image_a": images_a,
            "faces_a": faces_a,
            "digest_a": digests_a,
            "image_b": images_b,
            "faces_b": faces_b,
            "digest_b": digests_b,
        }

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        n = len(rows["image_a"])
        both = self.embeddings(
            np.concatenate([rows["image_a"], rows["image_b"]]), np.concatenate([rows["faces_a"], rows["faces_b"]])
        )
        similarity = np.einsum("ij,ij->i", both[:n], both[n:]).astype(np.float32)
        return {
            "similarity": similarity,
            "match": similarity >= self.threshold,
            "reasons": self.reasons(similarity, rows["faces_a"], rows["faces_b"]),
            "digest_a": rows["digest_a"],
            "digest_b": rows["digest_b"],
        }

    def reasons(self, similarity: np.ndarray, faces_a: np.ndarray, faces_b: np.ndarray) -> np.ndarray:
        """Up to :data:`N_REASONS` of :data:`REASONS` per row, in that order; "" where fewer apply."""
        out = np.full((len(similarity), N_REASONS), "", dtype=object)
        for i, (sim, fa, fb) in enumerate(zip(similarity, faces_a, faces_b, strict=True)):
            width_a, width_b = (float(f.boxes[0, 2] - f.boxes[0, 0]) for f in (fa, fb))
            applies = (
                abs(float(sim) - self.threshold) < NEAR,
                width_a < SMALL_FACE,
                width_b < SMALL_FACE,
                float(fa.scores[0]) < UNCLEAR_FACE,
                float(fb.scores[0]) < UNCLEAR_FACE,
            )
            named = [name for name, hit in zip(REASONS, applies, strict=True) if hit][:N_REASONS]
            out[i, : len(named)] = named
        return out
