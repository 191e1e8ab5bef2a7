"""The face gallery on generated embeddings: exact search is a brute-force top-k, HNSW above the limit finds the
planted person, a save cut short leaves the previous gallery, a removed person never comes back, ``finscore
forget`` erases the embeddings, and every bad input is one sentence with nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine.families.face.gallery as gallery_module
from engine.cli import main
from engine.cli.gallery import Embedder
from engine.errors import DataFileError, InvalidInputError, NotFoundError
from engine.families.face.gallery import FILE, Gallery, default_gallery

DIM = 32
#: Customer ids as the demo data writes them: the log scan fails the run if one reaches the audit log.
ALICE, BOB = "C0000000041", "C0000000042"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _people(n: int, per: int, *, dim: int = DIM, noise: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` people's centres and ``per`` embeddings each around them, [n, per, dim]."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((n, dim)))
    faces = _unit(centres[:, None, :] + noise / np.sqrt(dim) * rng.standard_normal((n, per, dim)))
    return centres, faces


def _filled(n: int = 60, per: int = 3, **kwargs: Any) -> tuple[Gallery, np.ndarray, np.ndarray]:
    limit = kwargs.pop("exact_limit", 50_000)
    centres, faces = _people(n, per, **kwargs)
    g = Gallery(faces.shape[-1], exact_limit=limit)
    for p in range(n):
        g.enroll(f"P{p}", faces[p, : 1 + p % per])  # one to ``per`` faces: people differ in how many
    return g, centres, faces


def test_exact_search_is_the_brute_force_best_per_person() -> None:
    g, centres, faces = _filled(n=80, per=4, noise=1.5)
    rng = np.random.default_rng(1)
    owners = np.concatenate([np.full(1 + p % 4, p) for p in range(80)])
    stacked = np.concatenate([faces[p, : 1 + p % 4] for p in range(80)])
    assert g.index_kind == "exact" and len(g) == len(stacked) and g.persons == 80
    for _ in range(20):
        q = _unit(rng.standard_normal(DIM))
        cos = stacked @ q
        best = np.full(80, -np.inf)
        np.maximum.at(best, owners, cos)
        top = np.argsort(-best, kind="stable")[:7]
        found = g.identify(q, k=7)
        assert [p for p, _ in found] == [f"P{p}" for p in top]
        np.testing.assert_allclose([s for _, s in found], best[top], rtol=1e-5, atol=1e-5)


def test_k_beyond_the_people_lists_everyone_once() -> None:
    g, _, faces = _filled(n=5, per=3)
    found = g.identify(faces[2, 0], k=50)
    assert sorted(p for p, _ in found) == [f"P{p}" for p in range(5)]
    assert found[0][0] == "P2"


def test_hnsw_above_the_limit_finds_the_planted_person(tmp_path: Path) -> None:
    centres, faces = _people(600, 5, noise=0.6, seed=3)
    g = Gallery(DIM, exact_limit=1000)
    for p in range(600):
        g.enroll(f"P{p}", faces[p, :4])
    assert len(g) == 2400 and g.index_kind == "hnsw"
    exact = Gallery(DIM)
    for p in range(600):
        exact.enroll(f"P{p}", faces[p, :4])
    queries = faces[:, 4]  # each person's fifth face, never enrolled
    hits = [g.identify(queries[p], k=5)[0][0] == f"P{p}" for p in range(0, 600, 4)]
    exact_hits = [exact.identify(queries[p], k=5)[0][0] == f"P{p}" for p in range(0, 600, 4)]
    assert sum(exact_hits) >= 0.9 * len(exact_hits)  # the data can be told apart at all
    assert sum(hits) >= sum(exact_hits) - 2
    g.save(tmp_path)
    with np.load(tmp_path / FILE) as z:
        assert json.loads(str(z["meta"]))["index"] == "hnsw" and "hnsw" in z.files
    again = Gallery.load(tmp_path, exact_limit=1000)
    assert again._hnsw is not None and again._hnsw.ntotal == 2400  # the graph is read, not built again
    assert [again.identify(queries[p])[0][0] for p in range(0, 600, 50)] == [
        g.identify(queries[p])[0][0] for p in range(0, 600, 50)
    ]


def test_reload_equals(tmp_path: Path) -> None:
    g, _, faces = _filled()
    g.save(tmp_path / "gallery")
    again = Gallery.load(tmp_path / "gallery")
    assert (len(again), again.persons, again.dim, again.generation) == (len(g), g.persons, g.dim, 1)
    for q in faces[::7, 0]:
        assert again.identify(q, k=4) == g.identify(q, k=4)
    assert (tmp_path / "gallery").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "gallery" / FILE).stat().st_mode & 0o777 == 0o600


def test_a_crash_mid_save_leaves_the_previous_gallery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g, _, faces = _filled(n=10)
    g.save(tmp_path)
    before = (tmp_path / FILE).read_bytes()
    g.enroll("P-new", faces[0, 0] + 0.01)

    def crash(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(gallery_module.os, "replace", crash)
    with pytest.raises(OSError):
        g.save(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE]  # the half-written file went too
    loaded = Gallery.load(tmp_path)
    assert len(loaded) == len(g) - 1 and loaded.vectors_of("P-new") == 0


def test_a_crashed_saves_leftover_is_deleted_by_the_next_writer(tmp_path: Path) -> None:
    g, _, faces = _filled(n=4)
    g.save(tmp_path)
    (tmp_path / f".{FILE}.dead.tmp").write_bytes(b"vectors of someone erased since")
    with Gallery.editing(tmp_path) as again:
        again.remove("P1")
    assert not list(tmp_path.glob("*.tmp"))


def test_a_removed_person_is_never_identified_again(tmp_path: Path) -> None:
    for limit in (50_000, 50):  # exact, and HNSW (built again without the person)
        g, _, faces = _filled(n=40, per=3, exact_limit=limit)
        assert g.index_kind == ("exact" if limit > 100 else "hnsw")
        g.identify(faces[0, 0])  # the HNSW graph exists before the removal
        assert g.remove("P7") == 1 + 7 % 3
        assert g.remove("P7") == 0 and g.remove("nobody") == 0
        for q in faces[7]:
            assert "P7" not in [p for p, _ in g.identify(q, k=40)]
        g.save(tmp_path / str(limit))
        again = Gallery.load(tmp_path / str(limit), exact_limit=limit)
        assert again.persons == 39 and "P7" not in [p for p, _ in again.identify(faces[7, 0], k=40)]
        assert again.identify(faces[8, 0])[0][0] == "P8"  # the others keep their vectors after renumbering


def test_bad_inputs_are_one_sentence_and_store_nothing(tmp_path: Path) -> None:
    g, _, faces = _filled(n=3)
    g.save(tmp_path)
    before = (tmp_path / FILE).read_bytes()
    bad: list[tuple[str, Any]] = [
        ("P0", np.ones(DIM + 1, np.float32)),
        ("P0", np.full(DIM, np.nan, np.float32)),
        ("P0", np.zeros(DIM, np.float32)),
        ("  ", faces[0, 0]),
        ("P0", "not numbers"),
    ]
    for person, vector in bad:
        with pytest.raises(InvalidInputError) as err, Gallery.editing(tmp_path) as g2:
            g2.enroll(person, vector)
        assert "\n" not in str(err.value) and str(err.value).count(". ") == 0
    assert (tmp_path / FILE).read_bytes() == before
    with pytest.raises(InvalidInputError, match="dimensions"):
        g.identify(np.ones(DIM - 1))
    with pytest.raises(InvalidInputError, match="NaN"):
        g.identify(np.full(DIM, np.inf))
    with pytest.raises(NotFoundError, match="does not exist"):
        Gallery.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="holds no gallery"):
        Gallery.load(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / FILE).write_bytes(before[: len(before) // 2])
    with pytest.raises(DataFileError, match="cannot be read"):
        Gallery.load(tmp_path / "broken")


# -- the commands -----------------------------------------------------------------------------------------------


def _photo(path: Path, *vectors: np.ndarray) -> Path:
    """A fake photo: the embeddings of the faces it shows (the fake embedder reads them back)."""
    path.write_text(json.dumps([v.tolist() for v in vectors]))
    return path


@pytest.fixture()
def embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The face model replaced by one that reads the fake photos back, its version serving threshold 0.5."""
    import engine.cli.gallery as commands
    import engine.families.face.embedding as embedding

    def embed_images(items: list[bytes], *, model: Any) -> tuple[np.ndarray, np.ndarray]:
        assert model == "fake pipeline"
        faces = [json.loads(b) for b in items]
        rows = [_unit(np.array(f[0])) if f else np.zeros(DIM) for f in faces]
        return np.array(rows, np.float32), np.array([len(f) for f in faces], np.int32)

    monkeypatch.setattr(embedding, "embed_images", embed_images)
    monkeypatch.setattr(commands, "load_embedder", lambda repo, device: Embedder("fake pipeline", "7", 0.5))


def _audit_lines(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []


def test_enroll_identify_and_forget_through_the_cli(
    tmp_path: Path, audit: Path, embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    centres, faces = _people(4, 4, seed=5)
    for person, p in ((ALICE, 0), (BOB, 1), ("C0000000043", 2)):
        photos = [_photo(tmp_path / f"{p}-{i}.json", faces[p, i]) for i in range(3)]
        assert main(["face", "enroll", person, *map(str, photos)]) == 0
    assert "the person has 3" in capsys.readouterr().out
    probe = _photo(tmp_path / "probe.json", faces[1, 3])
    assert main(["face", "identify", str(probe), "--k", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in doc["candidates"]][0] == BOB and len(doc["candidates"]) == 2
    assert doc["threshold"] == 0.5 and doc["match"] is (doc["candidates"][0]["score"] >= 0.5)
    stranger = _photo(tmp_path / "stranger.json", centres[3])
    assert main(["face", "identify", str(stranger)]) == 0
    assert "rank" in capsys.readouterr().out

    lines = _audit_lines(audit)
    text = audit.read_text()
    assert [x["event"] for x in lines] == ["enrolment"] * 3 + ["decision"] * 2
    assert ALICE not in text and BOB not in text
    assert lines[3]["subject"] == lines[1]["subject"] and lines[3]["decision"] in {"match", "no_match"}

    assert main(["forget", BOB, "--no-server", "--repo", str(tmp_path / "repo")]) == 0
    out = capsys.readouterr().out
    assert f"face: {default_gallery()}: 1 of 1 subject found and removed (3 embeddings removed" in out
    g = Gallery.load(default_gallery())
    assert g.vectors_of(BOB) == 0 and g.vectors_of(ALICE) == 3
    assert BOB not in [p for p, _ in g.identify(faces[1, 3], k=10)]
    erasure = [x for x in _audit_lines(audit) if x["event"] == "erasure" and x["store"] == "face"]
    assert erasure == [{**erasure[0], "subject": lines[1]["subject"], "removed": 3}]
    assert BOB not in audit.read_text()


def test_a_photo_without_exactly_one_face_stores_nothing(
    tmp_path: Path, audit: Path, embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _, faces = _people(2, 3, seed=6)
    folder = tmp_path / "g"
    good = _photo(tmp_path / "good.json", faces[0, 0])
    assert main(["face", "enroll", ALICE, str(good), "--gallery", str(folder)]) == 0
    before, logged = (folder / FILE).read_bytes(), audit.read_text()
    capsys.readouterr()
    for shown, words in (((), "no face"), ((faces[1, 0], faces[1, 1]), "2 faces")):
        bad = _photo(tmp_path / "bad.json", *shown)
        assert main(["face", "enroll", BOB, str(good), str(bad), "--gallery", str(folder)]) == 1
        err = capsys.readouterr().err
        assert err == f"Error: image 2 of 2 shows {words}, not one: nothing was stored\n"
        assert main(["face", "identify", str(bad), "--gallery", str(folder)]) == 1
        assert capsys.readouterr().err == f"Error: image 1 of 1 shows {words}, not one: nobody was searched for\n"
    assert (folder / FILE).read_bytes() == before and audit.read_text() == logged
    assert main(["face", "identify", str(good), "--gallery", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: gallery folder") and err.count("\n") == 1
    assert main(["face", "enroll", " ", str(good), "--gallery", str(folder)]) == 1
    assert capsys.readouterr().err == "Error: the person id is empty: give the customer id the face belongs to\n"
    assert not (tmp_path / "nowhere").exists() and audit.read_text() == logged
