"""MRZ reading on degraded synthetic pages, and on the specimen documents a person can compare with.

Generates ``--count`` pages of the five types (:func:`engine.documents.generate.write_documents`: blur, noise,
a rotation of up to 4 degrees, JPEG loss) into a temporary folder and reads each as ``finscore doc verify`` does.
A page counts as read when the zone was accepted and its lines are the truth; a misread accepted is a zone
accepted whose lines are not (the figure that must be 0). Then every image of ``../shared/data/faces/mrz-specimens``
(when present; read in place, never copied) is read and printed: lines, type, fields and checks.

    python -m bench.mrz [--count 50] [--seed 42] [--specimens DIR] [--today YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections import Counter
from pathlib import Path

from engine.documents.generate import write_documents
from engine.documents.ocr import read_mrz
from engine.documents.verify import load_gray, verify_document

DEFAULT_SPECIMENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "mrz-specimens"
_IMAGES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}


def synthetic(count: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="finscore-mrz-") as folder:
        pages = write_documents(Path(folder), count, seed=seed)
        read, misread, unconfirmed, ambiguous, attempts = Counter[str](), Counter[str](), 0, 0, 0
        started = time.perf_counter()
        for page in pages:
            result = read_mrz(load_gray(Path(folder) / page.file))
            attempts += result.attempts
            if result.accepted and result.mrz is not None:
                if result.mrz.lines == page.mrz_lines:
                    read[page.document_type] += 1
                else:
                    misread[page.document_type] += 1
                    print(f"MISREAD ACCEPTED {page.file}: {result.mrz.lines} for {page.mrz_lines}")
            elif result.mrz is not None and result.mrz.valid and not result.ambiguous:
                unconfirmed += 1
            elif result.ambiguous:
                ambiguous += 1
        elapsed = time.perf_counter() - started
    types = Counter(p.document_type for p in pages)
    print(f"degraded synthetic pages: {count} (seed {seed})")
    print(f"  read with valid check digits: {sum(read.values())} of {count} ({sum(read.values()) / count:.0%})")
    print("  by type: " + ", ".join(f"{t} {read[t]}/{n}" for t, n in types.items()))
    print(f"  misreads accepted as valid: {sum(misread.values())}")
    print(f"  checks held but two reads disagreed (refused): {unconfirmed}")
    print(f"  checks held but a visa's optional data holds O or 0 (refused): {ambiguous}")
    print(f"  time per page: {elapsed / count:.2f} s ({attempts / count:.1f} tesseract reads a page)")


def specimens(folder: Path, today: dt.date) -> None:
    if not folder.is_dir():
        print(f"specimens: {folder} not present, skipped")
        return
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGES):
        r = verify_document(path, today=today)
        state = "valid" if r.valid else f"NOT VALID ({r.reason})"
        print(f"\n{path.name}: {r.document_type or 'no MRZ'}, {state}")
        for line in r.mrz_lines:
            print(f"  {line}")
        for name, value in r.fields.items():
            print(f"  {name:<16}{value if value is not None else '-'}")
        if r.checks:
            print("  checks: " + ", ".join(f"{n} {'ok' if ok else 'FAILED'}" for n, ok in r.checks.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mrz", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="synthetic pages (default 50)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--specimens", type=Path, default=DEFAULT_SPECIMENS, help="folder of specimen images")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today(), help="YYYY-MM-DD")
    args = parser.parse_args(argv)
    if args.count > 0:
        synthetic(args.count, args.seed)
    specimens(args.specimens, args.today)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
