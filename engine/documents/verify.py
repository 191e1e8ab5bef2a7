"""The whole check of one page image: opened as an image, its zone found and read, every check digit, expiry.

:func:`verify_document` returns a :class:`DocumentCheck` for a page it could open, valid or not (``reason`` says
in one sentence why not); a file that is no image raises :class:`~engine.errors.InvalidInputError`. Nothing is
written anywhere: the caller records the decision (the CLI, under a pseudonym of the document number).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.documents.mrz import Mrz, birth_date, expiry_date
from engine.documents.ocr import read_mrz
from engine.errors import InvalidInputError

__all__ = ["CHECK_NAMES", "DocumentCheck", "load_gray", "verify_document"]

#: How each check and format error is named in a sentence.
CHECK_NAMES = {
    "number": "the document number's check digit",
    "birth": "the birth date's check digit",
    "expiry": "the expiry date's check digit",
    "personal_number": "the personal number's check digit",
    "composite": "the composite check digit",
}
_UNCONFIRMED = "every check digit holds but no two reads agreed on the characters no check digit covers (the names)"
_AMBIGUOUS = (
    "every check digit holds but the visa's optional data holds an O or a 0, which no check digit covers and the "
    "reader cannot tell apart"
)
#: Pages larger than this many pixels are refused: a decompression bomb, or no identity document.
MAX_PIXELS = 60_000_000


@dataclass(frozen=True)
class DocumentCheck:
    """The outcome for one image; ``fields`` and ``checks`` are empty when no zone was read."""

    image: str
    mrz_lines: list[str]
    document_type: str | None
    fields: dict[str, str | None]
    checks: dict[str, bool]
    valid: bool
    expired: bool | None
    reason: str | None = None  # one sentence when not valid
    format_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @property
    def number(self) -> str | None:
        """The document number read (for the audit log's pseudonym; never print or log it)."""
        return self.fields.get("number") if self.mrz_lines else None


def load_gray(path: Path) -> np.ndarray:
    """The image at ``path`` in grey levels, turned as its EXIF orientation says; one sentence when it is none."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                msg = f"{path}: {image.width} x {image.height} pixels is more than the {MAX_PIXELS:,} a page may have"
                raise InvalidInputError(msg)
            image.load()
            gray = ImageOps.exif_transpose(image).convert("L")
    except FileNotFoundError:
        msg = f"{path}: no such file"
        raise InvalidInputError(msg) from None
    except IsADirectoryError:
        msg = f"{path}: is a folder, not an image"
        raise InvalidInputError(msg) from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        msg = f"{path}: not an image finscore can read (JPEG, PNG, TIFF, WebP, ...)"
        raise InvalidInputError(msg) from None
    return np.asarray(gray)


def _fields(mrz: Mrz, today: dt.date) -> dict[str, str | None]:
    f = mrz.fields
    birth, expiry = birth_date(f.birth, today), expiry_date(f.expiry, today)
    return {
        "document_code": f.document_code.rstrip("<"),
        "issuing_state": f.issuing_state.rstrip("<"),
        "surname": f.surname,
        "given_names": f.given_names,
        "number": f.number,
        "nationality": f.nationality.rstrip("<"),
        "birth_date": birth.isoformat() if birth else None,
        "sex": {"<": None}.get(f.sex, f.sex),
        "expiry_date": expiry.isoformat() if expiry else None,
        "optional_data": f.optional or None,
        **({"optional_data_2": f.optional_2 or None} if mrz.document_type == "TD1" else {}),
    }


def _reason(mrz: Mrz) -> str:
    failed = [CHECK_NAMES[name] for name, ok in mrz.checks.items() if not ok]
    if failed:
        return f"the zone was read but {_join(failed)} {'does' if len(failed) == 1 else 'do'} not hold"
    return f"the zone was read but its {_join(mrz.format_errors)} cannot be what is written"


def _join(items: list[str] | tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verify_document(path: Path, *, today: dt.date) -> DocumentCheck:
    """Read and check the zone of the page at ``path``; ``today`` decides whether it has expired."""
    read = read_mrz(load_gray(path))
    mrz = read.mrz
    if mrz is None:
        where = "" if read.found_band else " (no band of machine-readable text on the page)"
        reason = f"no machine readable zone could be read{where}"
        return DocumentCheck(str(path), [], None, {}, {}, valid=False, expired=None, reason=reason)
    return DocumentCheck(
        image=str(path),
        mrz_lines=list(mrz.lines),
        document_type=mrz.document_type,
        fields=_fields(mrz, today),
        checks=dict(mrz.checks),
        valid=read.accepted,
        expired=mrz.expired(today),
        reason=None
        if read.accepted
        else _reason(mrz)
        if not mrz.valid
        else _AMBIGUOUS
        if read.ambiguous
        else _UNCONFIRMED,
        format_errors=list(mrz.format_errors),
    )
