"""``make run``'s identity part: the face models from the Apache-2.0 pack → one verification over gRPC (two
photos of one person), a refused photo, an identification among 10,000 enrolled people, and an identity document's
machine readable zone checked with the selfie matched against its photo.

The one face photo is Grace Hopper's official U.S. Navy portrait (public domain), as matplotlib ships it: the
project ships no face photo of its own. The second photo of her is a mirrored crop of it; the 9,999 other people in
the gallery are random embeddings, five each (a gallery of real faces needs real photos). The threshold is the
pack's published one: `finscore face calibrate` on a bank's own photos gives the served one.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.cli.common import text_table
from engine.documents.generate import write_documents
from engine.documents.ocr import tessdata_dir, tesseract_path
from engine.errors import NotFoundError
from engine.families.face import train_face
from engine.families.face.embedding import embed_images, load_pipeline
from engine.families.face.gallery import Gallery
from engine.serving.repository import ModelRepository

__all__ = ["IdentityDemo", "identity_demo", "train_identity"]

#: People enrolled besides the portrait's, with this many random faces each.
OTHERS, FACES_EACH = 9_999, 5
CUSTOMER = "C-0000001"


@dataclass(frozen=True)
class IdentityDemo:
    portrait: Path
    selfie: Path
    #: The generated document page, or why there is none (tesseract or the OCR-B font missing: `make run` installs
    #: them where it may run apt-get).
    page: Path | str
    gallery: Path
    threshold: float


def _portrait() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def train_identity(workdir: Path, repository: ModelRepository) -> IdentityDemo:
    """The face models, a selfie, a document page with her photo and a gallery of 10,000 people."""
    folder = workdir / "identity"
    folder.mkdir(parents=True, exist_ok=True)
    face = train_face(repo=repository)
    print(
        f"   wrote face_detect, face_embed and face_verify version {face.version} from the {face.pack} pack "
        f"({face.licence}); threshold {face.metrics.threshold:.3f}, the pack's published one"
    )
    portrait = _portrait()
    selfie = folder / "selfie.jpg"
    Image.open(portrait).transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((40, 30, 480, 560)).save(selfie)
    try:
        tesseract_path(), tessdata_dir()
        written = write_documents(folder / "documents", 1, seed=21, types=("TD3",), portrait=portrait)[0]
        page: Path | str = folder / "documents" / written.file
    except NotFoundError as exc:
        page = str(exc)

    pipeline = load_pipeline(repo=repository)
    vectors, _ = embed_images([portrait], model=pipeline)
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(OTHERS, pipeline.dim)).astype(np.float32)
    others = np.repeat(centres, FACES_EACH, axis=0) + 0.4 * rng.normal(size=(OTHERS * FACES_EACH, pipeline.dim))
    gallery = Gallery(pipeline.dim)
    gallery.enroll_many([f"G-{i:07d}" for i in range(OTHERS) for _ in range(FACES_EACH)], others.astype(np.float32))
    gallery.enroll(CUSTOMER, vectors)
    gallery.build()
    path = gallery.save(folder / "gallery")
    return IdentityDemo(portrait, selfie, page, path.parent, face.metrics.threshold)


def identity_demo(url: str, demo: IdentityDemo, repository: ModelRepository, *, step: int) -> None:
    """A verification and a refusal over gRPC, an identification in this process, a document check."""
    from clients import ModelClient
    from engine.documents.selfie import SelfieMatcher
    from engine.documents.verify import verify_document
    from engine.errors import FinscoreError

    pair = {
        "image_a": np.array([[demo.portrait.read_bytes()]], dtype=object),
        "image_b": np.array([[demo.selfie.read_bytes()]], dtype=object),
    }
    grey = io.BytesIO()
    Image.new("L", (320, 320), 128).save(grey, "PNG")
    with ModelClient(url, "face_verify", features=False) as client:
        client.infer_arrays(pair)  # the first request warms the graphs up; the second is timed
        started = time.perf_counter()
        out = client.infer_arrays(pair)
        ms = (time.perf_counter() - started) * 1000
        try:
            client.infer_arrays(pair | {"image_b": np.array([[grey.getvalue()]], dtype=object)})
            refused = "answered (unexpected)"
        except FinscoreError as exc:
            refused = f"refused: {exc}"
    similarity, match = float(out["similarity"].reshape(-1)[0]), bool(out["match"].reshape(-1)[0])
    print(
        f"\n{step}. verified a selfie (a mirrored crop of the portrait) against the portrait over gRPC (face_verify: "
        "detect, align, two embeddings):"
    )
    verdict = "match" if match else "NO MATCH"
    print(f"   similarity {similarity:.3f}, threshold {demo.threshold:.3f}: {verdict} ({ms:.0f} ms)")
    print(f"   a photo with no face: {refused}")

    gallery = Gallery.load(demo.gallery)
    (vector,), _ = embed_images([demo.selfie], model=load_pipeline(repo=repository))
    started = time.perf_counter()
    found = gallery.identify(vector, k=3)
    ms = (time.perf_counter() - started) * 1000
    print(
        f"\n{step + 1}. identified the selfie among {gallery.persons:,} enrolled people ({len(gallery):,} faces, "
        f"{gallery.index_kind} index; {ms:.1f} ms after embedding):\n"
    )
    rows = [(rank, person, f"{score:.3f}") for rank, (person, score) in enumerate(found, 1)]
    print(text_table(rows, ("rank", "person", "score")))

    if isinstance(demo.page, str):
        print(f"\n{step + 2}. the identity-document check is skipped: {demo.page}")
        return
    check = verify_document(demo.page, today=dt.date.today())
    face = SelfieMatcher.load(demo.selfie, repository).check(demo.page)
    print(f"\n{step + 2}. checked a generated, degraded {check.document_type or 'identity'} page ({demo.page.name}):")
    print(
        f"   {'valid' if check.valid else 'NOT VALID'}: "
        + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in check.checks.items())
    )
    matches = "matches" if face.match else "does NOT match"
    expired = "expired" if check.expired else "not expired"
    print(f"   {expired}; the selfie {matches} its photo (similarity {face.similarity})")
