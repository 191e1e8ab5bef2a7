from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.batch.score import score_file
from engine.errors import DataFileError
from engine.families.churn import ChurnScorer


def inputs(scorer: ChurnScorer) -> list[tuple[str, str]]:
    return [(c.name, c.wire) for c in scorer.schema.columns]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_every_row_is_scored_or_reported(
    scorer: ChurnScorer, customers: pl.DataFrame, tmp_path: Path, suffix: str
) -> None:
    frame = customers.head(500).with_columns(pl.col("age").cast(pl.String))
    bad_rows = [3, 250, 499]
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(bad_rows)).then(pl.lit("forty")).otherwise(pl.col("age")).alias("age")
    )
    data = tmp_path / f"in{suffix}"
    frame.write_csv(data) if suffix == ".csv" else frame.write_parquet(data)
    out = tmp_path / f"out{suffix}"
    summary = score_file(
        data, out, score=scorer.score, inputs=inputs(scorer), id_column="customer_id", request_rows=64, progress=False
    )
    assert (summary.rows_read, summary.scored, summary.rejected) == (500, 497, 3)
    assert [r.row for r in summary.rejects] == bad_rows
    assert all(r.column == "age" for r in summary.rejects)
    result = pl.read_csv(out) if suffix == ".csv" else pl.read_parquet(out)
    assert result.height == 497
    assert set(result.get_column("row").to_list()).isdisjoint(bad_rows)
    assert result.columns == [
        "row",
        "id",
        "churn_probability",
        "reason_code_1",
        "reason_code_2",
        "reason_code_3",
        "retention_action",
    ]
    report = (tmp_path / "out.rejected.csv").read_text()
    assert "forty" not in report and "not a finite number" in report
    assert not list(tmp_path.glob(".*partial"))
    # A rerun writes the same file, not a longer one.
    again = score_file(
        data, out, score=scorer.score, inputs=inputs(scorer), id_column="customer_id", request_rows=64, progress=False
    )
    assert again.scored == 497
    assert (pl.read_csv(out) if suffix == ".csv" else pl.read_parquet(out)).equals(result)


def test_scores_equal_single_call(
    scorer: ChurnScorer, customers: pl.DataFrame, customers_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "all.parquet"
    score_file(customers_path, out, score=scorer.score, inputs=inputs(scorer), request_rows=128, progress=False)
    bulk = pl.read_parquet(out).get_column("churn_probability").to_numpy()
    from tests.conftest import request_arrays

    direct = scorer.score(request_arrays(scorer, customers))["churn_probability"]
    assert bulk.shape == direct.shape
    assert abs(bulk - direct).max() < 1e-6


def test_missing_column_and_bad_file_are_one_sentence(scorer: ChurnScorer, tmp_path: Path) -> None:
    data = tmp_path / "few.csv"
    pl.DataFrame({"age": [30]}).write_csv(data)
    with pytest.raises(DataFileError, match="missing columns 'tenure_months'"):
        score_file(data, tmp_path / "o.csv", score=scorer.score, inputs=inputs(scorer), progress=False)
    assert not (tmp_path / "o.csv").exists()
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DataFileError, match="cannot be read as PARQUET"):
        score_file(junk, tmp_path / "o.csv", score=scorer.score, inputs=inputs(scorer), progress=False)
    (tmp_path / "x.txt").write_text("age\n1\n")
    with pytest.raises(DataFileError, match="unsupported file type '.txt'"):
        score_file(tmp_path / "x.txt", tmp_path / "o.csv", score=scorer.score, inputs=inputs(scorer), progress=False)
