"""Scoring authorizations: features from the kept state, XGBoost, reason codes and a decision.

:class:`FraudScorer` is what the served ``fraud`` model runs and what in-process scoring uses. A batch of
authorizations is checked whole before any of it touches the state (a bad request changes nothing), then
each row's features are computed in arrival order, each seeing the rows before it, and the batch is
predicted in one call. A request carrying ``label`` reports the fraud label of an earlier authorization; one
carrying ``card_id`` and ``forget`` = 1 erases those cards from the state (``finscore forget``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xgboost as xgb

from engine.device import Device, xgboost_device
from engine.errors import InvalidInputError, ModelNotReadyError
from engine.families.contract import N_REASONS, load_version, reason_names, top_indices
from engine.families.fraud.redis_state import RedisFraudState
from engine.families.fraud.state import FraudState
from engine.serving.config import TensorSpec
from engine.serving.metrics import Monitored
from engine.settings import resolve_settings
from kernels.forest import Forest
from kernels.pathshap import leaf_tables, path_contributions, table_contributions
from kernels.transactions import feature_names

__all__ = [
    "ANSWERS",
    "AUTHORIZATION",
    "CODES",
    "FORGOTTEN",
    "INITIAL_STATE",
    "KEY_FILE",
    "LIVE_STATE",
    "MODEL_FILE",
    "OUTPUTS",
    "PARAMS_FILE",
    "UNKNOWN",
    "FraudScorer",
]

log = logging.getLogger("finscore.fraud")

MODEL_FILE = "model.ubj"
PARAMS_FILE = "fraud.json"
INITIAL_STATE = "state.json.gz"
#: Kept beside the versions: the state a running server snapshots, restored by the next load of any version.
LIVE_STATE = "state/live.json.gz"
KEY_FILE = "card-key.bin"
DECISIONS = ("approve", "review", "decline")
#: The decision answering a forget request: the card was held and is erased, or it was not held.
FORGOTTEN, UNKNOWN = "forgotten", "unknown"

#: The inputs of one authorization (``transaction_id`` is required there, see :meth:`FraudScorer.validate`);
#: ``label`` alone with ``transaction_id`` reports a fraud label; ``forget`` = 1 alone with ``card_id`` erases
#: those cards.
AUTHORIZATION = (
    TensorSpec("transaction_id", "BYTES", optional=True),
    TensorSpec("card_id", "BYTES", optional=True),
    TensorSpec("terminal_id", "BYTES", optional=True),
    TensorSpec("amount", "FP64", optional=True),
    TensorSpec("timestamp", "INT64", optional=True),
    TensorSpec("label", "INT32", optional=True),
    TensorSpec("forget", "INT32", optional=True),
)
#: Every decision the model answers: an authorization's three, a label report's, a forget request's two.
ANSWERS = (*DECISIONS, "recorded", FORGOTTEN, UNKNOWN)
#: The numbers answered beside the texts, each an INT32 index into names the config publishes (``decode``):
#: a text output costs the python backend a Python object per value on each side, and the client decodes these
#: in one NumPy call. ``FraudClient`` asks for these.
CODES = {"decision_code": ("decision", ANSWERS), "reason_index": ("reason_codes", tuple(feature_names()))}
OUTPUTS = (
    TensorSpec("fraud_probability", "FP32", (1,)),
    TensorSpec("reason_codes", "BYTES", (N_REASONS,)),
    TensorSpec("decision", "BYTES", (1,)),
    TensorSpec("features", "FP64", (len(feature_names()),)),
    TensorSpec("decision_code", "INT32", (1,)),
    TensorSpec("reason_index", "INT32", (N_REASONS,)),
)
_ANSWERS = np.array(ANSWERS, dtype=object)
_REQUIRED = ("card_id", "amount", "timestamp")


def _starting_state(version: Path, live: Path, delay_us: int, secret: bytes) -> FraudState:
    """The live state snapshotted by an earlier load of any version, else the version's own starting state."""
    if live.is_file():
        state = FraudState.restore(live, secret=secret)
        if state.delay_us == delay_us:
            return state
        log.warning("live state %s has another label delay than version %s: starting from its own", live, version.name)
    return FraudState.restore(version / INITIAL_STATE, secret=secret)


def _validate_forget(present: Mapping[str, np.ndarray]) -> dict[str, object]:
    """A forget request: ``card_id`` and ``forget`` = 1 on every row, nothing else (so no authorization or
    label report is ever taken for one, nor one for them)."""
    extra = sorted(set(present) - {"card_id", "forget"})
    if extra:
        msg = f"input {extra[0]!r} cannot come with 'forget': a forget request carries card_id and forget only"
        raise InvalidInputError(msg)
    if "card_id" not in present:
        msg = "input 'card_id' is missing from the request (a forget request names the cards to erase)"
        raise InvalidInputError(msg)
    cards = _text(present["card_id"], "card_id")
    flags = present["forget"].ravel()
    if flags.size != len(cards):
        msg = f"input 'forget' has {flags.size} rows but 'card_id' has {len(cards)}"
        raise InvalidInputError(msg)
    if not np.issubdtype(flags.dtype, np.integer) or (flags != 1).any():
        msg = "input 'forget' must be 1 on every row (it asks to erase the row's card)"
        raise InvalidInputError(msg)
    return {"kind": "forget", "card_id": cards}


#: The longest id the state keeps: ids are remembered for weeks, so a client sending megabyte ids would grow
#: the server by a megabyte an authorization.
MAX_ID_BYTES = 256


def _text(values: np.ndarray, name: str) -> list[str]:
    out = []
    for v in values.ravel().tolist():
        raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
        if not raw:
            msg = f"input {name!r} must not be empty"
            raise InvalidInputError(msg)
        if len(raw) > MAX_ID_BYTES:
            msg = f"input {name!r} holds a value of {len(raw):,} bytes; ids are at most {MAX_ID_BYTES} bytes"
            raise InvalidInputError(msg)
        out.append(raw.decode("utf-8", "replace"))
    return out


class FraudScorer:
    """A trained fraud version and the state it scores from."""

    def __init__(
        self,
        booster: xgb.Booster,
        params: Mapping[str, object],
        state: FraudState | RedisFraudState,
        *,
        device: Device = "cpu",
        version: str = "",
        live_state: Path | None = None,
    ) -> None:
        self.booster = booster
        self.params = dict(params)
        thresholds = params["thresholds"]
        assert isinstance(thresholds, Mapping)
        self.review = float(thresholds["review"])
        self.decline = float(thresholds["decline"])
        self.state = state
        self.device = device
        self.version = version
        self.live_state = live_state
        self.names = feature_names()
        self.booster.set_param({"device": xgboost_device(device), "nthread": 1})
        # On the CPU a few rows are predicted by walking the flattened trees (kernels.forest): XGBoost's own
        # predictor costs hundreds of microseconds a call, whatever the rows. The GPU keeps XGBoost's.
        self._forest = _forest(self.booster, len(self.names)) if device == "cpu" else None
        # A flagged row's reasons: TreeSHAP read from tables of the trees' leaves where the trees are shallow.
        self._tables = leaf_tables(self._forest) if self._forest is not None else None

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu") -> FraudScorer:
        """Load a version written by :func:`engine.families.fraud.train.train_fraud`, with the live state if one was
        snapshotted (by an earlier load of any version), else the version's starting state; or, where
        ``FINSCORE_FRAUD_REDIS`` names a Redis server, with the state shared there (filled from the same
        starting state if empty)."""

        def read(d: Path) -> tuple[xgb.Booster, dict[str, Any], bytes]:
            booster = xgb.Booster()
            booster.load_model(d / MODEL_FILE)
            params = json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))
            return booster, params, (d.parent / KEY_FILE).read_bytes()

        booster, params, secret = load_version(
            version_dir, family="fraud", model_file=MODEL_FILE, read=read, errors=(xgb.core.XGBoostError,)
        )
        d = Path(version_dir)
        if params.get("features") != feature_names():
            msg = f"{d} was trained on other features than this finscore computes; retrain with `finscore train fraud`"
            raise ModelNotReadyError(msg)
        live = d.parent / LIVE_STATE
        delay_us = int(params["delay_us"])
        url = resolve_settings().fraud_redis
        state: FraudState | RedisFraudState
        if url:
            state = RedisFraudState.connect(
                url, delay_us=delay_us, secret=secret, seed=lambda: _starting_state(d, live, delay_us, secret)
            )
        else:
            state = _starting_state(d, live, delay_us, secret)
        return cls(booster, params, state, device=device, version=d.name, live_state=live)

    def snapshot(self) -> Path | None:
        """Write the live state beside the versions (what the next load restores)."""
        return self.state.snapshot(self.live_state) if self.live_state is not None else None

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS
    #: What the served model's metrics watch (:mod:`engine.serving.metrics`): the decision by its code.
    #: The input naming the person a row is about, pseudonymised in the served model's sample.
    SUBJECTS: ClassVar[tuple[str, ...]] = ("card_id",)
    monitored: ClassVar[Monitored] = Monitored("fraud_probability", decision="decision_code", names=ANSWERS)

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(AUTHORIZATION)

    def validate(self, columns: Mapping[str, object]) -> dict[str, object]:
        """Check one request: an authorization batch, a label report or a forget request. Raises
        :class:`InvalidInputError`."""
        present = {k: np.asarray(v) for k, v in columns.items() if v is not None}
        if "forget" in present:
            return _validate_forget(present)
        if "transaction_id" not in present:
            msg = "input 'transaction_id' is missing from the request"
            raise InvalidInputError(msg)
        txids = _text(present["transaction_id"], "transaction_id")
        n = len(txids)
        for name, arr in present.items():
            if arr.size != n:
                msg = f"input {name!r} has {arr.size} rows but 'transaction_id' has {n}"
                raise InvalidInputError(msg)
        if "label" in present:
            labels = present["label"].ravel().astype(np.int64).tolist()
            self.state.check_labels(txids, labels)
            return {"kind": "label", "transaction_id": txids, "label": labels}
        missing = [name for name in _REQUIRED if name not in present]
        if missing:
            msg = (
                f"input {missing[0]!r} is missing from the request (an authorization needs card_id, amount, timestamp)"
            )
            raise InvalidInputError(msg)
        amount = present["amount"].ravel().astype(np.float64)
        if not np.isfinite(amount).all():
            msg = "input 'amount' must be a finite number (NaN or infinity sent)"
            raise InvalidInputError(msg)
        terminal = _text(present["terminal_id"], "terminal_id") if "terminal_id" in present else [""] * n
        rows = {
            "kind": "authorization",
            "transaction_id": txids,
            "card_id": _text(present["card_id"], "card_id"),
            "terminal_id": terminal,
            "amount": amount.tolist(),
            "timestamp": present["timestamp"].ravel().astype(np.int64).tolist(),
        }
        return rows

    def features(self, rows: Mapping[str, object]) -> np.ndarray:
        """Features of a validated authorization batch, each row recorded into the state after it is read."""
        return self.state.authorize_batch(
            rows["transaction_id"],  # type: ignore[arg-type]
            rows["card_id"],  # type: ignore[arg-type]
            rows["terminal_id"],  # type: ignore[arg-type]
            rows["amount"],  # type: ignore[arg-type]
            rows["timestamp"],  # type: ignore[arg-type]
        )

    def score_rows(self, rows: Mapping[str, Any], *, outputs: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Score a validated authorization batch (each row recorded into the state after it is read)."""
        return self.score_features(self.features(rows), outputs=outputs)

    def score_features(self, x: np.ndarray, *, outputs: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Probability, decision and reasons for feature rows (``x`` as :meth:`features` returns).

        Reason codes (XGBoost's TreeSHAP: the three features that raise the score most) are given for the
        rows the decision flags, review or decline; an approval carries none. TreeSHAP costs twice the
        prediction itself, and an approval is what nobody asks the reasons of, in the authorization path.
        """
        wanted = set(outputs or (o.name for o in OUTPUTS))
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        # The grade is the decision's index into ANSWERS: 0 approve, 1 review, 2 decline.
        if self._forest is not None:
            prob, grade = self._forest.graded(x32, self.review, self.decline)
        else:
            prob = self.booster.inplace_predict(x32, validate_features=False).astype(np.float32).reshape(-1)
            grade = (prob >= self.review).astype(np.int32)
            grade[prob >= self.decline] = 2
        out: dict[str, np.ndarray] = {"fraud_probability": prob, "decision_code": grade, "features": x}
        if "decision" in wanted:
            out["decision"] = _ANSWERS[grade]
        if wanted & {"reason_codes", "reason_index"}:
            index = np.full((len(x), N_REASONS), -1, dtype=np.int32)
            flagged = np.flatnonzero(prob >= self.review) if grade.any() else ()  # no grade: nothing reaches review
            if len(flagged):
                index[flagged] = top_indices(self.contributions(x32[flagged]), positive=True)
            out["reason_index"] = index
            if "reason_codes" in wanted:
                out["reason_codes"] = reason_names(index, self.names)
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions ``[rows, features]`` (no bias column) of feature rows: on the CPU read from the
        leaves' tables (:func:`kernels.pathshap.table_contributions`: a row of 353 trees 136-222 µs) or walked
        over the flattened trees (:func:`kernels.pathshap.path_contributions`, 588-851 µs; XGBoost's own costs a
        ``DMatrix`` and a ``predict``, 0.7-0.9 ms for 92 trees), else XGBoost's own."""
        if self._forest is not None and self._tables is not None:
            return table_contributions(self._forest, self._tables, x)
        if self._forest is not None:
            return path_contributions(self._forest, x)
        dm = xgb.DMatrix(np.ascontiguousarray(x, dtype=np.float32), feature_names=self.names)
        return self.booster.predict(dm, pred_contribs=True, validate_features=False)[:, :-1]

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate, compute features (updating the state) and predict one authorization batch; a label report
        answers nothing, a forget request its ``decision`` per card (``forgotten`` or ``unknown``)."""
        rows = self.validate(columns)
        if rows["kind"] == "label":
            self.report(rows)
            return {}
        if rows["kind"] == "forget":
            return {"decision": np.array(self.forget(rows), dtype=object)}
        return self.score_rows(rows)

    def report(self, rows: Mapping[str, object]) -> None:
        for txid, label in zip(rows["transaction_id"], rows["label"], strict=True):  # type: ignore[call-overload]
            self.state.report(txid, label)

    def forget(self, rows: Mapping[str, object]) -> list[str]:
        """Erase the cards of a validated forget request: the decision per card, ``forgotten`` (it was held)
        or ``unknown``."""
        held = self.state.forget(rows["card_id"])  # type: ignore[arg-type]
        return [FORGOTTEN if h else UNKNOWN for h in held]


def _forest(booster: xgb.Booster, n_features: int) -> Forest | None:
    """``booster``'s trees as a :class:`kernels.forest.Forest` with its base margin (XGBoost's margin for a row
    of missing values, less the leaves that row reaches), or ``None`` for a model the kernel does not cover."""
    bare = Forest.from_model(booster.save_raw("json"), n_features=n_features, base=0.0)
    if bare is None:
        return None
    empty = np.full((1, n_features), np.nan, dtype=np.float32)
    margin = float(booster.inplace_predict(empty, predict_type="margin", validate_features=False).reshape(-1)[0])
    return dataclasses.replace(bare, base=margin - float(bare.margin(empty)[0]))
