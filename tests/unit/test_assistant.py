"""The assistant family through the engine API: the threshold rule, the request checks, the FAQ, the generated
intents, and one version trained once (head only, on generated questions, through ``finscore train assistant``)
scored in-process and through model.py with a fake ``pb_utils``."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.demo.intents import INTENTS, VAGUE, intent_questions
from engine.errors import DataFileError, InvalidInputError
from engine.families.assistant import AssistantScorer
from engine.families.assistant.faq import HANDOVER, default_answer, read_faq
from engine.families.assistant.text import MAX_CHARS, check_text
from engine.families.assistant.train import choose_threshold
from tests.unit.test_serving import FakeRequest, fake_pb_utils


@dataclass(frozen=True)
class Trained:
    version: Path
    printed: str
    train: Path
    test: Path


@pytest.fixture(scope="session")
def assistant(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One assistant version, trained once (the head alone: seconds) on generated questions by the CLI."""
    folder = tmp_path_factory.mktemp("assistant")
    data = folder / "data"
    assert main(["demo-data", "intents", "--rows", "30", "--seed", "3", "--out", str(data)]) == 0
    printed = io.StringIO()
    argv = ["train", "assistant", "--train", str(data / "train.csv"), "--test", str(data / "test.csv")]
    argv += ["--faq", str(data / "faq.csv"), "--epochs", "0", "--threads", "2", "--repo", str(folder / "repo")]
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return Trained(folder / "repo" / "assistant" / "1", printed.getvalue(), data / "train.csv", data / "test.csv")


@pytest.fixture(scope="session")
def scorer(assistant: Trained) -> AssistantScorer:
    return AssistantScorer.load(assistant.version)


def _reference_threshold(conf: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The rule read literally: every distinct confidence tried from the lowest up."""
    for t in np.unique(conf):
        if correct[conf >= t].mean() >= target:
            return float(t)
    return float(np.nextafter(1.0, 2.0))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=60),
    st.sampled_from([0.5, 0.8, 0.97, 1.0]),
)
def test_threshold_is_the_lowest_meeting_the_target(rows: list[tuple[int, bool]], target: float) -> None:
    conf = np.array([c / 20 for c, _ in rows])
    correct = np.array([ok for _, ok in rows])
    got = choose_threshold(conf, correct, target)
    assert got == _reference_threshold(conf, correct, target)
    if got <= 1.0:
        assert correct[conf >= got].mean() >= target


def test_no_threshold_reaching_the_target_escalates_everything() -> None:
    assert choose_threshold(np.array([0.9, 0.8]), np.array([False, False])) > 1.0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"", "empty"),
        ("   \n\t", "empty"),
        ("x" * (MAX_CHARS + 1), f"limit is {MAX_CHARS}"),
        (b"caf\xe9 card", "not valid UTF-8"),
        (3.5, "must be text"),
    ],
)
def test_bad_text_is_refused_with_one_sentence(value: object, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says) as caught:
        check_text(value)
    assert str(caught.value).count(". ") == 0 and "\n" not in str(caught.value)


def test_text_at_the_limit_and_utf8_is_accepted() -> None:
    assert check_text(("é" * MAX_CHARS).encode()) == "é" * MAX_CHARS
    assert check_text("  where is my card  ") == "where is my card"


def test_generated_intents_are_seeded_and_cover_every_intent() -> None:
    a, b, c = intent_questions(12, seed=1), intent_questions(12, seed=1), intent_questions(12, seed=2)
    assert a.train.equals(b.train) and a.test.equals(b.test)
    assert not a.train.equals(c.train)
    assert set(a.train["intent"]) == set(a.test["intent"]) == set(INTENTS)
    assert set(a.faq) == {i for i, (_, answer) in INTENTS.items() if answer}
    assert a.train.filter(pl.col("text").is_in(a.test["text"].to_list())).height < a.train.height


def test_faq_needs_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("name,text\ncard_arrival,soon\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="intent and answer"):
        read_faq(path)


def test_training_prints_the_rule_the_threshold_and_the_intents_without_answer(assistant: Trained) -> None:
    metrics = json.loads((assistant.version / "metrics.json").read_text())
    for key in ("accuracy", "answered_accuracy", "answered_rate", "threshold"):
        assert key in metrics
    assert f"threshold {metrics['threshold']:.4f}: the lowest confidence" in assistant.printed
    lacking = [i for i, (_, answer) in INTENTS.items() if answer is None]
    assert f"{len(lacking)} of {len(INTENTS)} intents have no FAQ answer" in assistant.printed
    faq = read_faq(assistant.version / "faq.csv")
    assert set(faq) == set(INTENTS)
    assert all(faq[i] == default_answer(i) for i in lacking)


def test_metrics_are_what_the_version_answers_on_the_test_file(assistant: Trained, scorer: AssistantScorer) -> None:
    metrics = json.loads((assistant.version / "metrics.json").read_text())
    test = pl.read_csv(assistant.test)
    out = scorer.score({"text": np.array(test["text"].to_list(), dtype=object)})
    right = out["intent"] == np.array(test["intent"].to_list(), dtype=object)
    answered = ~out["escalate"]
    assert metrics["accuracy"] == pytest.approx(right.mean())
    assert metrics["answered_rate"] == pytest.approx(answered.mean())
    assert metrics["answered_accuracy"] == pytest.approx(right[answered].mean())
    assert metrics["threshold"] == pytest.approx(scorer.threshold)
    # Ten intents: far above chance even for the head alone, and the threshold met its target on validation.
    assert metrics["accuracy"] > 0.5
    assert metrics["validation_answered_accuracy"] >= metrics["target_accuracy"] or metrics["threshold"] > 1


def test_outputs_follow_the_probabilities_threshold_and_faq(assistant: Trained, scorer: AssistantScorer) -> None:
    texts = ["My card has not arrived yet", "how do I change my PIN", *VAGUE]
    out = scorer.score({"text": np.array(texts, dtype=object).reshape(-1, 1)})
    probs = scorer.probabilities(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    order = np.argsort(-probs, axis=1)[:, :3]
    assert out["alternatives"].tolist() == [[scorer.intents[k] for k in row] for row in order]
    assert out["intent"].tolist() == out["alternatives"][:, 0].tolist()
    np.testing.assert_allclose(out["confidence"], probs.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(out["escalate"], out["confidence"] < scorer.threshold)
    faq = read_faq(assistant.version / "faq.csv")
    for intent, answer, escalate in zip(out["intent"], out["answer"], out["escalate"], strict=True):
        assert answer == (HANDOVER if escalate else faq[intent])
    assert out["confidence"].dtype == np.float32 and out["escalate"].dtype == bool


def test_a_bad_row_names_its_row(scorer: AssistantScorer) -> None:
    with pytest.raises(InvalidInputError, match=r"text \(row 1\) is empty"):
        scorer.validate({"text": np.array([[b"where is my card"], [b""]], dtype=object)})


def test_an_edited_faq_answers_after_a_reload(assistant: Trained, scorer: AssistantScorer, tmp_path: Path) -> None:
    copy = tmp_path / "1"
    shutil.copytree(assistant.version, copy)
    question = np.array(["My card has not arrived yet"], dtype=object)
    before = scorer.score({"text": question})
    if before["escalate"][0]:
        pytest.fail("the trained head escalates a plain card-arrival question")
    intent = str(before["intent"][0])
    faq = read_faq(copy / "faq.csv")
    faq[intent] = "Edited: your card is on its way."
    lines = ["intent,answer", *(f'{k},"{v}"' for k, v in faq.items())]
    (copy / "faq.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    after = AssistantScorer.load(copy).score({"text": question})
    assert after["answer"][0] == "Edited: your card is on its way."


def test_serving_imports_neither_torch_nor_sentence_transformers(assistant: Trained) -> None:
    code = (
        "import sys, numpy as np\n"
        "from engine.families.assistant import AssistantScorer\n"
        f"s = AssistantScorer.load({str(assistant.version)!r})\n"
        "s.score({'text': np.array(['where is my card'], dtype=object)})\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture()
def model(assistant: Trained, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("assistant_model_py", assistant.version / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.TritonPythonModel()
    outputs = [{"name": t.name, "dims": [str(d) for d in t.dims]} for t in AssistantScorer.OUTPUTS]
    m.initialize(
        {
            "model_config": json.dumps({"name": "assistant", "input": [{"name": "text"}], "output": outputs}),
            "model_repository": str(assistant.version.parent),
            "model_version": assistant.version.name,
            "model_instance_kind": "CPU",
        }
    )
    return m


def test_each_bad_request_fails_alone_in_a_batch(model: Any, scorer: AssistantScorer) -> None:
    def request(value: bytes) -> FakeRequest:
        return FakeRequest({"text": np.array([[value]], dtype=object)})

    good = b"how do I top up my account"
    bad = [b"", b"x" * (MAX_CHARS + 1), b"\xff\xfe card"]
    responses = model.execute([request(good), *(request(b) for b in bad), request(good)])
    expected = scorer.score({"text": np.array([good], dtype=object)})
    for response in (responses[0], responses[-1]):
        assert response.error is None
        assert response.outputs["intent"][0, 0] == str(expected["intent"][0]).encode()
        assert response.outputs["alternatives"].shape == (1, 3)
    for response, says in zip(responses[1:-1], ("empty", "limit", "UTF-8"), strict=True):
        assert response.error is not None and response.error.code == "INVALID_ARG"
        assert says in response.error.message
