"""The propensity family: trained as churn on a ';'-separated gzip CSV with a dropped column, its own outputs and
no retention actions; and the table reader's separator and gzip handling it relies on."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.demo.tables import CHURN_ID, CHURN_LABEL, churn_customers
from engine.errors import DataFileError, SchemaError, UsageError
from engine.families.churn import train_churn
from engine.families.propensity import PropensityScorer, PropensityTrainResult, train_propensity
from engine.serving.repository import ModelRepository
from engine.tables.io import csv_header, iter_batches, read_table, separator_of, write_table


def test_the_dropped_column_is_never_a_feature(propensity_trained: PropensityTrainResult) -> None:
    assert propensity_trained.dropped == ("tenure_months",)
    assert "tenure_months" not in propensity_trained.schema.names
    assert propensity_trained.schema.id_column == CHURN_ID
    assert propensity_trained.path.parent.name == "propensity"


def test_scores_are_probabilities_with_reasons_and_no_action(
    propensity_trained: PropensityTrainResult, offer_customers_path: Path
) -> None:
    scorer = PropensityScorer.load(propensity_trained.path)
    rows = read_table(offer_customers_path).head(200)
    out = scorer.score({c: rows.get_column(c).to_numpy() for c in scorer.schema.names})
    assert set(out) == {"propensity", "reason_codes"}
    p = out["propensity"]
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    assert out["reason_codes"].shape == (200, 3)
    assert set(out["reason_codes"].ravel()) - {""} <= set(scorer.schema.names)
    # The signal is learnt: those who took the offer score higher than those who did not.
    took = scorer.schema.labels(rows) == 1
    assert 0 < took.sum() < len(took)
    assert p[took].mean() > p[~took].mean() + 0.1


def test_a_gzip_semicolon_csv_trains_the_model_its_parquet_trains(tmp_path: Path) -> None:
    table = churn_customers(800, seed=21)
    table.write_parquet(tmp_path / "c.parquet")
    with gzip.open(tmp_path / "c.csv.gz", "wb") as fh:
        table.write_csv(fh, separator=";")
    a = train_propensity(tmp_path / "c.parquet", label=CHURN_LABEL, repo=ModelRepository(tmp_path / "a"), threads=1)
    b = train_propensity(tmp_path / "c.csv.gz", label=CHURN_LABEL, repo=ModelRepository(tmp_path / "b"), threads=1)
    assert a.schema.names == b.schema.names
    assert a.metrics.roc_auc == pytest.approx(b.metrics.roc_auc, abs=1e-6)


def test_propensity_and_churn_share_the_trainer(tmp_path: Path) -> None:
    """The same table and seed: the same trees and held-out figures, whichever family trains them."""
    churn_customers(700, seed=8).write_parquet(tmp_path / "c.parquet")
    repo = ModelRepository(tmp_path / "repo")
    a = train_churn(tmp_path / "c.parquet", label=CHURN_LABEL, repo=repo, threads=1)
    b = train_propensity(tmp_path / "c.parquet", label=CHURN_LABEL, repo=repo, threads=1)
    assert a.rounds == b.rounds and a.metrics == b.metrics


def test_a_drop_that_names_no_column_is_one_sentence(tmp_path: Path) -> None:
    churn_customers(200, seed=2).write_parquet(tmp_path / "c.parquet")
    with pytest.raises(SchemaError, match="--drop names no column 'durationn'"):
        train_propensity(tmp_path / "c.parquet", label=CHURN_LABEL, drop=["durationn"], repo=ModelRepository(tmp_path))


def test_a_bad_model_name_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must start with a letter"):
        train_propensity(tmp_path / "none.csv", label="y", name="../x", repo=ModelRepository(tmp_path))


def test_one_model_per_offer_under_its_own_name(tmp_path: Path) -> None:
    churn_customers(300, seed=4).write_parquet(tmp_path / "c.parquet")
    result = train_propensity(
        tmp_path / "c.parquet", label=CHURN_LABEL, name="propensity_card", repo=ModelRepository(tmp_path / "r")
    )
    assert result.path == tmp_path / "r" / "propensity_card" / "1"
    assert 'name: "propensity_card"' in (result.path.parent / "config.pbtxt").read_text()
    assert (result.path / "model.py").read_bytes() == (Path("model_repo/propensity/model.py")).read_bytes()


def test_the_command_prints_the_held_out_figures(tmp_path: Path) -> None:
    path = tmp_path / "c.csv.gz"
    write_table(churn_customers(400, seed=6), path)
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "train", "propensity", "--data", str(path), "--label", CHURN_LABEL]
        + ["--drop", "region", "--repo", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "propensity version 1 written" in run.stdout and "dropped: region" in run.stdout
    assert "ROC-AUC" in run.stdout


@pytest.mark.parametrize(
    ("header", "sep"), [(b"a;b;c", ";"), (b"a,b,c", ","), (b"a\tb", "\t"), (b'"x;y",b,c', ","), (b"a|b", "|")]
)
def test_the_separator_is_read_off_the_header(header: bytes, sep: str) -> None:
    assert separator_of(header) == sep


def test_a_semicolon_gzip_csv_reads_whole_streamed_and_by_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'age;job;y\n30;"admin.";no\n41;"blue-collar; night";yes\n')
    df = read_table(path)
    assert df.columns == ["age", "job", "y"] and df.height == 2
    assert df.get_column("job").to_list() == ["admin.", "blue-collar; night"]
    assert csv_header(path) == ["age", "job", "y"]
    streamed = pl.concat([pl.from_arrow(b) for b in iter_batches(path)])  # type: ignore[misc]
    assert streamed.get_column("age").to_list() == ["30", "41"]


def test_a_semicolon_csv_streams_with_its_separator(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a;b\n1;x\n2;y\n")
    assert csv_header(path) == ["a", "b"]
    batches = list(iter_batches(path))
    assert batches[0].schema.names == ["a", "b"] and sum(b.num_rows for b in batches) == 2


def test_a_file_named_gz_that_is_not_gzip_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataFileError, match="cannot be read as CSV"):
        read_table(path)
    with pytest.raises(DataFileError, match="cannot be read as CSV"):
        list(iter_batches(path))


def test_write_table_compresses_a_csv_gz(tmp_path: Path) -> None:
    path = write_table(pl.DataFrame({"a": [1, 2]}), tmp_path / "out.csv.gz")
    assert gzip.decompress(path.read_bytes()) == b"a\n1\n2\n"
