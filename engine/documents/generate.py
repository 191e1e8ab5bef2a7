"""Synthetic identity-document pages with a known machine readable zone, degraded as a phone or a cheap scanner
degrades them: the tests' and the benchmark's ground truth.

A page is a card (TD1, ID-1 size), a TD2/MRV-B card or a passport/visa page (TD3, MRV-A) drawn with Pillow: a
header, a few printed fields, a grey photo box, and the zone in OCR-B (Debian's ``fonts-ocr-b``) at the 2.54 mm
character pitch and 6 lines per inch of Doc 9303. It is set on a slightly grey background a little larger, then
rotated by up to ``max_rotation`` degrees, blurred, given Gaussian noise and saved as a low-quality JPEG. Nothing
about any real person: names are drawn from short invented lists, numbers at random.
"""

from __future__ import annotations

import io
import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from engine.documents.mrz import LAYOUTS, MrzFields, compose
from engine.errors import NotFoundError

__all__ = ["FONT_PATHS", "Degradation", "SyntheticDocument", "random_fields", "render_page", "write_documents"]

#: Where Debian's ``fonts-ocr-b`` puts the MRZ font.
FONT_PATHS = (Path("/usr/share/fonts/opentype/ocr-b/OCRB.otf"), Path("/usr/share/fonts/truetype/ocr-b/OCRB.ttf"))
_LABEL_FONTS = (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),)
_SURNAMES: tuple[str, ...] = ("ERIKSSON", "MARTIN", "NGUYEN", "OKAFOR", "SILVA", "KOWALSKA", "DUBOIS", "MUELLER")
_SURNAMES += ("TANAKA", "ROSSI", "VAN DER BERG", "GARCIA LOPEZ", "OBRIEN", "HAMALAINEN", "PETROV", "ADEYEMI")
_SURNAMES += ("LINDQVIST", "MORENO")
_GIVEN = ("ANNA", "MARIA", "JOHN", "LUCA", "AMARA", "KENJI", "SOFIA", "MATEO", "ELIF", "OLIVER", "NOOR", "PIOTR")
_STATES = ("UTO", "D<<", "FRA", "NLD", "GBR", "ITA", "ESP", "SWE", "POL", "CAN", "AUS", "JPN", "NGA", "BRA")
_CODES = {"TD1": ("ID", "I<", "IR", "AC"), "TD2": ("ID", "I<", "C<"), "TD3": ("P<", "PD", "PO")}
_CODES |= {"MRV-A": ("V<", "VI"), "MRV-B": ("V<", "VT")}
#: Page size in millimetres: ID-1 cards for TD1, ID-2 for TD2 and MRV-B, a passport page for TD3 and MRV-A.
_PAGE_MM = {"TD1": (85.6, 54.0), "TD2": (105.0, 74.0), "TD3": (125.0, 88.0), "MRV-A": (125.0, 88.0)}
_PAGE_MM["MRV-B"] = _PAGE_MM["TD2"]


@dataclass(frozen=True)
class Degradation:
    """How a page is spoiled; :meth:`draw` picks one at random within the ranges the benchmark reports."""

    rotation: float  # degrees, counter-clockwise
    blur: float  # Gaussian radius in pixels
    noise: float  # standard deviation of the added noise, in grey levels
    jpeg_quality: int
    pitch: float  # MRZ character pitch in pixels (the resolution of the "scan")

    @classmethod
    def draw(cls, rng: random.Random, *, max_rotation: float = 4.0) -> Degradation:
        return cls(
            rotation=rng.uniform(-max_rotation, max_rotation),
            blur=rng.uniform(0.4, 1.3),
            noise=rng.uniform(3.0, 12.0),
            jpeg_quality=rng.randint(30, 75),
            pitch=rng.uniform(18.0, 28.0),
        )


@dataclass(frozen=True)
class SyntheticDocument:
    """One written page: its file name, type, the zone's lines and the degradation it went through."""

    file: str
    document_type: str
    mrz_lines: tuple[str, ...]
    degradation: Degradation


def _font_path(paths: tuple[Path, ...], package: str) -> Path:
    for path in paths:
        if path.is_file():
            return path
    msg = f"the font {paths[0].name} is missing: install Debian's {package} (apt-get install {package})"
    raise NotFoundError(msg)


def _yymmdd(rng: random.Random, first: int, last: int) -> str:
    return f"{rng.randint(first, last) % 100:02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def random_fields(document_type: str, rng: random.Random) -> MrzFields:
    """Invented fields for a zone of ``document_type``; TD1 and TD2 sometimes get a number longer than 9."""
    alnum = string.ascii_uppercase + string.digits
    long_number = document_type in ("TD1", "TD2") and rng.random() < 0.2
    number = "".join(rng.choice(alnum) for _ in range(rng.randint(10, 12) if long_number else rng.randint(6, 9)))
    personal = "".join(rng.choice(alnum) for _ in range(rng.randint(0, 12))) if rng.random() < 0.6 else ""
    optional, optional_2 = personal, ""
    if document_type == "TD1":
        optional, optional_2 = personal[:5], "".join(rng.choice(alnum) for _ in range(rng.randint(0, 6)))
    elif document_type == "TD2" and long_number:
        optional = ""
    state = rng.choice(_STATES)
    return MrzFields(
        document_code=rng.choice(_CODES[document_type]),
        issuing_state=state,
        surname=rng.choice(_SURNAMES),
        given_names=" ".join(rng.sample(_GIVEN, rng.randint(1, 2))),
        number=number,
        nationality=state if rng.random() < 0.8 else rng.choice(_STATES),
        birth=_yymmdd(rng, 1940, 2008),
        sex=rng.choice("MFMF<X"),
        expiry=_yymmdd(rng, 2015, 2036),
        optional=optional,
        optional_2=optional_2,
    )


def render_page(
    lines: tuple[str, ...],
    document_type: str,
    rng: random.Random,
    how: Degradation,
    *,
    portrait: Image.Image | None = None,
) -> bytes:
    """The page of a zone as JPEG bytes: drawn sharp at ``how.pitch`` pixels a character, then degraded as ``how``
    says (the JPEG's quality is part of the degradation). ``portrait``: the holder's photo, put in the photo's box
    (else a grey silhouette)."""
    px_mm = how.pitch / 2.54
    w_mm, h_mm = _PAGE_MM[document_type]
    width, height = round(w_mm * px_mm), round(h_mm * px_mm)
    page = Image.new("L", (width, height), rng.randint(225, 250))
    draw = ImageDraw.Draw(page)
    mrz_font = ImageFont.truetype(str(_font_path(FONT_PATHS, "fonts-ocr-b")), 10)
    # Size the OCR-B font so one character advances exactly one pitch.
    size = 10 * how.pitch / mrz_font.getlength("<")
    mrz_font = ImageFont.truetype(str(_font_path(FONT_PATHS, "fonts-ocr-b")), round(size))
    label_font = ImageFont.truetype(str(_font_path(_LABEL_FONTS, "fonts-dejavu-core")), round(2.2 * px_mm))
    margin = round(4 * px_mm)
    draw.text((margin, margin), "UTOPIA  REPUBLIC  ·  SPECIMEN", fill=60, font=label_font)
    photo = (margin, round(12 * px_mm), margin + round(w_mm * 0.25 * px_mm), round(12 * px_mm + h_mm * 0.45 * px_mm))
    draw.rectangle(photo, fill=rng.randint(150, 200))
    cx, cy = (photo[0] + photo[2]) // 2, (photo[1] + photo[3]) // 2
    rx, ry = (photo[2] - photo[0]) // 4, (photo[3] - photo[1]) // 3
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=rng.randint(100, 140))
    if portrait is not None:
        box = (photo[2] - photo[0], photo[3] - photo[1])
        page.paste(ImageOps.fit(portrait.convert("L"), box, Image.Resampling.LANCZOS), photo[:2])
    x = photo[2] + margin
    for i, label in enumerate(("Surname", "Given names", "Nationality", "Date of birth", "Date of expiry")):
        y = photo[1] + i * round(3.8 * px_mm)
        if y > height * 0.55:
            break
        draw.text((x, y), f"{label}: {rng.choice(_SURNAMES).title()}", fill=70, font=label_font)
    line_pitch = 25.4 / 6 * px_mm
    top = height - round(5 * px_mm) - line_pitch * len(lines)
    left = (width - how.pitch * LAYOUTS[document_type].width) / 2
    for i, line in enumerate(lines):
        draw.text((left, top + i * line_pitch), line, fill=rng.randint(10, 40), font=mrz_font)
    # The page on a background a little larger, as a scan or a photo of it.
    pad = round(6 * px_mm)
    canvas = Image.new("L", (width + 2 * pad, height + 2 * pad), rng.randint(170, 215))
    canvas.paste(page, (pad, pad))
    canvas = canvas.rotate(how.rotation, resample=Image.Resampling.BICUBIC, fillcolor=canvas.getpixel((0, 0)))
    canvas = canvas.filter(ImageFilter.GaussianBlur(how.blur))
    noisy = np.asarray(canvas, dtype=np.float32) + np.random.default_rng(rng.getrandbits(32)).normal(
        0.0, how.noise, (canvas.height, canvas.width)
    )
    canvas = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=how.jpeg_quality)
    return buffer.getvalue()


def write_documents(
    out: Path,
    count: int,
    *,
    seed: int = 7,
    types: tuple[str, ...] = tuple(LAYOUTS),
    max_rotation: float = 4.0,
    portrait: Path | None = None,
) -> list[SyntheticDocument]:
    """Write ``count`` degraded pages (the ``types`` in turn) as ``doc-NNNN-<type>.jpg`` to ``out``, and
    ``truth.json``: per file its type, the zone's lines and the degradation. ``portrait``: a photo to print on every
    page as the holder's."""
    face = Image.open(portrait) if portrait is not None else None
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        document_type = types[i % len(types)]
        lines = compose(document_type, random_fields(document_type, rng))
        how = Degradation.draw(rng, max_rotation=max_rotation)
        name = f"doc-{i:04d}-{document_type.lower()}.jpg"
        page = render_page(lines, document_type, rng, how, portrait=face)
        (out / name).write_bytes(page)
        written.append(SyntheticDocument(name, document_type, lines, how))
    truth = {d.file: {**asdict(d), "mrz_lines": list(d.mrz_lines)} for d in written}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return written
