"""``finscore face enroll`` and ``finscore face identify``: 1:N identification over the face gallery
(:mod:`engine.families.face.gallery`), hooked into the ``finscore face`` group by :func:`add_gallery_subcommands`.

Photos are embedded in-process (:func:`engine.families.face.embedding.embed_images`). Each photo must show
exactly one face: a photo with none or several is refused in one sentence naming its position and how many
faces it shows, and nothing of that call is stored. A photo is named by its position, never its file name (a
name can be a person's). Each enrolment and each identification appends one audit line under the person's
pseudonym (``enrolment``; ``decision`` with the best score): the audit log is opened before anything is stored.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.cli.common import Subparsers, add_repo, positive_int, text_table
from engine.errors import DataFileError, InvalidInputError, ModelNotReadyError
from engine.settings import resolve_settings

if TYPE_CHECKING:
    from engine.device import Device

__all__ = ["Embedder", "add_gallery_subcommands", "embed", "enroll_command", "identify_command", "load_embedder"]

MODEL = "face_gallery"


def add_gallery_subcommands(face_sub: Subparsers) -> None:
    """Add ``enroll`` and ``identify`` to the subparsers of ``finscore face``."""
    e = face_sub.add_parser("enroll", help="add a person's face photos to the gallery of 1:N identification")
    e.add_argument("person", metavar="ID", help="the person's customer id")
    e.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="JPEG or PNG photos, one face each")
    _add_gallery(e)
    e.set_defaults(func=enroll_command)
    i = face_sub.add_parser("identify", help="find the enrolled people most like the face in a photo")
    i.add_argument("image", type=Path, metavar="IMAGE", help="a JPEG or PNG photo of one face")
    i.add_argument("--k", type=positive_int, default=5, help="how many people to list (default 5)")
    i.add_argument("--json", action="store_true", help="print one JSON document")
    _add_gallery(i)
    i.set_defaults(func=identify_command)


def _add_gallery(p: argparse.ArgumentParser) -> None:
    add_repo(p)
    p.add_argument(
        "--gallery",
        type=Path,
        metavar="DIR",
        help="the gallery folder (default: gallery/ in FINSCORE_HOME, the one `finscore forget` erases from)",
    )


@dataclass(frozen=True)
class Embedder:
    """The face model photos are embedded with: its pipeline, its ``face_embed`` version and the threshold that
    version serves (None: the version names none)."""

    pipeline: Any
    version: str
    threshold: float | None


def load_embedder(repo: Path | None, device: Device) -> Embedder:
    """The newest ``face_embed`` version of the model repository, as :func:`embed_images` would load it."""
    from engine.families.face.embedding import EMBED_MODEL, load_pipeline
    from engine.families.face.scorer import PARAMS_FILE
    from engine.serving.repository import ModelRepository

    models = ModelRepository(resolve_settings(repo=repo).repo)
    try:
        folder = models.latest(EMBED_MODEL)
    except ModelNotReadyError:
        msg = f"no face model in {models.root}: run `finscore face train` first"
        raise ModelNotReadyError(msg) from None
    try:
        threshold = json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8")).get("threshold")
    except (OSError, ValueError):
        threshold = None
    pipeline = load_pipeline(folder, device=device)
    return Embedder(pipeline, folder.name, None if threshold is None else float(threshold))


def _read(paths: Sequence[Path], outcome: str) -> list[bytes]:
    images = []
    for i, path in enumerate(paths, 1):
        try:
            images.append(path.read_bytes())
        except OSError as exc:
            msg = f"image {i} of {len(paths)} cannot be read ({exc.strerror or type(exc).__name__}): {outcome}"
            raise DataFileError(msg) from None
    return images


def embed(paths: Sequence[Path], embedder: Embedder, *, outcome: str = "nothing was stored") -> np.ndarray:
    """One embedding per photo, or one sentence naming the first photo that does not show exactly one face and
    ending with ``outcome``."""
    from engine.families.face.embedding import embed_images

    vectors, counts = embed_images(_read(paths, outcome), model=embedder.pipeline)
    for i, count in enumerate(np.asarray(counts).tolist(), 1):
        if count != 1:
            shows = "no face" if count == 0 else f"{count} faces"
            msg = f"image {i} of {len(paths)} shows {shows}, not one: {outcome}"
            raise InvalidInputError(msg)
    return np.asarray(vectors, dtype=np.float32)


def _folder(args: argparse.Namespace) -> Path:
    from engine.families.face.gallery import default_gallery

    return args.gallery if args.gallery is not None else default_gallery()


def _device() -> Device:
    from engine.device import resolve_device

    return resolve_device(resolve_settings().device)


def enroll_command(args: argparse.Namespace) -> int:
    """``finscore face enroll ID IMAGE...``: every photo's face, or none of them, added as the person's."""
    from engine.families.face.gallery import Gallery, person_id
    from engine.security.trail import Trail

    person = person_id(args.person)
    folder = _folder(args)
    trail = Trail.from_env()
    device = _device()
    embedder = load_embedder(args.repo, device)
    vectors = embed(args.images, embedder)
    with Gallery.editing(folder, dim=vectors.shape[1], device=device) as gallery:
        total = gallery.enroll(person, vectors)
    trail.event(
        "enrolment",
        model=MODEL,
        version=str(gallery.generation),
        subject=trail.subject(person),
        vectors=len(vectors),
        total=total,
        embedder=embedder.version,
    )
    print(
        f"enrolled {len(vectors)} {'face' if len(vectors) == 1 else 'faces'}: the person has {total}, the gallery "
        f"{len(gallery):,} faces of {gallery.persons:,} {'person' if gallery.persons == 1 else 'people'} "
        f"({gallery.index_kind} search) in {folder}"
    )
    return 0


def identify_command(args: argparse.Namespace) -> int:
    """``finscore face identify IMAGE``: the ``--k`` people most like the photo's face, best first."""
    from engine.families.face.gallery import Gallery
    from engine.security.trail import Trail, new_run_id

    device = _device()
    gallery = Gallery.load(_folder(args), device=device)
    trail = Trail.from_env()
    embedder = load_embedder(args.repo, device)
    (vector,) = embed([args.image], embedder, outcome="nobody was searched for")
    found = gallery.identify(vector, args.k)
    threshold = embedder.threshold
    best = found[0][1] if found else None
    match = None if threshold is None else best is not None and best >= threshold
    decision = "ranked" if match is None else ("match" if match else "no_match")
    trail.event(
        "decision",
        model=MODEL,
        version=str(gallery.generation),
        request_id=f"{new_run_id()}/0",
        subject=trail.subject(found[0][0]) if found else None,
        decision=decision,
        score=None if best is None else round(best, 6),
        k=args.k,
        embedder=embedder.version,
    )
    if args.json:
        doc = {
            "candidates": [{"id": person, "score": round(score, 6)} for person, score in found],
            "threshold": threshold,
            "match": match,
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("the gallery is empty: nobody to compare with")
        return 0
    print(text_table([(r, p, f"{s:.4f}") for r, (p, s) in enumerate(found, 1)], ("rank", "id", "cosine")))
    if threshold is not None:
        verdict = "above" if match else "below"
        print(f"best {best:.4f} is {verdict} the served threshold {threshold:.4f}: {decision.replace('_', ' ')}")
    return 0
