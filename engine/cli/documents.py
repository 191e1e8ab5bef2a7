"""``finscore doc verify``: the machine readable zone of identity documents read and checked (ICAO 9303).

The work is :func:`engine.documents.verify.verify_document`'s. Every file named is first opened as an image, so a
file that is none stops the command (exit 1, one sentence naming it) before any page is read or recorded. Each
page read is a decision about a person: one ``decision`` line in the audit log, the document number's pseudonym
its subject (none when no zone could be read), with the type, valid or not and the failed checks; never a name,
a number or the image. With ``--selfie`` each page's photo is also matched against the holder's photo (the face
models in this process, at the newest ``face_verify`` version's calibrated threshold); a mismatch, or a page with no
photo, makes the exit status 3 as an invalid zone does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import Subparsers, add_repo
from engine.settings import resolve_settings

if TYPE_CHECKING:
    from engine.documents.selfie import SelfieCheck
    from engine.documents.verify import DocumentCheck

__all__ = ["add_parsers", "doc_verify_command"]

#: The exit code when some page is not valid (0: all valid; 1: an error, such as a file that is no image).
NOT_VALID = 3


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        msg = f"expected a date YYYY-MM-DD, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def add_parsers(sub: Subparsers) -> None:
    doc = sub.add_parser("doc", help="identity documents: the machine readable zone read and checked")
    commands = doc.add_subparsers(dest="doc_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "verify",
        help="read the MRZ (TD1, TD2, TD3, MRV-A, MRV-B) of page images and check every ICAO 9303 check digit",
        description=(
            "Find and read the machine readable zone of each image, check every ICAO 9303 check digit, parse the "
            "fields and say whether the document has expired. Exit status: 0 when every image is valid, "
            f"{NOT_VALID} when one is not (no zone read, or a check that does not hold), 1 on an error such as a "
            "file that is not an image."
        ),
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="page images (JPEG, PNG, TIFF, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")
    p.add_argument(
        "--today", type=_date, metavar="YYYY-MM-DD", help="the date expiry is judged against (default: today)"
    )
    p.add_argument(
        "--selfie",
        type=Path,
        metavar="IMAGE",
        help="a photo of the holder, matched against the document's photo (the newest face_verify version's "
        "threshold; a mismatch exits as not valid)",
    )
    add_repo(p)
    p.set_defaults(func=doc_verify_command)


def doc_verify_command(args: argparse.Namespace) -> int:
    from engine.documents.ocr import tessdata_dir, tesseract_path
    from engine.documents.verify import load_gray, verify_document
    from engine.security.trail import Trail, new_run_id

    today = args.today or dt.date.today()
    tesseract_path(), tessdata_dir()  # a missing reader fails before anything else
    for path in args.images:
        load_gray(path)  # every file an image before any page is read or recorded
    selfie = None
    if args.selfie is not None:
        from engine.documents.selfie import SelfieMatcher
        from engine.serving.repository import ModelRepository

        selfie = SelfieMatcher.load(args.selfie, ModelRepository(resolve_settings(repo=args.repo).repo))
    trail = Trail.from_env()
    run = new_run_id()
    results: list[DocumentCheck] = []
    matched: list[bool] = []
    for row, path in enumerate(args.images):
        result = verify_document(path, today=today)
        face = selfie.check(path) if selfie is not None else None
        trail.event(
            "decision",
            command="doc verify",
            model="documents",
            version="mrz",
            request_id=f"{run}/{row}",
            subject=trail.subject(result.number),
            decision="valid" if result.valid else "not_valid" if result.mrz_lines else "unreadable",
            document_type=result.document_type,
            expired=result.expired,
            failed=",".join(name for name, ok in result.checks.items() if not ok) or None,
            **({} if face is None else {"selfie_match": face.match}),
        )
        if args.json:
            print(json.dumps(result.to_json() | ({} if face is None else {"selfie": face.to_json()})))
        else:
            print(_block(result) + ("" if face is None else "\n" + _selfie_line(face)))
        results.append(result)
        matched.append(face is None or face.match)
    return 0 if all(r.valid for r in results) and all(matched) else NOT_VALID


def _selfie_line(face: SelfieCheck) -> str:
    similarity = "-" if face.similarity is None else f"{face.similarity:.3f}"
    verdict = "match" if face.match else f"NO MATCH ({face.reason})"
    return f"  selfie: {verdict}; similarity {similarity}, threshold {face.threshold:.3f}"


def _block(r: DocumentCheck) -> str:
    state = "valid" if r.valid else "NOT VALID"
    expired = {True: ", EXPIRED", False: ", not expired", None: ""}[r.expired]
    lines = [f"{r.image}: {r.document_type or 'no MRZ'}, {state}{expired}"]
    if r.reason:
        lines.append(f"  reason: {r.reason}")
    for i, line in enumerate(r.mrz_lines):
        lines.append(f"  {'mrz' if i == 0 else '':<8}{line}")
    for name, value in r.fields.items():
        lines.append(f"  {name.replace('_', ' '):<15} {value if value is not None else '-'}")
    if r.checks:
        lines.append("  checks: " + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in r.checks.items()))
    return "\n".join(lines)
