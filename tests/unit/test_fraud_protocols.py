"""The fraud evaluation protocols: the Handbook's test rows exactly, and the operator's longer training.

The Handbook's rule is restated here the way its ``get_train_test_set`` builds it, day by day (known cards: the
training period's frauds, then the frauds of each gap day as the test days advance), and compared with the
rule ``train_fraud`` applies, on generated transactions with frauds before, during and after the training week.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.demo.transactions import synthetic_transactions
from engine.families.fraud import FraudColumns
from engine.families.fraud.data import canonical
from engine.families.fraud.train import WARMUP_DAYS, _known_fraud_cards
from engine.serving.repository import ModelRepository
from kernels.transactions import DAY_US

COLUMNS = FraudColumns("card_id", "timestamp", "amount", "is_fraud", "terminal_id", "transaction_id")


def handbook_test_rows(
    tx: pl.DataFrame, *, train_start: int, train_days: int, delay_days: int, test_days: int
) -> set[str]:
    """The Handbook's ``get_train_test_set``, restated: the transaction ids of its test set."""
    day = tx["time"] // DAY_US
    tx = tx.with_columns(day.alias("day"))
    train = tx.filter(pl.col("day").is_between(train_start, train_start + train_days - 1))
    known = set(train.filter(pl.col("label") == 1)["card"].to_list())
    kept: set[str] = set()
    for i in range(test_days):
        test_day = tx.filter(pl.col("day") == train_start + train_days + delay_days + i)
        delay_day = tx.filter(pl.col("day") == train_start + train_days + i - 1)
        known |= set(delay_day.filter(pl.col("label") == 1)["card"].to_list())
        kept |= set(test_day.filter(~pl.col("card").is_in(list(known)))["transaction_id"].to_list())
    return kept


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    """40 days: frauds before the training week (which the Handbook does not count as known), in it, and in the
    gap."""
    return synthetic_transactions(cards=400, terminals=800, days=40, seed=11)


@pytest.mark.parametrize("delay_days", [7, 3])
def test_the_test_rows_are_the_handbooks(history: pl.DataFrame, delay_days: int) -> None:
    tx = canonical(history, COLUMNS)
    first = int(tx["time"].min()) // DAY_US  # type: ignore[operator]
    train_start, train_days, test_days = first + 20, 7, 7
    test_start = train_start + train_days + delay_days
    test = tx.filter((pl.col("time") // DAY_US).is_between(test_start, test_start + test_days - 1))
    known = test.select(_known_fraud_cards(tx, delay_days * DAY_US, since_us=train_start * DAY_US)).to_series()
    ours = set(test.filter(~known)["transaction_id"].to_list())
    theirs = handbook_test_rows(
        tx, train_start=train_start, train_days=train_days, delay_days=delay_days, test_days=test_days
    )
    assert ours == theirs
    # The rule matters here: some test rows are left out, and some cards with a fraud before the training week
    # (known to a bank, not to the Handbook's protocol) stay in.
    assert 0 < int(known.sum()) < test.height
    early = set(tx.filter((pl.col("label") == 1) & (pl.col("time") < train_start * DAY_US))["card"].to_list())
    assert early & set(test.filter(~known)["card"].to_list())


def test_both_protocols_are_trained_printed_and_kept(
    history: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    data = tmp_path / "tx.parquet"
    history.write_parquet(data)
    first = history["timestamp"].min().date()  # type: ignore[union-attr]
    start = (np.datetime64(first) + np.timedelta64(WARMUP_DAYS + 2, "D")).astype(str)
    repo = tmp_path / "repo"
    argv = ["train", "fraud", "--data", str(data), "--label", "is_fraud", "--time", "timestamp", "--card", "card_id",
            "--terminal", "terminal_id", "--id", "transaction_id", "--label-delay", "1d", "--train-start", start,
            "--train-days", "3", "--gap-days", "1", "--test-days", "3", "--repo", str(repo)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    version = ModelRepository(repo).latest("fraud")
    kept = json.loads((version / "metrics.json").read_text())
    handbook, operator = kept["protocols"]["handbook"], kept["protocols"]["operator"]
    # The operator's training starts after the warm-up: every labelled day from there to the gap.
    warm = (np.datetime64(first) + np.timedelta64(WARMUP_DAYS, "D")).astype(str)
    assert (handbook["train_from"], operator["train_from"]) == (start, warm)
    assert handbook["train_to"] == operator["train_to"]
    assert operator["trained_rows"] > handbook["trained_rows"]
    # The operator's model is the mean of the whole history's and the week's: both models' trees.
    assert (operator["with_week"], handbook["with_week"]) == (True, False), (operator, handbook)
    assert operator["rounds"] > handbook["rounds"]
    # Both scored on the same test rows; the version's own figures are the operator's (the model it serves).
    assert handbook["rows"] == operator["rows"] == kept["test_transactions"]
    assert kept["roc_auc"] == operator["roc_auc"]
    assert "handbook protocol" in out and "operator protocol" in out
    assert f"trained on {operator['train_from']}..{operator['train_to']}" in out
    assert "averaged with the training period's model" in out


def test_the_mean_booster_scores_and_explains_as_the_mean_of_its_two() -> None:
    import xgboost as xgb

    from engine.families.fraud.train import mean_booster

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=3000) > 1).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "tree_method": "hist"}
    a = xgb.train(params, xgb.DMatrix(x[:2000], label=y[:2000]), 30)
    b = xgb.train({**params, "max_depth": 3}, xgb.DMatrix(x[1000:], label=y[1000:]), 17)
    both = mean_booster(a, b)
    d = xgb.DMatrix(x)
    margins = (a.predict(d, output_margin=True) + b.predict(d, output_margin=True)) / 2
    np.testing.assert_allclose(both.predict(d, output_margin=True), margins, atol=1e-5)
    np.testing.assert_allclose(both.predict(d), 1 / (1 + np.exp(-margins)), atol=1e-6)
    contribs = (a.predict(d, pred_contribs=True) + b.predict(d, pred_contribs=True)) / 2
    np.testing.assert_allclose(both.predict(d, pred_contribs=True), contribs, atol=1e-5)
    assert both.num_boosted_rounds() == 47
