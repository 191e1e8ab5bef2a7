"""``finscore recommend`` in-process (``--local``): the table and ``--json`` hold what the scorer ranks, a new
customer described by profile flags, a file of customers in bulk with an unknown one rejected and counted, the
partial file, and one sentence for every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.batch.recommend import COLUMNS, in_process, recommend_file
from engine.batch.score import BulkSummary, ScoreFn
from engine.cli import main
from engine.demo.job import NEW_CUSTOMER
from engine.errors import ServerUnavailableError
from engine.families.recommender import RecommenderScorer, RecommenderTrainResult
from engine.families.recommender.scorer import MAX_K, PROFILE_FIELDS
from engine.serving.server import free_port

K = 4
NEW = NEW_CUSTOMER  # the demo's new customer: no holdings, only a profile


@pytest.fixture(scope="module")
def scorer(recommender_trained: RecommenderTrainResult) -> RecommenderScorer:
    return RecommenderScorer.load(recommender_trained.path)


@pytest.fixture(scope="module")
def repo(recommender_trained: RecommenderTrainResult) -> str:
    return str(recommender_trained.path.parent.parent)


@pytest.fixture(scope="module")
def known(scorer: RecommenderScorer) -> list[str]:
    """Three customers with holdings whose profiles allow a full list of 10 (some allow only one or two)."""
    return [c for c in scorer.customer_index if len(expected(scorer, c, 10)) == 10][:3]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def flags(profile: dict[str, object]) -> list[str]:
    return [
        a
        for name, v in profile.items()
        for a in (f"--{name.replace('_', '-')}", f"{v:g}" if isinstance(v, float) else str(v))
    ]


def expected(scorer: RecommenderScorer, customer: str, k: int, **profile: object) -> list[tuple[str, float, str]]:
    """The scorer's own list for one customer (the request checked as the server checks it)."""
    arrays = {"customer_id": np.array([[customer.encode()]], dtype=object)}
    for name, v in profile.items():
        arrays[name] = (
            np.array([[float(v)]], dtype=np.float32)  # type: ignore[arg-type]
            if isinstance(v, float)
            else np.array([[str(v).encode()]], dtype=object)
        )
    ids, scores, reasons = scorer.recommend(customer, scorer.validate(arrays)["profile"][0], k)
    return list(zip(scorer.product_ids[ids].tolist(), scores, reasons, strict=True))


def parse_tables(out: str) -> dict[str, list[list[str]]]:
    """The printed tables: customer -> rows of (rank, product, score, reason)."""
    tables = {}
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].endswith(":") and lines[1].split() == ["rank", "product", "score", "reason"]
        tables[lines[0][:-1]] = [re.split(r"\s{2,}", line.strip()) for line in lines[3:]]
    return tables


def test_table_per_customer_as_the_scorer_ranks(
    capsys: pytest.CaptureFixture[str], scorer: RecommenderScorer, repo: str, known: list[str]
) -> None:
    code, out, err = run(capsys, "recommend", *known[:2], "--k", str(K), "--local", "--repo", repo)
    assert code == 0, err
    tables = parse_tables(out)
    assert list(tables) == known[:2]
    for customer, rows in tables.items():
        want = expected(scorer, customer, K)
        assert len(want) == K
        assert rows == [[str(i), p, f"{s:.4f}", r] for i, (p, s, r) in enumerate(want, 1)]


def test_json_is_one_document(
    capsys: pytest.CaptureFixture[str], scorer: RecommenderScorer, repo: str, known: list[str]
) -> None:
    code, out, _ = run(capsys, "recommend", *known, "--k", "3", "--local", "--repo", repo, "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == known
    for customer, recs in doc.items():
        want = expected(scorer, customer, 3)
        assert [(r["product_id"], r["reason"]) for r in recs] == [(p, why) for p, _, why in want]
        assert [r["score"] for r in recs] == pytest.approx([s for _, s, _ in want], abs=1e-6)
        assert all(set(r) == {"product_id", "score", "reason"} for r in recs)


def test_a_customer_the_rules_leave_nothing(
    capsys: pytest.CaptureFixture[str], scorer: RecommenderScorer, repo: str, known: list[str]
) -> None:
    """A profile no product suits (no risk, no time) gets a sentence in the table and an empty list in JSON; the
    profile flags describe every customer named, over a known one's stored profile too."""
    argv = ["recommend", "cautious", "--risk-tolerance", "0", "--horizon-years", "0", "--k", "5", "--local"]
    code, out, err = run(capsys, *argv, "--repo", repo)
    assert (code, out) == (0, "cautious: no suitable product\n"), err
    code, out, _ = run(capsys, *argv[:2], known[0], *argv[2:], "--repo", repo, "--json")
    assert code == 0 and json.loads(out) == {"cautious": [], known[0]: []}
    assert expected(scorer, "cautious", 5, risk_tolerance=0.0, horizon_years=0.0) == []


def test_a_new_customer_described_by_profile_flags(
    capsys: pytest.CaptureFixture[str], scorer: RecommenderScorer, repo: str, advisory: dict[str, Path]
) -> None:
    code, out, err = run(capsys, "recommend", "prospect-7", "--local", "--repo", repo, *flags(NEW))
    assert code == 0, err
    rows = parse_tables(out)["prospect-7"]
    want = expected(scorer, "prospect-7", 10, **NEW)
    assert [(p, r) for _, p, _, r in rows] == [(p, r) for p, _, r in want] and len(rows) == 10
    products = pl.read_parquet(advisory["products.parquet"])
    risk = dict(zip(products["product_id"], products["risk_level"], strict=True))
    assert all(risk[p] <= NEW["risk_tolerance"] for _, p, _, _ in rows)  # the profile's rules applied
    # Without the flags the same customer is refused: the model knows nothing of them.
    code, out, err = run(capsys, "recommend", "prospect-7", "--local", "--repo", repo)
    assert code == 1 and out == ""
    assert err.startswith("Error: ") and "not known to this version and the request carries no profile" in err


def test_bulk_file_rejects_an_unknown_customer_and_counts_it(
    capsys: pytest.CaptureFixture[str], scorer: RecommenderScorer, repo: str, tmp_path: Path
) -> None:
    ids = list(scorer.customer_index)[:40]
    ids[11] = "stranger-without-profile"
    data = tmp_path / "ids.csv"
    pl.DataFrame({"customer_id": ids}).write_csv(data)
    out = tmp_path / "recs.parquet"
    argv = ["recommend", "--data", str(data), "--out", str(out), "--k", "5", "--local", "--repo", repo]
    code, printed, err = run(capsys, *argv, "--request-rows", "8", "--no-progress")
    assert code == 0, err
    listed = [c for c in ids[:11] + ids[12:] if expected(scorer, c, 5)]  # the rules may leave one nothing
    empty = f" ({39 - len(listed)} with no suitable product)" if len(listed) < 39 else ""
    assert f"for 39 customers{empty}; read 40 rows, scored 39, rejected 1" in printed
    rejects = pl.read_csv(tmp_path / "recs.rejected.csv")
    assert rejects["row"].to_list() == [11]
    assert "not known to this version" in rejects["reason"][0]
    assert "stranger" not in (tmp_path / "recs.rejected.csv").read_text()  # never the value
    recs = pl.read_parquet(out)
    assert recs.columns == list(COLUMNS)
    assert f"{recs.height:,} recommendations" in printed
    assert recs["customer_id"].unique(maintain_order=True).to_list() == listed
    for customer in (ids[0], ids[25]):
        mine = recs.filter(pl.col("customer_id") == customer)
        want = expected(scorer, customer, 5)
        assert mine["rank"].to_list() == list(range(1, len(want) + 1))
        assert mine["product_id"].to_list() == [p for p, _, _ in want]
        assert mine["reason"].to_list() == [r for _, _, r in want]
        np.testing.assert_allclose(mine["score"].to_numpy(), [s for _, s, _ in want], rtol=0, atol=1e-6)
    # The same requests sent all at once give the same file.
    code, _, _ = run(capsys, *argv, "--request-rows", "64", "--no-progress")
    assert code == 0 and pl.read_parquet(out).equals(recs)


def test_bulk_reads_the_profile_columns_the_file_has(
    capsys: pytest.CaptureFixture[str], scorer: RecommenderScorer, repo: str, tmp_path: Path
) -> None:
    """A new customer with a profile is answered; a bad number, an unknown text value or a missing id is rejected
    with its row; a blank value is no value (a known customer keeps the stored one); a profile no product suits
    is answered with nothing, and counted."""
    known = list(scorer.customer_index)[:2]
    frame = pl.DataFrame(
        {
            "cid": [known[0], "new-1", "new-2", "new-3", known[1], None, "new-0"],
            "risk_tolerance": ["", "4", "forty", "3", "", "4", "0"],
            "horizon_years": ["", "10", "10", "10", "", "10", "0"],
            "income_band": ["", "middle", "middle", "rich", "", "middle", "low"],
            "unrelated": ["a", "b", "c", "d", "e", "f", "g"],
        }
    )
    data = tmp_path / "people.csv"
    frame.write_csv(data)
    out = tmp_path / "recs.csv"
    code, printed, err = run(
        capsys, "recommend", "--data", str(data), "--id", "cid", "--out", str(out), "--k", "3", "--local",
        "--repo", repo, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "for 4 customers (1 with no suitable product); read 7 rows, scored 4, rejected 3" in printed
    rejects = pl.read_csv(tmp_path / "recs.rejected.csv")
    assert rejects.rows() == [
        (2, "risk_tolerance", "not a finite number"),
        (3, None, rejects["reason"][1]),
        (5, None, "column 'cid' is empty: every row needs a customer id"),
    ]
    assert "'income_band': unknown value" in rejects["reason"][1] and "rich" not in rejects["reason"][1]
    recs = pl.read_csv(out)
    assert recs["customer_id"].unique(maintain_order=True).to_list() == [known[0], "new-1", known[1]]
    new = recs.filter(pl.col("customer_id") == "new-1")["product_id"].to_list()
    assert new == [
        p for p, _, _ in expected(scorer, "new-1", 3, risk_tolerance=4.0, horizon_years=10.0, income_band="middle")
    ]
    first = recs.filter(pl.col("customer_id") == known[0])["product_id"].to_list()
    assert first == [p for p, _, _ in expected(scorer, known[0], 3)]


def test_an_interrupted_run_leaves_nothing_and_a_rerun_the_same_file(scorer: RecommenderScorer, tmp_path: Path) -> None:
    data = tmp_path / "ids.parquet"
    pl.DataFrame({"customer_id": list(scorer.customer_index)[:60]}).write_parquet(data)
    out = tmp_path / "recs.parquet"
    inputs = [(s.name, s.datatype) for s in scorer.inputs]
    answer = in_process(scorer)
    calls = 0

    def dies_on_the_third_request(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ServerUnavailableError("no Triton server answers at 127.0.0.1:1")
        return answer(arrays)

    def interrupted(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise KeyboardInterrupt

    def attempt(recommend: ScoreFn) -> BulkSummary:
        return recommend_file(data, out, recommend=recommend, inputs=inputs, k=4, request_rows=16, progress=False)

    with pytest.raises(ServerUnavailableError):
        attempt(dies_on_the_third_request)
    assert calls == 3 and [p.name for p in tmp_path.iterdir()] == ["ids.parquet"]  # no output, no partial file
    with pytest.raises(KeyboardInterrupt):
        attempt(interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["ids.parquet"]

    summary = attempt(answer)
    first, written = pl.read_parquet(out), out.read_bytes()
    assert summary.scored == 60 and summary.written == first.height >= 60
    calls = 0
    with pytest.raises(ServerUnavailableError):
        attempt(dies_on_the_third_request)
    assert out.read_bytes() == written  # a run that fails leaves the earlier output as it was
    attempt(answer)
    assert pl.read_parquet(out).equals(first)  # a rerun writes the same rows, not more
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.parquet", "recs.parquet"]


def test_bulk_output_is_guarded_and_audited(
    capsys: pytest.CaptureFixture[str],
    scorer: RecommenderScorer,
    repo: str,
    tmp_path: Path,
    finscore_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As ``finscore score``: ``--tokenize customer_id`` writes tokens, and every product written is a ``decision``
    line of the audit log naming the customer by pseudonym only, closed by a ``run`` line."""
    monkeypatch.setenv("FINSCORE_PROTECT_KEYS", "v1 " + bytes(range(32)).hex())
    ids = list(scorer.customer_index)[:12]
    data = tmp_path / "ids.parquet"
    pl.DataFrame({"customer_id": ids}).write_parquet(data)
    out = tmp_path / "recs.parquet"
    log = finscore_home / "audit.jsonl"
    before = log.read_text().count("\n") if log.exists() else 0
    code, _, err = run(
        capsys, "recommend", "--data", str(data), "--out", str(out), "--local", "--repo", repo, "--no-progress",
        "--tokenize", "customer_id",
    )  # fmt: skip
    assert code == 0, err
    recs = pl.read_parquet(out)
    tokens = recs["customer_id"].unique().to_list()
    assert len(tokens) == len({c for c in ids if expected(scorer, c, 10)}) > 0 and not set(tokens) & set(ids)
    lines = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert len(decisions) == recs.height
    assert {d["decision"] for d in decisions} == set(recs["product_id"])
    assert len({d["subject"] for d in decisions}) == len(tokens)
    assert not any(i in log.read_text() for i in ids)
    closing = [line for line in lines if line["event"] == "run"][-1]
    assert (closing["command"], closing["status"], closing["decisions"]) == ("recommend", "written", recs.height)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["nobody-we-know"], 1, "the customer is not known to this version and the request carries no profile"),
        (["{known}", "--income-band", "billionaire"], 1, "'income_band': unknown value; expected one of"),
        (["{known}", "--k", "0"], 2, "--k must be between 1 and 100"),
        (["{known}", "--k", "101"], 2, "--k must be between 1 and 100"),
        ([], 2, "name one or more customers"),
        (["{known}", "--data", "{data}", "--out", "{out}"], 2, "not both"),
        (["--data", "{data}"], 2, "--data needs --out"),
        (["{known}", "--out", "{out}"], 2, "--out writes the answers to --data"),
        (["--data", "{data}", "--out", "{out}", "--json"], 2, "--json prints the answers for named customers"),
        (["--data", "{data}", "--out", "{out}", "--goal", "growth"], 2, "profile flags describe the customers"),
        (["{known}", "--url", "127.0.0.1:1"], 2, "--url and --local both given"),
        (["--data", "{data}", "--out", "{out}", "--request-rows", "5000"], 2, "between 1 and 4096"),
        (["--data", "{noid}", "--out", "{out}"], 1, "missing column 'customer_id' required by the model"),
        (["--data", "{junk}", "--out", "{out}"], 1, "cannot be read as PARQUET"),
        (["--data", "{tmp}/absent.csv", "--out", "{out}"], 1, "no such file"),
        (["--data", "{data}", "--out", "{tmp}/recs.json"], 1, "unsupported file type '.json'"),
    ],
)
def test_each_bad_input_is_one_sentence(
    capsys: pytest.CaptureFixture[str],
    repo: str,
    known: list[str],
    tmp_path: Path,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    pl.DataFrame({"customer_id": known}).write_parquet(tmp_path / "ids.parquet")
    pl.DataFrame({"cust": known}).write_parquet(tmp_path / "noid.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    names = {
        "known": known[0],
        "data": tmp_path / "ids.parquet",
        "noid": tmp_path / "noid.parquet",
        "junk": tmp_path / "junk.parquet",
        "out": tmp_path / "recs.parquet",
        "tmp": tmp_path,
    }
    got, out, err = run(
        capsys, "recommend", *(a.format(**names) for a in argv), "--local", "--repo", repo, "--no-progress"
    )
    assert (got, out) == (code, "")
    assert err.startswith("Error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "recs.parquet").exists() and not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("bulk", [False, True])
def test_no_server_is_one_sentence(
    capsys: pytest.CaptureFixture[str], known: list[str], tmp_path: Path, bulk: bool
) -> None:
    url = f"127.0.0.1:{free_port()}"
    data = tmp_path / "ids.parquet"
    pl.DataFrame({"customer_id": known}).write_parquet(data)
    argv = ["--data", str(data), "--out", str(tmp_path / "recs.parquet")] if bulk else [known[0]]
    code, out, err = run(capsys, "recommend", *argv, "--url", url, "--no-progress")
    assert (code, out) == (1, "")
    assert err == f"Error: no Triton server answers at {url}: start one with `finscore serve`\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.parquet"]


def test_help_has_a_flag_per_profile_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["recommend", "--help"])
    out = capsys.readouterr().out
    assert all(f"--{name.replace('_', '-')}" in out for name in PROFILE_FIELDS)
    assert f"at most {MAX_K}" in out


def test_other_commands_do_not_import_the_recommender() -> None:
    """The profile flags are added when ``recommend`` is parsed: the other commands neither wait for the
    recommender's imports nor depend on them."""
    code = (
        "import sys; from engine.cli import build_parser; p = build_parser(); p.parse_args(['audit', 'head', 'x']); "
        "print('engine.families.recommender' in sys.modules); p.parse_args(['recommend', 'x', '--goal', 'growth']); "
        "print('engine.families.recommender' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]
