"""Training fraud: canonical columns → transaction kernels → time-split XGBoost → a served version with state.

Features are computed from every row of the file before each transaction, whatever the periods below. The split
follows the Fraud Detection Handbook: a training period, a gap as long as it takes labels to arrive, then a test
period. Two protocols are trained and scored on the same test rows:

- **handbook**: trained on the training period alone (the Handbook's week), as its published baselines are;
- **operator**: every earlier day whose labels are known by the test period, after a warm-up of
  :data:`WARMUP_DAYS` days (the longest feature window, so every row trained on has full windows): the mean, in
  margins, of a model trained on that whole history and the training period's model (:func:`mean_booster`:
  one booster, served and explained as any other). This is the model the version serves.

The test rows are the Handbook's: a card is left out of a test day once one of its frauds, from the training
period's first day on, had its label arrive before that day began (the training period's frauds, then each day
of the gap as the test days advance), as a bank would have blocked it. Early stopping and the decision thresholds
use the last quarter of each training period; the final model is refitted on the whole period with the number
of trees early stopping chose.

The version also holds the server's starting state: every transaction of the file, replayed through
:class:`engine.families.fraud.state.FraudState` with its label, so the first authorization served has its history.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from engine.device import Device, polars_engine, xgboost_device
from engine.errors import SchemaError
from engine.families.contract import TrainResult, model_config, publish_version
from engine.families.fraud.data import FraudColumns, canonical
from engine.families.fraud.scorer import (
    AUTHORIZATION,
    CODES,
    INITIAL_STATE,
    KEY_FILE,
    MODEL_FILE,
    OUTPUTS,
    PARAMS_FILE,
)
from engine.families.fraud.state import FraudState
from engine.families.metrics import FraudMetrics, best_f1_threshold, fraud_metrics
from engine.families.twin import decode_parameter
from engine.security.erasure import without_erased
from engine.security.trail import Trail
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table
from kernels.transactions import DAY_US, feature_names, transaction_features

__all__ = [
    "WARMUP_DAYS",
    "FraudTrainResult",
    "Protocol",
    "Split",
    "fraud_config",
    "mean_booster",
    "replay_state",
    "train_fraud",
    "transaction_matrix",
]

MODEL_NAME = "fraud"
XGB_PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "aucpr",
    "tree_method": "hist",
    "max_depth": 4,
    "eta": 0.1,
    "min_child_weight": 1,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
}
MAX_ROUNDS = 600
EARLY_STOPPING = 50
#: Decline only where validation precision reaches this; below it, review.
DECLINE_PRECISION = 0.9
#: Days of history before the operator protocol's training starts: the longest window of the features.
WARMUP_DAYS = 30


def _iso(day: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()


@dataclass(frozen=True)
class Split:
    """Days (since the Unix epoch) of the training period, the gap and the test period."""

    train_start: int
    train_days: int = 7
    gap_days: int = 7
    test_days: int = 7

    @property
    def test_start(self) -> int:
        return self.train_start + self.train_days + self.gap_days

    def describe(self) -> str:
        return (
            f"train {_iso(self.train_start)}..{_iso(self.train_start + self.train_days - 1)}, "
            f"gap {self.gap_days} d, test {_iso(self.test_start)}..{_iso(self.test_start + self.test_days - 1)}"
        )


@dataclass(frozen=True)
class Protocol:
    """One way of training, scored on the split's test rows: its training days (inclusive) and figures."""

    name: str
    train_from: int
    train_to: int
    trained_rows: int
    rounds: int
    metrics: FraudMetrics | None
    #: The model is the mean of one trained on the whole period and the training period's (Handbook's week's).
    with_week: bool = False

    def describe(self) -> str:
        mean = ", averaged with the training period's model" if self.with_week else ""
        return f"trained on {_iso(self.train_from)}..{_iso(self.train_to)} ({self.trained_rows:,} transactions{mean})"

    def as_dict(self) -> dict[str, object]:
        return {
            **(self.metrics.as_dict() if self.metrics else {}),
            "train_from": _iso(self.train_from),
            "train_to": _iso(self.train_to),
            "trained_rows": self.trained_rows,
            "rounds": self.rounds,
            "with_week": self.with_week,
        }


@dataclass(frozen=True)
class FraudTrainResult(TrainResult):
    #: The served model's figures: the operator protocol's.
    metrics: FraudMetrics | None
    split: Split
    rows: dict[str, int]
    rounds: int
    thresholds: dict[str, float]
    #: ``handbook`` and ``operator``, in that order.
    protocols: tuple[Protocol, ...] = ()


def fraud_config(*, device: Device = "cpu") -> ModelConfig:
    """The served ``fraud`` model's config. One instance: the state lives in that process (several servers
    share it through Redis instead, see :mod:`engine.families.fraud.redis_state`)."""
    parameters = {"decode": decode_parameter(CODES)}
    return model_config(MODEL_NAME, AUTHORIZATION, OUTPUTS, device=device, instance_count=1, parameters=parameters)


def transaction_matrix(features: pl.DataFrame) -> np.ndarray:
    """The model's feature matrix (float32, :func:`kernels.transactions.feature_names` order)."""
    return features.select(feature_names()).to_numpy().astype(np.float32)


def replay_state(tx: pl.DataFrame, *, delay_us: int, secret: bytes) -> FraudState:
    """The server's state after every transaction of ``tx`` (canonical columns), in time order."""
    state = FraudState(delay_us=delay_us, secret=secret)
    ordered = tx.with_row_index("_row").sort("time", "_row")
    labels = ordered["label"].to_list() if "label" in ordered.columns else [None] * ordered.height
    rows = zip(
        ordered["transaction_id"].to_list(),
        ordered["card"].to_list(),
        ordered["terminal"].to_list(),
        ordered["amount"].to_list(),
        ordered["time"].to_list(),
        labels,
        strict=True,
    )
    for txid, card, terminal, amount, when, label in rows:
        state.authorize(txid, card, terminal, amount, when)
        if label:
            state.report(txid, 1)
    if ordered.height:
        state.prune_labels(int(ordered["time"][-1]))
    return state


def _thresholds(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    review = best_f1_threshold(y, p)
    order = np.argsort(-p, kind="stable")
    precision = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
    ok = np.flatnonzero(precision >= DECLINE_PRECISION)
    decline = float(p[order][ok[-1]]) if len(ok) else 1.0
    return {"review": float(min(review, decline)), "decline": max(decline, review)}


def _parse_day(text: str) -> int:
    try:
        return (date.fromisoformat(text) - date(1970, 1, 1)).days
    except ValueError:
        msg = f"--train-start must be a date such as 2018-07-25, got {text!r}"
        raise SchemaError(msg) from None


def _known_fraud_cards(frame: pl.DataFrame, delay_us: int, *, since_us: int) -> pl.Expr:
    """Rows whose card had a fraud from ``since_us`` on whose label arrived (the delay after it) before the row's
    day began: the Handbook's known compromised cards, counted from its training period's first day."""
    frauds = frame.filter((pl.col("label") == 1) & (pl.col("time") >= since_us))
    first = frauds.group_by("card").agg(pl.col("time").min().alias("_first_fraud"))
    known = dict(zip(first["card"].to_list(), first["_first_fraud"].to_list(), strict=True))
    day_start = (pl.col("time") // DAY_US) * DAY_US
    first_fraud = pl.col("card").replace_strict(known, default=None, return_dtype=pl.Int64)
    return first_fraud.is_not_null() & (first_fraud < day_start - delay_us)


@dataclass(frozen=True)
class _Fit:
    """A model trained on one period: the final booster (refitted on the whole period), the early-stopping probe
    (trained before the period's last quarter, cut at its best round), the validation rows and thresholds."""

    booster: xgb.Booster
    probe: xgb.Booster
    rounds: int
    val: pl.DataFrame
    thresholds: dict[str, float]
    trained: int


def _fit(train: pl.DataFrame, params: dict[str, object], *, where: str) -> _Fit:
    """XGBoost on ``train`` (rows with ``_day``): early stopping and thresholds on its last quarter of days, then
    refitted on all of it."""
    first, last = int(train["_day"].min()), int(train["_day"].max())  # type: ignore[arg-type]
    days = last - first + 1
    val_from = first + days - max(1, days // 4)
    day = pl.col("_day")
    fit, val = train.filter(day < val_from), train.filter(day >= val_from)
    if fit["label"].sum() < 5 or val["label"].sum() < 1:
        msg = f"too few frauds in the training period ({where}) to train on"
        raise SchemaError(msg)
    dval = _dmatrix(val)
    probe = xgb.train(
        params, _dmatrix(fit), MAX_ROUNDS, evals=[(dval, "validation")], early_stopping_rounds=EARLY_STOPPING,
        verbose_eval=False,
    )  # fmt: skip
    rounds = probe.best_iteration + 1
    probe = probe[:rounds]
    thresholds = _thresholds(val["label"].to_numpy(), probe.predict(dval))
    return _Fit(xgb.train(params, _dmatrix(train), rounds), probe, rounds, val, thresholds, train.height)


def _dmatrix(frame: pl.DataFrame) -> xgb.DMatrix:
    return xgb.DMatrix(transaction_matrix(frame), label=frame["label"].to_numpy(), feature_names=feature_names())


def mean_booster(a: xgb.Booster, b: xgb.Booster) -> xgb.Booster:
    """One booster whose margin is the mean of ``a``'s and ``b``'s (binary logistic models on the same
    features): both tree lists with every leaf halved, and the base margin the mean of theirs. Served as any
    booster is, and its TreeSHAP contributions are the mean of the two models' (tests check both)."""
    ja, jb = json.loads(a.save_raw("json")), json.loads(b.save_raw("json"))
    model, other = ja["learner"]["gradient_booster"]["model"], jb["learner"]["gradient_booster"]["model"]

    def halved(tree: dict[str, Any]) -> dict[str, Any]:
        leaf = [child == -1 for child in tree["left_children"]]
        return {
            **tree,
            "split_conditions": [
                v * 0.5 if is_leaf else v for v, is_leaf in zip(tree["split_conditions"], leaf, strict=True)
            ],
            "base_weights": [v * 0.5 for v in tree["base_weights"]],
        }

    trees = [halved(t) for t in (*model["trees"], *other["trees"])]
    for i, tree in enumerate(trees):
        tree["id"] = i
    model["trees"], model["tree_info"] = trees, [0] * len(trees)
    model["gbtree_model_param"]["num_trees"] = str(len(trees))
    model["iteration_indptr"] = list(range(len(trees) + 1))

    def logit(text: str) -> float:
        p = float(text.strip("[]"))
        return math.log(p / (1 - p))

    param, other_param = ja["learner"]["learner_model_param"], jb["learner"]["learner_model_param"]
    margin = (logit(param["base_score"]) + logit(other_param["base_score"])) / 2
    score = f"{1 / (1 + math.exp(-margin)):.9E}"
    param["base_score"] = f"[{score}]" if param["base_score"].startswith("[") else score
    merged = xgb.Booster()
    merged.load_model(bytearray(json.dumps(ja).encode("utf-8")))
    return merged


def _scored(booster: xgb.Booster, test: pl.DataFrame) -> FraudMetrics | None:
    if not (test.height and 0 < test["label"].sum() < test.height):
        return None
    p = booster.predict(xgb.DMatrix(transaction_matrix(test), feature_names=feature_names()))
    return fraud_metrics(test["_day"].to_numpy(), test["card"].to_numpy(), test["label"].to_numpy(), p, k=100)


def train_fraud(
    data: str | os.PathLike[str],
    *,
    columns: FraudColumns,
    delay_us: int = 7 * DAY_US,
    train_start: str | None = None,
    train_days: int = 7,
    gap_days: int = 7,
    test_days: int = 7,
    keep_known_cards: bool = False,
    repo: ModelRepository | None = None,
    seed: int = 42,
    device: Device = "cpu",
    threads: int | None = None,
) -> FraudTrainResult:
    """Train a fraud model on ``data`` and write it, with its starting state, as the next version in ``repo``."""
    started = time.perf_counter()
    if columns.label is None:
        msg = "training needs the fraud label column (--label)"
        raise SchemaError(msg)
    repo = repo or ModelRepository()
    tx = canonical(read_table(data), columns, source=str(data))
    # A card erased with `finscore forget` stays erased: neither trained on nor in the state the version starts
    # from, even when the file still holds it.
    tx, erased_rows, erased_cards = without_erased(tx, "card", Trail.from_env())
    feats = transaction_features(tx.lazy(), delay_us=delay_us, engine=polars_engine(device)).collect()
    feats = feats.with_columns((pl.col("time") // DAY_US).alias("_day"))
    first_day = int(feats["_day"].min())  # type: ignore[arg-type]
    split = Split(_parse_day(train_start) if train_start else first_day, train_days, gap_days, test_days)
    day = pl.col("_day")
    labelled = pl.col("label").is_not_null()
    train_end = split.train_start + train_days - 1

    test = feats.filter(day.is_between(split.test_start, split.test_start + test_days - 1) & labelled)
    excluded = 0
    if not keep_known_cards and test.height:
        known = test.select(_known_fraud_cards(feats, delay_us, since_us=split.train_start * DAY_US)).to_series()
        excluded = int(known.sum())
        test = test.filter(~known)

    params = {**XGB_PARAMS, "seed": seed, "device": xgboost_device(device), "nthread": threads or os.cpu_count() or 1}
    week = _fit(
        feats.filter(day.is_between(split.train_start, train_end) & labelled),
        params,
        where=f"{split.describe()} of {data}",
    )
    protocols = [
        Protocol("handbook", split.train_start, train_end, week.trained, week.rounds, _scored(week.booster, test))
    ]
    # The operator's training starts after the warm-up (or with the Handbook's week, if that comes first). Its
    # model is the mean (in margins) of one trained on that whole history and the week's: the history knows every
    # pattern seen, the week what is happening now; either alone ranks the test rows worse (README: measured).
    start = min(first_day + WARMUP_DAYS, split.train_start)
    served = week
    if start < split.train_start:
        history = _fit(
            feats.filter(day.is_between(start, train_end) & labelled),
            params,
            where=f"{_iso(start)}..{_iso(train_end)} of {data}",
        )
        # Thresholds on the week's validation days, which neither probe trained on.
        probe = mean_booster(history.probe, week.probe)
        thresholds = _thresholds(week.val["label"].to_numpy(), probe.predict(_dmatrix(week.val)))
        served = _Fit(
            mean_booster(history.booster, week.booster),
            probe,
            history.rounds + week.rounds,
            week.val,
            thresholds,
            history.trained,
        )
    with_week = served is not week
    protocols.append(
        Protocol("operator", start, train_end, served.trained, served.rounds, _scored(served.booster, test), with_week)
    )
    booster, rounds, thresholds, validation, trained = (
        served.booster,
        served.rounds,
        served.thresholds,
        served.val.height,
        served.trained,
    )
    metrics = protocols[-1].metrics

    key_path = repo.model_dir(MODEL_NAME) / KEY_FILE
    key_path.parent.mkdir(parents=True, exist_ok=True)
    if not key_path.is_file():
        key_path.write_bytes(secrets.token_bytes(32))
        key_path.chmod(0o600)
    state = replay_state(tx, delay_us=delay_us, secret=key_path.read_bytes())

    writer = repo.new_version(MODEL_NAME)
    booster.save_model(writer.path / MODEL_FILE)
    state.snapshot(writer.path / INITIAL_STATE)
    rows = {
        "train": trained,
        "validation": validation,
        "test": test.height,
        "test_known_cards_left_out": excluded,
        "history": tx.height,
        "erased_left_out": erased_rows,
        "erased_cards": len(erased_cards),
    }
    body = {
        "features": feature_names(),
        "delay_us": delay_us,
        "thresholds": thresholds,
        "rounds": rounds,
        "seed": seed,
        "columns": columns.as_dict(),
        "split": split.__dict__,
        "protocols": {p.name: p.as_dict() for p in protocols},
        "rows": rows,
        "xgboost": XGB_PARAMS,
        "metrics": metrics.as_dict() if metrics else None,
    }
    (writer.path / PARAMS_FILE).write_text(json.dumps(body, indent=2), encoding="utf-8")
    figures = {
        **(metrics.as_dict() if metrics else {}),
        "test_transactions": test.height,
        "test_frauds": int(test["label"].sum()) if test.height else 0,
        "split": split.describe(),
        "label_delay_us": delay_us,
        "protocols": {p.name: p.as_dict() for p in protocols},
    }
    final = publish_version(writer, fraud_config(device=device), figures)
    seconds = time.perf_counter() - started
    return FraudTrainResult(
        writer.version, final, metrics, seconds, split, rows, rounds, thresholds, protocols=tuple(protocols)
    )
