"""The recommender's erasure store without a server: a customer's rows leave the three files of every version
together, the version still loads, the erased are unknown to it and everyone else gets the very same lists; an
erasure cut short never leaves a version that loads wrongly, and the next run finishes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

import engine.families.recommender.erasure as store
from engine.cli import main
from engine.errors import InvalidInputError, ModelNotReadyError
from engine.families.recommender import RecommenderScorer, RecommenderTrainResult
from engine.families.recommender.scorer import CUSTOMERS_FILE, SEEN_FILE, USERS_FILE
from engine.security.erasure import ErasureContext, forget
from engine.security.trail import Trail
from engine.serving.server import free_port

NEVER = "never-a-customer"


@pytest.fixture(scope="module")
def original(recommender_trained: RecommenderTrainResult) -> RecommenderScorer:
    """The shared fixture's version, read only."""
    return RecommenderScorer.load(recommender_trained.path)


@pytest.fixture()
def repo(recommender_trained: RecommenderTrainResult, tmp_path: Path) -> Path:
    """A repository of its own holding a copy of the trained recommender (the shared one is never erased)."""
    root = tmp_path / "repo"
    shutil.copytree(recommender_trained.path.parent, root / "recommender")
    return root


def _erased_pair(scorer: RecommenderScorer) -> list[str]:
    """Two customers with rows before others (a misaligned file would show in the rows after them)."""
    ids = list(scorer.customer_index)
    return [ids[5], ids[len(ids) // 2]]


def _ask(scorer: RecommenderScorer, customer: str, **profile: Any) -> tuple[list[str], list[float]]:
    columns: dict[str, np.ndarray] = {"customer_id": np.array([[customer.encode()]], dtype=object)}
    for name, value in profile.items():
        dtype = object if isinstance(value, str) else np.float32
        columns[name] = np.array([[value.encode() if isinstance(value, str) else value]], dtype=dtype)
    rows = scorer.validate(columns)
    ids, scores, _ = scorer.recommend(customer, rows["profile"][0], 10)
    return list(scorer.product_ids[ids]), scores


def _files(version: Path) -> tuple[pl.DataFrame, np.ndarray, sp.csr_matrix]:
    return pl.read_parquet(version / CUSTOMERS_FILE), np.load(version / USERS_FILE), sp.load_npz(version / SEEN_FILE)


def test_erased_customers_leave_every_file_and_the_others_get_the_same_lists(
    repo: Path, original: RecommenderScorer, recommender_trained: RecommenderTrainResult, audit: Path
) -> None:
    version = repo / "recommender" / recommender_trained.path.name
    gone = _erased_pair(original)
    kept = [c for c in original.customer_index if c not in gone]
    customers, users, held = _files(version)
    row = {c: i for i, c in enumerate(customers["customer_id"].to_list())}

    report = forget([gone[0], NEVER, gone[1]], ErasureContext(repo=repo))

    (line,) = [r for r in report.results if r.store == "recommender"]
    assert (line.place, line.removed, line.complete) == (str(version.resolve()), (1, 0, 1), True)
    after_customers, after_users, after_held = _files(version)
    assert after_customers.height == len(after_users) == after_held.shape[0] == customers.height - 2
    assert after_customers.columns == customers.columns
    assert after_customers["customer_id"].to_list() == kept
    rows = [row[c] for c in kept]  # the kept rows, unchanged and in their order
    assert after_customers.equals(customers[rows])
    np.testing.assert_array_equal(after_users, users[rows])
    assert (after_held != held.tocsr()[rows]).nnz == 0
    assert not list(version.glob(".*.erasing"))

    scorer = RecommenderScorer.load(version)
    for customer in gone:
        with pytest.raises(InvalidInputError, match="not known to this version and the request carries no profile"):
            _ask(scorer, customer)
        # With a profile, answered as anyone new with it: nothing of theirs (factors, holdings) is left.
        assert _ask(scorer, customer, risk_tolerance=4.0, horizon_years=10.0) == _ask(
            scorer, NEVER, risk_tolerance=4.0, horizon_years=10.0
        )
    for customer in kept:
        assert _ask(scorer, customer) == _ask(original, customer)

    mtimes = {name: (version / name).stat().st_mtime_ns for name in store.FILES}
    again = forget(gone, ErasureContext(repo=repo))
    assert [r.removed for r in again.results if r.store == "recommender"] == [(0, 0)]
    assert {name: (version / name).stat().st_mtime_ns for name in store.FILES} == mtimes  # not rewritten


def test_finscore_forget_prints_counts_per_version_and_never_an_id(
    repo: Path,
    original: RecommenderScorer,
    recommender_trained: RecommenderTrainResult,
    audit: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    version = (repo / "recommender" / recommender_trained.path.name).resolve()
    gone = _erased_pair(original)
    assert main(["forget", *gone, NEVER, "--repo", str(repo), "--no-server"]) == 0
    out = capsys.readouterr()
    assert f"recommender: {version}: 2 of 3 subjects found and removed\n" in out.out
    trail = Trail.from_env()
    lines = [json.loads(x) for x in audit.read_text(encoding="utf-8").splitlines()]
    recorded = {x["subject"]: x["removed"] for x in lines if x.get("store") == "recommender"}
    assert recorded == {trail.subject(gone[0]): 1, trail.subject(gone[1]): 1, trail.subject(NEVER): 0}
    for raw in (*gone, NEVER):
        assert raw not in out.out + out.err and raw not in audit.read_text(encoding="utf-8")


def test_no_server_at_the_url_is_said_and_the_files_are_erased_all_the_same(
    repo: Path, original: RecommenderScorer, recommender_trained: RecommenderTrainResult, audit: Path
) -> None:
    url = f"127.0.0.1:{free_port()}"
    gone = _erased_pair(original)
    report = forget(gone, ErasureContext(repo=repo, url=url))
    files, server = [r for r in report.results if r.store == "recommender"]
    assert files.removed == (1, 1)
    assert server.place == f"server {url}" and server.removed == (0, 0) and server.complete
    assert f"no server at {url}" in server.note and "keeps the customers in memory" in server.note
    assert report.complete


@pytest.mark.parametrize("cut", ["writing", "renaming"])
def test_an_erasure_cut_short_never_loads_wrongly_and_the_next_run_finishes_it(
    cut: str,
    repo: Path,
    original: RecommenderScorer,
    recommender_trained: RecommenderTrainResult,
    audit: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cut while the files are written (nothing renamed yet: the version is as it was) or while they are renamed
    (users.npy renamed, held.npz not: the version refuses to load rather than pair the wrong rows)."""
    version = repo / "recommender" / recommender_trained.path.name
    gone = _erased_pair(original)
    kept = [c for c in original.customer_index if c not in gone]
    replace, write = Path.replace, store._write

    def failing_replace(self: Path, target: Any) -> Path:
        if self.name == f".{SEEN_FILE}.erasing":
            raise OSError(28, "No space left on device")
        return replace(self, target)

    def failing_write(path: Path, fn: Any) -> None:
        if path.name == CUSTOMERS_FILE:
            raise OSError(28, "No space left on device")
        write(path, fn)

    if cut == "writing":
        monkeypatch.setattr(store, "_write", failing_write)
    else:
        monkeypatch.setattr(Path, "replace", failing_replace)
    report = forget(gone, ErasureContext(repo=repo))
    (line,) = [r for r in report.results if r.store == "recommender"]
    assert not line.complete and "No space left on device" in line.note and not report.complete
    if cut == "writing":
        scorer = RecommenderScorer.load(version)  # as it was: everyone known, rows matched
        assert _ask(scorer, gone[0]) == _ask(original, gone[0]) and _ask(scorer, kept[-1]) == _ask(original, kept[-1])
    else:
        with pytest.raises(ModelNotReadyError, match="not a readable recommender version"):
            RecommenderScorer.load(version)
    monkeypatch.undo()

    (line,) = [r for r in forget(gone, ErasureContext(repo=repo)).results if r.store == "recommender"]
    assert line.complete
    if cut == "writing":
        assert line.removed == (1, 1) and not line.note
    else:  # the first run's rows were gone once its files were written: this run finishes it, finding none
        assert line.removed == (0, 0) and "cut short earlier was finished" in line.note
    assert not list(version.glob(".*.erasing"))
    scorer = RecommenderScorer.load(version)
    with pytest.raises(InvalidInputError, match="not known to this version"):
        _ask(scorer, gone[1])
    for customer in kept[::25] + kept[-3:]:
        assert _ask(scorer, customer) == _ask(original, customer)


def test_versions_without_the_files_are_skipped_and_unerasable_ones_are_said(
    repo: Path, original: RecommenderScorer, recommender_trained: RecommenderTrainResult, audit: Path
) -> None:
    model = (repo / "recommender").resolve()
    gone = _erased_pair(original)
    older = model / "90"  # an older finscore's version: none of the three files
    older.mkdir()
    (older / "model.py").write_text("# shell\n", encoding="utf-8")
    broken = model / "91"  # users.npy lost: the rows cannot be matched
    shutil.copytree(recommender_trained.path, broken)
    (broken / USERS_FILE).unlink()
    half = model / ".v92.partial"  # a training still writing its version
    half.mkdir()
    shutil.copy2(recommender_trained.path / CUSTOMERS_FILE, half / CUSTOMERS_FILE)

    report = forget(gone, ErasureContext(repo=repo))
    by_place = {r.place: r for r in report.results if r.store == "recommender"}
    assert by_place[str(model / recommender_trained.path.name)].removed == (1, 1)
    assert by_place[str(older)].removed == (0, 0) and by_place[str(older)].complete
    assert "no customer files" in by_place[str(older)].note
    assert not by_place[str(broken)].complete and f"{USERS_FILE} is missing" in by_place[str(broken)].note
    assert pl.read_parquet(broken / CUSTOMERS_FILE).height == len(original.customer_index)  # left as it was
    assert not by_place[str(half)].complete and "still being written" in by_place[str(half)].note
    assert not report.complete


def test_no_trained_recommender_is_said(tmp_path: Path, audit: Path) -> None:
    report = forget(["anyone"], ErasureContext(repo=tmp_path / "empty", url=f"127.0.0.1:{free_port()}"))
    (line,) = [r for r in report.results if r.store == "recommender"]  # and the server is not asked
    assert line.removed == (0,) and "no trained recommender" in line.note and report.complete


def test_a_retrain_from_files_that_still_hold_an_erased_customer_leaves_them_out(
    repo: Path, advisory: dict[str, Path], audit: Path
) -> None:
    """Erasure outlives the next version: training reads the audit log's erasure lines and keeps the customer out
    of the new version's files, though the holdings and customers files still hold them."""
    from engine.families.recommender import train_recommender
    from engine.serving.repository import ModelRepository

    holdings = pl.read_parquet(advisory["holdings.parquet"])
    customer = str(holdings["customer_id"][0])
    forget([customer], ErasureContext(repo=repo))

    result = train_recommender(
        advisory["holdings.parquet"],
        weight="amount",
        customers=advisory["customers.parquet"],
        products=advisory["products.parquet"],
        repo=ModelRepository(repo),
    )

    assert result.erased_customers == 1
    kept = pl.read_parquet(result.path / CUSTOMERS_FILE)["customer_id"].to_list()
    assert customer not in kept and len(kept) == pl.read_parquet(advisory["customers.parquet"]).height - 1
    with pytest.raises(InvalidInputError, match="not known to this version"):
        RecommenderScorer.load(result.path).validate({"customer_id": np.array([[customer.encode()]], dtype=object)})
