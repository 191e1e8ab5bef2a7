"""``finscore drift`` on generated tables: PSI against a plain-NumPy reference (quantile bins, open end bins,
categories only in the current table, missing values), KS and chi-squared against SciPy, and the command's exit
codes, JSON, HTML report and model score row."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.cli import main
from engine.demo.tables import CHURN_ID, churn_customers
from engine.families.churn import ChurnScorer, ChurnTrainResult
from engine.families.contract import REFERENCE_FILE, REFERENCE_ROWS
from engine.monitoring import EPSILON, MISSING, categorical_drift, drift_frames, numeric_drift, psi
from engine.serving.repository import DEFAULT_REPOSITORY, ModelRepository
from tests.conftest import request_arrays

THRESHOLD = 0.2


def _shares(counts: np.ndarray) -> np.ndarray:
    return np.maximum(counts / counts.sum(), EPSILON)


def numeric_psi_ref(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI in plain NumPy: deciles of the reference's present values (repeats dropped), bins (a, b] with open ends,
    NaN a bin of its own where either side has one."""
    present = reference[~np.isnan(reference)]
    edges = np.unique(np.quantile(present, np.arange(1, 10) / 10))

    def counts(x: np.ndarray) -> np.ndarray:
        missing = np.isnan(x)
        inside = np.bincount(np.searchsorted(edges, x[~missing], side="left"), minlength=len(edges) + 1)
        return np.append(inside, missing.sum())

    r, c = counts(reference), counts(current)
    if r[-1] == 0 and c[-1] == 0:
        r, c = r[:-1], c[:-1]
    p, q = _shares(r), _shares(c)
    return float(np.sum((q - p) * np.log(q / p)))


def categorical_psi_ref(reference: list[str | None], current: list[str | None]) -> float:
    """PSI in plain Python and NumPy: one bin per value seen on either side, None one of them."""
    r, c = Counter(reference), Counter(current)
    keys = sorted(set(r) | set(c), key=str)
    p, q = _shares(np.array([r[k] for k in keys], float)), _shares(np.array([c[k] for k in keys], float))
    return float(np.sum((q - p) * np.log(q / p)))


def floats(values: np.ndarray) -> pl.Series:
    """A Float64 series holding NaN where ``values`` does (drift reads NaN as missing, as null)."""
    return pl.Series("x", values, dtype=pl.Float64)


# -- the statistics -------------------------------------------------------------------------------------------------


def test_identical_distributions_have_psi_near_zero_and_a_shifted_one_drifts() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0.0, 1.0, 3000)
    same = numeric_drift("x", floats(reference), floats(reference), threshold=THRESHOLD)
    assert same.psi == pytest.approx(0.0, abs=1e-12)
    assert not same.drifted
    resampled = numeric_drift("x", floats(reference), floats(rng.normal(0.0, 1.0, 3000)), threshold=THRESHOLD)
    assert resampled.psi < 0.05
    assert not resampled.drifted
    shifted = numeric_drift("x", floats(reference), floats(rng.normal(1.0, 1.0, 3000)), threshold=THRESHOLD)
    assert shifted.psi > THRESHOLD
    assert shifted.drifted


def _with_missing(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    x = x.astype(np.float64)
    x[rng.random(len(x)) < share] = np.nan
    return x


@pytest.mark.parametrize(
    "case",
    ["continuous", "ties", "beyond_the_range", "missing_on_one_side", "constant_reference", "tiny"],
)
def test_numeric_psi_matches_the_numpy_reference(case: str) -> None:
    rng = np.random.default_rng(sum(map(ord, case)))
    ref, cur = rng.lognormal(3.0, 1.0, 900), rng.lognormal(3.2, 1.1, 700)
    if case == "ties":
        ref, cur = rng.poisson(2.0, 900).astype(float), rng.poisson(2.5, 700).astype(float)
    elif case == "beyond_the_range":
        cur = np.concatenate([cur, [-1e9, 1e9, ref.min() - 1, ref.max() + 1]])
    elif case == "missing_on_one_side":
        ref = _with_missing(ref, 0.1, rng)
    elif case == "constant_reference":
        ref = np.full(50, 7.0)
    elif case == "tiny":
        ref, cur = ref[:5], cur[:3]
    got = numeric_drift("x", floats(ref), floats(cur), threshold=THRESHOLD)
    assert got.psi == pytest.approx(numeric_psi_ref(ref, cur), rel=1e-9, abs=1e-12)
    assert got.psi == pytest.approx(psi(np.array(got.reference_counts), np.array(got.current_counts)))
    assert sum(got.reference_counts) == len(ref) and sum(got.current_counts) == len(cur)


def test_values_beyond_the_reference_fall_in_the_end_bins() -> None:
    got = numeric_drift("x", floats(np.arange(100.0)), floats(np.array([-1e6, 50.0, 1e6])), threshold=THRESHOLD)
    assert len(got.bins) == 10
    assert got.bins[0].startswith("≤") and got.bins[-1].startswith(">")
    assert got.reference_counts == (10,) * 10
    assert got.current_counts[0] == 1 and got.current_counts[-1] == 1 and sum(got.current_counts) == 3


def test_categories_seen_only_in_the_current_table_get_their_own_bin() -> None:
    reference = ["a"] * 60 + ["b"] * 40
    current = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    got = categorical_drift("k", pl.Series(reference), pl.Series(current), threshold=THRESHOLD)
    assert got.bins == ("a", "b", "c")
    assert got.reference_counts == (60, 40, 0)
    assert got.current_counts == (50, 30, 20)
    assert got.psi == pytest.approx(categorical_psi_ref(reference, current))
    # The new category alone: (0.2 - 1e-4) * ln(0.2 / 1e-4) = 1.52
    assert got.drifted and got.psi > 1.5


def test_missing_values_are_a_bin_of_their_own() -> None:
    rng = np.random.default_rng(5)
    ref, cur = _with_missing(rng.normal(size=400), 0.05, rng), _with_missing(rng.normal(size=400), 0.5, rng)
    values = pl.Series("x", [None if np.isnan(v) else v for v in ref[:200]] + list(ref[200:]), dtype=pl.Float64)
    got = numeric_drift("x", values, floats(cur), threshold=THRESHOLD)  # null and NaN both read as missing
    assert got.bins[-1] == MISSING
    assert got.reference_counts[-1] == np.isnan(ref).sum() and got.current_counts[-1] == np.isnan(cur).sum()
    assert got.psi == pytest.approx(numeric_psi_ref(ref, cur))
    assert got.drifted

    reference: list[str | None] = ["x", "y", None] * 30
    current: list[str | None] = ["x", "y"] * 40 + [None] * 5
    text = categorical_drift("k", pl.Series(reference), pl.Series(current), threshold=THRESHOLD)
    assert text.bins[-1] == MISSING and text.reference_counts[-1] == 30 and text.current_counts[-1] == 5
    assert text.psi == pytest.approx(categorical_psi_ref(reference, current))
    complete = numeric_drift("x", floats(np.arange(50.0)), floats(np.arange(50.0)), threshold=THRESHOLD)
    assert MISSING not in complete.bins


def test_ks_and_chi_squared_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(9)
    ref, cur = _with_missing(rng.normal(size=500), 0.1, rng), _with_missing(rng.normal(0.3, 1.0, 400), 0.1, rng)
    got = numeric_drift("x", floats(ref), floats(cur), threshold=THRESHOLD)
    expected = stats.ks_2samp(ref[~np.isnan(ref)], cur[~np.isnan(cur)])
    assert got.test == "KS"
    assert got.statistic == pytest.approx(expected.statistic)
    assert got.p_value == pytest.approx(expected.pvalue)

    reference = list(rng.choice(["p", "q", "r"], 300, p=[0.5, 0.3, 0.2])) + [None] * 10
    current = list(rng.choice(["p", "q", "s"], 250, p=[0.4, 0.4, 0.2])) + [None] * 3
    r, c = Counter(reference), Counter(current)
    keys = sorted(set(r) | set(c), key=str)
    table = np.array([[r[k] for k in keys], [c[k] for k in keys]])
    expected_chi2 = stats.chi2_contingency(table, correction=False)
    text = categorical_drift("k", pl.Series(reference), pl.Series(current), threshold=THRESHOLD)
    assert text.test == "chi2"
    assert text.statistic == pytest.approx(expected_chi2.statistic)
    assert text.p_value == pytest.approx(expected_chi2.pvalue)


def test_a_column_of_numbers_in_one_table_and_text_in_the_other_is_named() -> None:
    from engine.errors import DataFileError

    with pytest.raises(DataFileError, match="column 'x' holds numeric values in a but categorical values in b"):
        drift_frames(pl.DataFrame({"x": [1.0, 2.0]}), pl.DataFrame({"x": ["1", "two"]}), sources=("a", "b"))


# -- the command ----------------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["drift", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[list[str]]:
    """The printed table's rows (below its rule, above the blank line), split into cells."""
    body = out.split("-------\n", 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in body.splitlines()]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated customers (ids left out: a different id per row drifts by construction): a reference, another
    sample of the same population, and a sample with ``monthly_fee`` doubled and no ``basic`` plan."""
    folder = tmp_path_factory.mktemp("drift")
    paths = {
        name: folder / f"{name}.{ext}" for name, ext in (("ref", "parquet"), ("same", "parquet"), ("moved", "csv"))
    }
    churn_customers(1000, seed=1).drop(CHURN_ID).write_parquet(paths["ref"])
    same = churn_customers(1000, seed=2).drop(CHURN_ID)
    same.write_parquet(paths["same"])
    moved = same.filter(pl.col("plan") != "basic").with_columns(pl.col("monthly_fee") * 2)
    moved.write_csv(paths["moved"])
    return paths


def test_exit_0_without_drift_and_3_with_it(tables: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--reference", str(tables["ref"]), "--current", str(tables["same"]))
    assert (code, err) == (0, "")
    assert "no drift: every PSI is below 0.2" in out
    code, out, err = run(capsys, "--reference", str(tables["ref"]), "--current", str(tables["moved"]))
    assert (code, err) == (3, "")
    rows = table_rows(out)
    assert [r[0] for r in rows[:2]] == ["monthly_fee", "plan"]
    assert [r[-1] for r in rows] == ["yes", "yes"] + ["no"] * 12
    assert "drift in 2 of 14 (PSI >= 0.2): monthly_fee, plan" in out


def test_a_folder_of_parquet_parts_is_one_table(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A served model's sample is such a folder: its parts read as one table give the figures of one file.
    moved = pl.read_csv(tables["moved"])
    folder = tmp_path / "sample"
    folder.mkdir()
    moved.head(300).write_parquet(folder / "a.parquet")
    moved.slice(300).with_columns(pl.lit(1.5).alias("sampled_at")).write_parquet(folder / "b.parquet")
    whole = tmp_path / "whole.parquet"
    moved.write_parquet(whole)
    by_file = run(capsys, "--reference", str(tables["ref"]), "--current", str(whole))
    by_folder = run(capsys, "--reference", str(tables["ref"]), "--current", str(folder))
    assert by_folder[0] == by_file[0] == 3
    assert table_rows(by_folder[1]) == table_rows(by_file[1])  # sampled_at, which the reference lacks, is not
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "--reference", str(tables["ref"]), "--current", str(empty))
    assert code == 1 and "holds no Parquet parts" in err


def test_exit_1_for_a_missing_file(tables: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    missing = tables["ref"].with_name("nowhere.csv")
    code, out, err = run(capsys, "--reference", str(tables["ref"]), "--current", str(missing))
    assert code == 1
    assert err == f"Error: {missing}: no such file\n"


def test_a_flag_used_wrongly_exits_2(tables: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--reference", str(tables["ref"]), "--current", str(tables["same"]))
    code, _, err = run(capsys, *base, "--threshold", "0")
    assert (code, err) == (2, "Error: --threshold must be a positive PSI such as 0.2, got 0.0\n")
    code, _, err = run(capsys, *base, "--exclude", "nosuch")
    assert code == 2 and err.count("\n") == 1 and "--exclude 'nosuch'" in err


def test_json_holds_the_table(tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "drift.json"
    code, _, _ = run(
        capsys, "--reference", str(tables["ref"]), "--current", str(tables["moved"]), "--json", str(out_file)
    )
    figures = json.loads(out_file.read_text(encoding="utf-8"))
    assert code == 3
    assert figures["threshold"] == 0.2 and figures["model"] is None
    assert figures["reference"]["rows"] == 1000 and figures["current"]["rows"] == pl.read_csv(tables["moved"]).height
    features = figures["features"]
    assert [f["psi"] for f in features] == sorted((f["psi"] for f in features), reverse=True)
    assert figures["drifted"] == ["monthly_fee", "plan"] == [f["column"] for f in features if f["drifted"]]
    assert all(f["drifted"] == (f["psi"] >= 0.2) for f in features)
    assert set(features[0]) == {"column", "kind", "psi", "test", "statistic", "p_value", "drifted"}
    reference, current = pl.read_parquet(tables["ref"]), pl.read_csv(tables["moved"])
    fee = numeric_drift("monthly_fee", reference["monthly_fee"], current["monthly_fee"], threshold=0.2)
    assert features[0] == fee.as_dict()
    kinds = {f["column"]: (f["kind"], f["test"]) for f in features}
    assert kinds["plan"] == ("categorical", "chi2") and kinds["age"] == ("numeric", "KS")


def test_report_draws_one_image_per_drifted_column(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    moved = run(capsys, "--reference", str(tables["ref"]), "--current", str(tables["moved"]), "--report", str(tmp_path))
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert moved[0] == 3
    assert page.count("<img") == 2 and page.count('src="data:image/png;base64,') == 2
    assert "<h2>monthly_fee</h2>" in page and "<h2>plan</h2>" in page
    calm = run(capsys, "--reference", str(tables["ref"]), "--current", str(tables["same"]), "--report", str(tmp_path))
    assert calm[0] == 0
    assert (tmp_path / "index.html").read_text(encoding="utf-8").count("<img") == 0


def test_report_without_matplotlib_names_the_extra(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails as if not installed
    code, out, err = run(capsys, "--reference", str(tables["ref"]), "--current", str(tables["same"]), "--report", ".")
    assert code == 1 and out == ""
    assert err == (
        "Error: finscore drift --report needs matplotlib, which is not installed: pip install 'finscore[bench]'\n"
    )


# -- with a model ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def halves(customers: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The churn fixture's customers in two halves, and the second half with every contract monthly."""
    folder = tmp_path_factory.mktemp("drift-model")
    half = customers.height // 2
    frames = {
        "a": customers.head(half),
        "b": customers.slice(half),
        "monthly": customers.slice(half).with_columns(pl.lit("monthly").alias("contract")),
        "no_contract": customers.slice(half).drop("contract"),
    }
    for name, df in frames.items():
        df.write_parquet(folder / f"{name}.parquet")
    return {name: folder / f"{name}.parquet" for name in frames}


def test_a_named_model_drifts_on_its_inputs_and_its_score(
    trained: ChurnTrainResult, halves: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = trained.path.parents[1]
    latest = ModelRepository(repo).latest("churn")  # the fixture's version, unless a test trained a newer one
    model = ("--model", "churn", "--repo", str(repo))
    out_file = tmp_path / "same.json"
    code, out, err = run(
        capsys, "--reference", str(halves["a"]), "--current", str(halves["b"]), *model, "--json", str(out_file)
    )
    figures = json.loads(out_file.read_text(encoding="utf-8"))
    scorer = ChurnScorer.load(latest)
    assert (code, err) == (0, "")
    assert f"model:     churn version {latest.name} (churn), its churn_probability scored in-process" in out
    assert figures["model"] == {
        "name": "churn",
        "family": "churn",
        "version": latest.name,
        "score": "churn_probability",
    }
    columns = {f["column"]: f["kind"] for f in figures["features"]}
    assert set(columns) == {*scorer.schema.names, "churn_probability"}  # the schema leaves the id out
    assert CHURN_ID not in columns and columns["churn_probability"] == "score"

    a, b = pl.read_parquet(halves["a"]), pl.read_parquet(halves["b"])
    scores = [pl.Series(scorer.score(request_arrays(scorer, df))["churn_probability"]) for df in (a, b)]
    expected = numeric_drift("churn_probability", *scores, threshold=0.2, kind="score")
    assert next(f for f in figures["features"] if f["column"] == "churn_probability") == expected.as_dict()

    code, out, _ = run(capsys, "--reference", str(halves["a"]), "--current", str(halves["monthly"]), *model)
    rows = {r[0]: r for r in table_rows(out)}
    assert code == 3
    assert rows["contract"][-1] == "yes"
    assert float(rows["churn_probability"][2]) > 5 * expected.psi  # every customer on the riskiest contract


def test_the_reference_may_be_the_training_sample_a_version_kept(
    trained: ChurnTrainResult, halves: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = trained.path.parents[1]
    kept = pl.read_parquet(trained.path / REFERENCE_FILE)
    scorer = ChurnScorer.load(trained.path)
    assert kept.columns == scorer.schema.names and 0 < kept.height <= REFERENCE_ROWS  # inputs only: no id, no label
    by_name = run(
        capsys, "--reference", f"churn:{trained.path.name}", "--current", str(halves["b"]), "--repo", str(repo)
    )
    by_file = run(capsys, "--reference", str(trained.path / REFERENCE_FILE), "--current", str(halves["b"]))
    assert by_name[0] == by_file[0] and table_rows(by_name[1]) == table_rows(by_file[1])
    old = tmp_path / "repo"
    shutil.copytree(trained.path.parent, old / "churn")
    (old / "churn" / trained.path.name / REFERENCE_FILE).unlink()  # a version trained before versions kept one
    code, _, err = run(capsys, "--reference", "churn", "--current", str(halves["b"]), "--repo", str(old))
    assert code == 1 and "kept no sample of its training inputs" in err and err.count("\n") == 1
    code, _, err = run(capsys, "--reference", "churn:99", "--current", str(halves["b"]), "--repo", str(repo))
    assert code == 1 and "churn has no version 99" in err


def test_a_named_model_needs_its_input_columns(
    trained: ChurnTrainResult, halves: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(trained.path.parents[1])
    current = halves["no_contract"]
    code, out, err = run(
        capsys, "--reference", str(halves["a"]), "--current", str(current), "--model", "churn", "--repo", repo
    )
    assert code == 1 and out == ""
    assert err == f"Error: {current}: missing column 'contract' required by the model\n"


def test_a_stateful_model_drifts_on_its_inputs_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fraud is never loaded (it would restore its live state): a version folder with its recorded columns is all
    drift reads, so this one holds nothing else."""
    version = tmp_path / "repo" / "fraud" / "1"
    version.mkdir(parents=True)
    shutil.copy(DEFAULT_REPOSITORY / "fraud" / "model.py", version / "model.py")
    recorded = {"card": "card", "time": "ts", "amount": "amt", "label": "is_fraud", "terminal": None, "id": "tx"}
    (version / "fraud.json").write_text(json.dumps({"columns": recorded}), encoding="utf-8")
    assert ModelRepository(tmp_path / "repo").latest("fraud") == version
    rng = np.random.default_rng(3)
    for name, scale in (("ref", 1.0), ("cur", 3.0)):
        pl.DataFrame(
            {
                "tx": [f"t{name}{i}" for i in range(300)],
                "card": rng.choice(["c1", "c2", "c3"], 300),
                "ts": np.arange(300) + (0 if name == "ref" else 10_000),
                "amt": rng.lognormal(3.0, 1.0, 300) * scale,
            }
        ).write_parquet(tmp_path / f"{name}.parquet")
    argv = ("--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "cur.parquet"))
    code, out, err = run(capsys, *argv, "--model", "fraud", "--repo", str(tmp_path / "repo"))
    assert (code, err) == (3, "")
    assert "note: fraud is stateful (its answers depend on the requests before): drift on its input columns only" in out
    assert [r[0] for r in table_rows(out)] == ["amt"]
