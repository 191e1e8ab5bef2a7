"""Answering questions: intent, confidence, the FAQ's answer, or a hand-over to a person.

:class:`AssistantScorer` is what the served ``assistant`` model runs and what training measures with (the
exported graph itself, so the threshold belongs to what is served). It needs ONNX Runtime and the Rust
``tokenizers``, never torch: the version folder holds the graph (word pieces → intent probabilities), the
tokenizer, the intents, the FAQ and the confidence threshold below which a question goes to a person.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.device import Device, onnx_session
from engine.errors import InvalidInputError
from engine.families.assistant.faq import HANDOVER, read_faq
from engine.families.assistant.text import check_text, encode, load_tokenizer
from engine.families.contract import N_REASONS, load_version, reason_names, top_indices
from engine.serving.config import TensorSpec
from engine.serving.metrics import Monitored

__all__ = [
    "FAQ_FILE",
    "INPUTS",
    "MODEL_FILE",
    "OUTPUTS",
    "PARAMS_FILE",
    "TOKENIZER_FILE",
    "AssistantScorer",
    "length_runs",
]

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
PARAMS_FILE = "assistant.json"
FAQ_FILE = "faq.csv"
#: Questions per run of the graph at most: a bulk request is cut into runs, so memory stays small.
CHUNK = 256
INPUTS = (TensorSpec("text", "BYTES", (1,)),)
OUTPUTS = (
    TensorSpec("intent", "BYTES", (1,)),
    TensorSpec("answer", "BYTES", (1,)),
    TensorSpec("confidence", "FP32", (1,)),
    TensorSpec("escalate", "BOOL", (1,)),
    # The contract's reason codes: the three most likely intents, most likely first.
    TensorSpec("alternatives", "BYTES", (N_REASONS,)),
)


def length_runs(lengths: np.ndarray, *, most: int = CHUNK, spread: float = 1.25, slack: int = 4) -> list[np.ndarray]:
    """Row indices in runs of similar length: in length order, a run ends at ``most`` rows or where the next
    row is longer than ``spread`` times the run's shortest plus ``slack`` word pieces.

    >>> [r.tolist() for r in length_runs(np.array([30, 8, 9, 31, 10]))]
    [[1, 2, 4], [0, 3]]
    """
    order = np.argsort(lengths, kind="stable")
    runs, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or i - start >= most or lengths[order[i]] > spread * lengths[order[start]] + slack:
            runs.append(order[start:i])
            start = i
    return runs


class AssistantScorer:
    """A trained assistant version, ready to answer."""

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS
    #: What the served model's metrics watch (:mod:`engine.serving.metrics`).
    monitored: ClassVar[Monitored] = Monitored("confidence", decision="escalate", names=("answered", "escalated"))

    def __init__(
        self,
        session: object,
        tokenizer: object,
        intents: Sequence[str],
        answers: Mapping[str, str],
        threshold: float,
        *,
        version: str = "",
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.intents = list(intents)
        self.threshold = float(threshold)
        self.version = version
        self._intents = np.asarray(self.intents, dtype=object)
        self._answers = np.asarray([answers.get(i, HANDOVER) for i in self.intents], dtype=object)

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu", threads: int = 1) -> AssistantScorer:
        """Load a version folder written by :func:`engine.families.assistant.train.train_assistant`."""

        def read(d: Path) -> AssistantScorer:
            params = json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))
            return cls(
                onnx_session(d / MODEL_FILE, device, threads),
                load_tokenizer(d / TOKENIZER_FILE),
                params["intents"],
                read_faq(d / FAQ_FILE),
                params["threshold"],
                version=d.name,
            )

        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidProtobuf

        return load_version(
            version_dir, family="assistant", model_file=MODEL_FILE, read=read, errors=(Fail, InvalidProtobuf)
        )

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(INPUTS)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Check a request: ``text``, one question per row (UTF-8, not empty, at most
        :data:`engine.families.assistant.text.MAX_CHARS` characters); ``{"text": str array}``.

        Any fault is an :class:`InvalidInputError` naming the input and the row.
        """
        if "text" not in columns:
            msg = "input 'text' is missing from the request"
            raise InvalidInputError(msg)
        values = np.asarray(columns["text"], dtype=object).reshape(-1)
        if values.size == 0:
            msg = "input 'text' has no rows; send one question per row"
            raise InvalidInputError(msg)
        texts = np.empty(values.size, dtype=object)
        for i, value in enumerate(values):
            texts[i] = check_text(value, field=f"text (row {i})" if values.size > 1 else "text")
        return {"text": texts}

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Intent probabilities, FP32 ``[len(texts), intents]``, in :attr:`intents` order.

        A batch runs in runs of questions of similar length (:func:`length_runs`): padded to the batch's longest
        question, a dynamic batch of short ones and one long one costs several times its own work.
        """
        out = np.empty((len(texts), len(self.intents)), dtype=np.float32)
        if not len(texts):
            return out
        ids, mask = encode(self.tokenizer, texts)
        lengths = mask.sum(axis=1)
        for rows in length_runs(lengths):
            width = int(lengths[rows].max())
            feed = {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width]}
            out[rows] = self.session.run(None, feed)[0]  # type: ignore[attr-defined]
        return out

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Answer validated rows (as :meth:`validate` returns); one run of the graph gives every output."""
        return self.decide(self.probabilities(list(rows["text"])))

    def decide(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of intent probabilities: below :attr:`threshold` a question escalates (the most likely
        intent is still named, for the person who takes it over) and is answered with the hand-over."""
        top = top_indices(probabilities, N_REASONS)
        best = top[:, 0]
        confidence = probabilities[np.arange(len(best)), best].astype(np.float32)
        escalate = confidence < self.threshold
        answer = self._answers[best]
        answer[escalate] = HANDOVER
        return {
            "intent": self._intents[best],
            "answer": answer,
            "confidence": confidence,
            "escalate": escalate,
            "alternatives": reason_names(top, self.intents),
        }

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate and answer one request: ``{"text": array}`` → ``{output: array}``."""
        return self.score_rows(self.validate(columns))
