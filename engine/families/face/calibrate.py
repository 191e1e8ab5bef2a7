"""Calibration: the served threshold measured on photos of known people, not guessed.

A folder holds one subfolder per person. Every photo is embedded (its largest face: a calibration photo
shows its person, maybe with others behind); every pair of photos is scored, genuine when both show the same
person, impostor otherwise. The figures:

- **EER**: where the share of impostor pairs accepted equals the share of genuine pairs refused;
- **TAR at FAR 1e-3**: the genuine pairs accepted at the lowest threshold that accepts at most one impostor pair
  in a thousand;
- **threshold**: the middle of the gap at that operating point, between the highest impostor score it must
  refuse and the lowest genuine score above it (a midpoint, not the edge, so a new photo a little below the
  lowest genuine pair seen is not refused for that alone). With fewer than a thousand impostor pairs, every
  impostor pair is refused;
- **rank-1**: each photo against all the others; right when its most similar photo shows its person (photos
  whose person has no other photo cannot be right and are not counted).

Photos in which no face was found, with several faces, or that are not images are listed, never guessed at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import DataFileError, InvalidInputError
from engine.families.face.pipeline import FacePipeline, decode_image

__all__ = [
    "FAR",
    "IMAGE_SUFFIXES",
    "Calibration",
    "calibrate",
    "calibrate_folder",
    "choose_threshold",
    "equal_error_rate",
    "pair_scores",
    "people_photos",
    "rank1",
    "tar_at_far",
]

FAR = 1e-3
IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"))


@dataclass(frozen=True)
class Calibration:
    """A calibration's figures; :meth:`as_dict` is what ``--json`` writes and training reads."""

    eer: float
    tar_at_far: float
    threshold: float
    rank1: float
    genuine_pairs: int
    impostor_pairs: int
    no_face: list[str]
    people: int
    photos: int
    rank1_photos: int
    #: The lowest genuine and highest impostor score: separated when the first is above the second.
    lowest_genuine: float
    highest_impostor: float
    several_faces: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    far: float = FAR
    models: dict[str, str] = field(default_factory=dict)

    @property
    def separated(self) -> bool:
        """Whether every genuine pair scores above every impostor pair (and the threshold between them)."""
        return self.lowest_genuine >= self.threshold > self.highest_impostor

    def as_dict(self) -> dict[str, object]:
        return {
            "eer": self.eer,
            "tar_at_far_1e-3": self.tar_at_far,
            "threshold": self.threshold,
            "rank1": self.rank1,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "no_face": self.no_face,
            "several_faces": self.several_faces,
            "unreadable": self.unreadable,
            "people": self.people,
            "photos": self.photos,
            "rank1_photos": self.rank1_photos,
            "lowest_genuine": self.lowest_genuine,
            "highest_impostor": self.highest_impostor,
            "separated": self.separated,
            "far": self.far,
            "models": self.models,
        }

    def table(self) -> str:
        lines = [
            f"people: {self.people}, photos embedded: {self.photos}",
            f"pairs: {self.genuine_pairs} genuine, {self.impostor_pairs} impostor",
            f"EER: {self.eer:.4f}",
            f"TAR at FAR {self.far:g}: {self.tar_at_far:.4f}",
            f"threshold: {self.threshold:.4f}",
            f"lowest genuine: {self.lowest_genuine:.4f}, highest impostor: {self.highest_impostor:.4f}"
            f" ({'every genuine pair above every impostor pair' if self.separated else 'overlapping'})",
            f"rank-1: {self.rank1:.4f} of {self.rank1_photos} photos",
            f"no face found: {', '.join(self.no_face) or 'none'}",
        ]
        if self.several_faces:
            several = ", ".join(f"{name} ({n})" for name, n in self.several_faces.items())
            lines.append(f"several faces (the largest used): {several}")
        if self.unreadable:
            lines.append(f"not images: {', '.join(self.unreadable)}")
        return "\n".join(lines)


def pair_scores(embeddings: np.ndarray, labels: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """The similarities of every genuine and every impostor pair (each unordered pair once).

    >>> e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> [s.tolist() for s in pair_scores(e, ["a", "a", "b"])]
    [[1.0], [0.0, 0.0]]
    """
    sims = embeddings @ embeddings.T
    lab = np.asarray(labels, dtype=object)
    i, j = np.triu_indices(len(lab), k=1)
    same = lab[i] == lab[j]
    return sims[i[same], j[same]], sims[i[~same], j[~same]]


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The error rate where impostors accepted (score ≥ t) and genuine pairs refused (score < t) are closest.

    >>> equal_error_rate(np.array([0.9, 0.8]), np.array([0.1, 0.2]))
    0.0
    """
    if not len(genuine) or not len(impostor):
        return float("nan")
    g, imp = np.sort(genuine), np.sort(impostor)
    thresholds = np.unique(np.concatenate([g, imp, [np.inf]]))
    far = 1.0 - np.searchsorted(imp, thresholds, side="left") / len(imp)
    frr = np.searchsorted(g, thresholds, side="left") / len(g)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


def _operating_point(impostor: np.ndarray, far: float) -> float:
    """The highest impostor score a threshold must refuse so that at most ``far`` of impostors pass."""
    allowed = int(np.floor(far * len(impostor)))
    return float(np.sort(impostor)[::-1][allowed]) if len(impostor) > allowed else -np.inf


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float = FAR) -> float:
    """The share of genuine pairs scoring above the highest impostor score that ``far`` must refuse.

    >>> tar_at_far(np.array([0.9, 0.5, 0.3]), np.array([0.4, 0.1]))
    0.6666666666666666
    """
    if not len(genuine):
        return float("nan")
    return float(np.mean(genuine > _operating_point(impostor, far)))


def choose_threshold(genuine: np.ndarray, impostor: np.ndarray, far: float = FAR) -> float:
    """The middle of the gap above the operating point of ``far``: between the highest impostor score to
    refuse and the lowest genuine score above it.

    >>> round(choose_threshold(np.array([0.9, 0.7]), np.array([0.1, 0.3])), 6)
    0.5
    """
    refuse = _operating_point(impostor, far)
    above = genuine[genuine > refuse]
    if not np.isfinite(refuse):
        return float(np.min(above)) if len(above) else 0.0
    if not len(above):
        return float(np.nextafter(refuse, np.inf))
    return float((refuse + np.min(above)) / 2)


def rank1(embeddings: np.ndarray, labels: Sequence[object]) -> tuple[int, int]:
    """How many photos (of those whose person has another photo) have a photo of their person as their most
    similar other photo: (right, counted).

    >>> rank1(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), ["a", "a", "b"])
    (2, 2)
    """
    lab = np.asarray(labels, dtype=object)
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    right = counted = 0
    for i in range(len(lab)):
        if int(np.sum(lab == lab[i])) < 2:
            continue
        counted += 1
        right += int(lab[int(np.argmax(sims[i]))] == lab[i])
    return right, counted


def people_photos(folder: Path) -> list[tuple[str, Path]]:
    """(person, photo) for every image file in ``folder``'s subfolders, one subfolder per person."""
    if not folder.is_dir():
        msg = f"{folder} is not a folder; give a folder with one subfolder of photos per person"
        raise DataFileError(msg)
    found = [
        (person.name, photo)
        for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        for photo in sorted(person.iterdir())
        if photo.is_file() and photo.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len({person for person, _ in found}) < 2:
        msg = f"{folder} holds photos of fewer than two people; calibration needs a subfolder per person, 2 or more"
        raise DataFileError(msg)
    return found


def calibrate(embeddings: np.ndarray, labels: Sequence[object], *, far: float = FAR, **listed: object) -> Calibration:
    """The figures of embeddings (L2-normalised rows) of photos of the people ``labels``; ``listed``: the
    photos set aside (``no_face``, ``several_faces``, ``unreadable``) and the ``models`` used."""
    genuine, impostor = pair_scores(embeddings, labels)
    if not len(genuine) or not len(impostor):
        msg = "calibration needs two photos of one person and photos of another, each with a face found"
        raise InvalidInputError(msg)
    right, counted = rank1(embeddings, labels)
    return Calibration(
        eer=equal_error_rate(genuine, impostor),
        tar_at_far=tar_at_far(genuine, impostor, far),
        threshold=choose_threshold(genuine, impostor, far),
        rank1=right / counted if counted else float("nan"),
        genuine_pairs=len(genuine),
        impostor_pairs=len(impostor),
        people=len(set(labels)),
        photos=len(labels),
        rank1_photos=counted,
        lowest_genuine=float(genuine.min()),
        highest_impostor=float(impostor.max()),
        far=far,
        **listed,  # type: ignore[arg-type]
    )


def calibrate_folder(
    folder: str | os.PathLike[str], pipeline: FacePipeline, *, far: float = FAR, models: dict[str, str] | None = None
) -> Calibration:
    """Embed every photo of ``folder`` (one subfolder per person) with ``pipeline`` and :func:`calibrate`."""
    root = Path(folder)
    labels, vectors = [], []
    no_face: list[str] = []
    several: dict[str, int] = {}
    unreadable: list[str] = []
    for person, photo in people_photos(root):
        name = f"{person}/{photo.name}"
        try:
            image = decode_image(photo.read_bytes(), field=name)
        except (InvalidInputError, OSError):
            unreadable.append(name)
            continue
        faces = pipeline.detect(image)
        if not len(faces):
            no_face.append(name)
            continue
        if len(faces) > 1:
            several[name] = len(faces)
        labels.append(person)
        vectors.append(pipeline.embed_face(image, faces, faces.largest()))
    embeddings = np.stack(vectors) if vectors else np.zeros((0, pipeline.dim), dtype=np.float32)
    return calibrate(
        embeddings,
        labels,
        far=far,
        no_face=no_face,
        several_faces=several,
        unreadable=unreadable,
        models=dict(models or {}),
    )
