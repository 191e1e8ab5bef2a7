"""Identity documents: MRZ read off generated degraded pages with tesseract, and ``finscore doc verify``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.documents.generate import SyntheticDocument, write_documents
from engine.documents.mrz import parse
from engine.documents.ocr import ENV_TESSDATA, MrzRead, mrz_lines, read_mrz, tessdata_dir
from engine.documents.verify import load_gray
from engine.errors import NotFoundError
from engine.families.face import FaceTrainResult
from tests.conftest import debian_tool

REQUIRE = "FINSCORE_REQUIRE_TESSERACT"


@pytest.fixture(scope="module")
def reader() -> None:
    """tesseract and mrz.traineddata (``make test`` installs both); skipped without, a failure with
    FINSCORE_REQUIRE_TESSERACT=1."""
    debian_tool("tesseract", require=REQUIRE)
    try:
        tessdata_dir()
    except NotFoundError as exc:
        _missing(str(exc))


def _missing(reason: str) -> None:
    if os.environ.get(REQUIRE, "").lower() in {"1", "true", "yes"}:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticDocument]]:
    """Two degraded pages of each of the five types (drawn in Debian's fonts-ocr-b, which make test installs)."""
    folder = tmp_path_factory.mktemp("documents")
    try:
        return folder, write_documents(folder, 10, seed=5)
    except NotFoundError as exc:
        _missing(str(exc))
        raise


def test_generated_pages_and_their_truth(pages: tuple[Path, list[SyntheticDocument]]) -> None:
    folder, written = pages
    truth = json.loads((folder / "truth.json").read_text())
    assert sorted(truth) == sorted(d.file for d in written)
    assert {d.document_type for d in written} == {"TD1", "TD2", "TD3", "MRV-A", "MRV-B"}
    for d in written:
        assert truth[d.file]["mrz_lines"] == list(d.mrz_lines)
        with Image.open(folder / d.file) as image:
            assert image.format == "JPEG"


@pytest.mark.usefixtures("reader")
def test_degraded_pages_are_read_and_no_misread_is_accepted(pages: tuple[Path, list[SyntheticDocument]]) -> None:
    folder, written = pages
    right: dict[str, int] = {}
    for d in written:
        read = read_mrz(load_gray(folder / d.file))
        if read.accepted:
            assert read.mrz is not None and read.mrz.lines == d.mrz_lines, d.file
            right[d.document_type] = right.get(d.document_type, 0) + 1
    assert sum(right.values()) >= 8, right
    assert set(right) == {"TD1", "TD2", "TD3", "MRV-A", "MRV-B"}


def test_lines_fitted_from_tesseract_output() -> None:
    text = "noise\nP<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10\n"
    fitted = mrz_lines(text)
    assert fitted[0] == ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10")
    stray = mrz_lines(
        "LI<UTOD231458907<<<<<<<<<<<<<<<0\n7408122F1204159UTO<<<<<<<<<<<6\nERIKSSON<<ANNA<MARIA<<<<<<<<<<"
    )
    assert ("I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6") in [w[:2] for w in stray]
    assert mrz_lines("just a line of text") == []


def test_an_o_or_0_in_a_visas_optional_data_is_never_accepted() -> None:
    """No check digit covers a visa's optional data and the reader tells O from 0 no better than chance."""
    visa = ("V<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L8988901C4XXX4009078F96121096ZE184226B<<<<<<")
    assert MrzRead(parse(visa), True, 2, True).accepted
    with_zero = (visa[0], visa[1][:30] + "0" + visa[1][31:])
    read = MrzRead(parse(with_zero), True, 2, True)
    assert read.mrz is not None and read.mrz.valid and read.ambiguous and not read.accepted
    passport = ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10")
    assert MrzRead(parse(passport), True, 2, True).accepted  # its 0s are under the composite digit


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("reader")
def test_doc_verify_json_exit_codes_and_audit(
    pages: tuple[Path, list[SyntheticDocument]], audit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, written = pages
    td3 = next(d for d in written if d.document_type == "TD3")
    code, out, _ = _run(capsys, "doc", "verify", "--json", "--today", "2000-01-01", str(folder / td3.file))
    assert code == 0
    result = json.loads(out)
    assert {"mrz_lines", "document_type", "fields", "checks", "valid"} <= set(result)
    assert result["mrz_lines"] == list(td3.mrz_lines) and result["document_type"] == "TD3"
    assert result["valid"] is True and all(result["checks"].values()) and len(result["checks"]) == 5
    assert result["expired"] is False

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((400, 600), 235, np.uint8)).save(blank)
    code, out, _ = _run(capsys, "doc", "verify", str(folder / td3.file), str(blank))
    assert code == 3
    assert "TD3, valid" in out and "blank.png: no MRZ, NOT VALID" in out

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert [d["decision"] for d in decisions] == ["valid", "valid", "unreadable"]
    assert decisions[0]["subject"] == decisions[1]["subject"] and decisions[2]["subject"] is None
    raw = audit.read_text()
    number = result["fields"]["number"]
    assert number not in raw and result["fields"]["surname"] not in raw and "blank.png" not in raw


@pytest.mark.usefixtures("reader")
def test_a_file_that_is_no_image_is_one_sentence_and_nothing_stored(
    pages: tuple[Path, list[SyntheticDocument]], audit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, written = pages
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture\n")
    code, out, err = _run(capsys, "doc", "verify", str(folder / written[0].file), str(notes))
    assert code == 1 and out == ""
    assert err.startswith("Error: ") and "notes.jpg" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not audit.exists() or "decision" not in audit.read_text()


def test_a_missing_reader_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "page.png"
    Image.fromarray(np.full((100, 100), 200, np.uint8)).save(page)
    monkeypatch.setenv(ENV_TESSDATA, str(tmp_path))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    code, _, err = _run(capsys, "doc", "verify", str(page))
    if code == 1 and "tesseract is not installed" in err:
        return  # no tesseract here: that sentence comes first
    assert code == 1 and "mrz.traineddata is missing" in err and ENV_TESSDATA in err and err.count("\n") == 1
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = _run(capsys, "doc", "verify", str(page))
    assert code == 1 and err.startswith("Error: tesseract is not installed") and err.count("\n") == 1


def test_demo_data_documents(
    pages: tuple[Path, list[SyntheticDocument]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "demo-data", "documents", "--out", str(tmp_path), "--count", "5", "--seed", "1")
    assert code == 0 and "5 document pages" in out
    assert len(list(tmp_path.glob("doc-*.jpg"))) == 5
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert {t["document_type"] for t in truth.values()} == {"TD1", "TD2", "TD3", "MRV-A", "MRV-B"}


@pytest.mark.usefixtures("reader")
def test_a_selfie_is_matched_against_the_documents_photo(
    face_trained: FaceTrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The public-domain portrait matplotlib ships printed on a page: a mirrored crop of it as the selfie matches;
    a page without a photo does not (exit 3); a selfie without a face stops the command in one sentence."""
    from matplotlib import cbook

    portrait = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    with_photo = write_documents(tmp_path / "with", 1, seed=11, types=("TD3",), portrait=portrait)[0]
    without = write_documents(tmp_path / "without", 1, seed=11, types=("TD3",))[0]
    selfie = tmp_path / "selfie.jpg"
    Image.open(portrait).transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((40, 30, 480, 560)).save(selfie)
    repo = str(face_trained.path.parents[1])
    argv = ["doc", "verify", "--json", "--today", "2000-01-01", "--selfie", str(selfie), "--repo", repo]

    code, out, _ = _run(capsys, *argv, str(tmp_path / "with" / with_photo.file))
    answer = json.loads(out)["selfie"]
    assert answer["match"] is True and answer["similarity"] >= answer["threshold"]
    assert code == (0 if json.loads(out)["valid"] else 3)

    code, out, _ = _run(capsys, *argv, str(tmp_path / "without" / without.file))
    answer = json.loads(out)["selfie"]
    assert code == 3 and answer["match"] is False and answer["reason"] == "no photo of a face was found on the document"

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((300, 300), 128, np.uint8)).save(grey)
    argv[argv.index(str(selfie))] = str(grey)
    code, out, err = _run(capsys, *argv, str(tmp_path / "with" / with_photo.file))
    assert code == 1 and out == ""
    assert err == "Error: --selfie grey.png: no face found where one is expected; send a photo of one person\n"
