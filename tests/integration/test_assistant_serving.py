"""The assistant through the real bundled tritonserver: answers equal the in-process scorer's, a clear question
is answered from the FAQ, a vague one goes to a person, and each bad input (empty, too long, not UTF-8) is
INVALID_ARGUMENT with its sentence while good requests beside it succeed. The version (``assistant_trained``,
tests/conftest.py) is trained once, the head alone (seconds), on generated questions, and served by the session's
one Triton."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients import AsyncModelClient, ModelClient
from engine.cli import main
from engine.demo.intents import VAGUE
from engine.errors import InvalidInputError
from engine.families.assistant import AssistantScorer, AssistantTrainResult
from engine.families.assistant.faq import HANDOVER, read_faq
from engine.families.assistant.text import MAX_CHARS
from engine.serving.server import TritonServer


@pytest.fixture(scope="session")
def local(assistant_trained: AssistantTrainResult) -> AssistantScorer:
    return AssistantScorer.load(assistant_trained.path)


def _questions(intents: dict[str, Path]) -> list[str]:
    test = pl.read_csv(intents["test"])
    return [*test["text"].to_list()[:40], *VAGUE]


def test_served_answers_equal_in_process(
    server: TritonServer, intents: dict[str, Path], local: AssistantScorer
) -> None:
    texts = _questions(intents)
    with ModelClient(server.grpc_url, "assistant", features=False) as client:
        served = client.infer({"text": texts})
    expected = local.score({"text": np.array(texts, dtype=object)})
    assert served["intent"].tolist() == expected["intent"].tolist()
    assert served["answer"].tolist() == expected["answer"].tolist()
    assert served["escalate"].tolist() == expected["escalate"].tolist()
    assert served["alternatives"].tolist() == expected["alternatives"].tolist()
    np.testing.assert_allclose(served["confidence"], expected["confidence"], rtol=1e-5)


def test_a_clear_question_is_answered_and_a_vague_one_escalated(
    server: TritonServer, intents: dict[str, Path], assistant_trained: AssistantTrainResult, local: AssistantScorer
) -> None:
    texts = _questions(intents)
    expected = local.score({"text": np.array(texts, dtype=object)})
    answered = [t for t, e in zip(texts, expected["escalate"], strict=True) if not e]
    escalated = [t for t, e in zip(texts, expected["escalate"], strict=True) if e and t in VAGUE]
    assert answered, "the model answers none of the generated test questions"
    assert escalated, "the model is confident about every vague question"
    faq = read_faq(assistant_trained.path / "faq.csv")
    with ModelClient(server.grpc_url, "assistant", features=False) as client:
        yes = client.infer({"text": [answered[0]]})
        no = client.infer({"text": [escalated[0]]})
    assert not yes["escalate"][0] and yes["answer"][0] == faq[yes["intent"][0]]
    assert yes["confidence"][0] >= local.threshold
    assert no["escalate"][0] and no["answer"][0] == HANDOVER
    assert no["confidence"][0] < local.threshold


def _raw(url: str, value: bytes) -> dict[str, np.ndarray] | InferenceServerException:
    client = grpcclient.InferenceServerClient(url=url)
    try:
        text = grpcclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[value]], dtype=object))
        result = client.infer("assistant", [text])
        return {name: result.as_numpy(name) for name in ("intent", "escalate")}
    except InferenceServerException as exc:
        return exc
    finally:
        client.close()


@pytest.mark.parametrize(
    ("value", "says"),
    [(b"", "empty"), (b"  ", "empty"), (b"a" * (MAX_CHARS + 1), f"limit is {MAX_CHARS}"), (b"\xc3\x28 card", "UTF-8")],
)
def test_each_bad_input_is_invalid_argument_and_a_good_one_still_answers(
    server: TritonServer, value: bytes, says: str
) -> None:
    url = server.grpc_url
    failed = _raw(url, value)
    assert isinstance(failed, InferenceServerException)
    assert "INVALID_ARGUMENT" in str(failed.status())
    assert says in (failed.message() or "")
    good = _raw(url, b"how do I change my PIN")
    assert isinstance(good, dict) and good["intent"].shape == (1, 1)


def test_bad_requests_fail_alone_among_concurrent_good_ones(server: TritonServer, local: AssistantScorer) -> None:
    good = {"text": np.array([[b"my card was declined online"]], dtype=object)}
    bad = [{"text": np.array([[v]], dtype=object)} for v in (b"", b"b" * (MAX_CHARS + 1), b"\xff")]

    async def run() -> list[object]:
        async with AsyncModelClient(server.grpc_url, "assistant", features=False) as client:
            calls = [client.infer_arrays(good), *(client.infer_arrays(b) for b in bad), client.infer_arrays(good)]
            return await asyncio.gather(*calls, return_exceptions=True)

    first, *failed, last = asyncio.run(run())
    assert all(isinstance(f, InvalidInputError) for f in failed)
    expected = local.score({"text": good["text"]})["intent"][0]
    for answer in (first, last):
        assert isinstance(answer, dict) and answer["intent"][0, 0] == expected.encode()


def test_ask_prints_the_served_answer(server: TritonServer, local: AssistantScorer) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["ask", "I lost my credit card", "--url", server.grpc_url, "--json"]) == 0
    got = json.loads(printed.getvalue())
    expected = local.score({"text": np.array(["I lost my credit card"], dtype=object)})
    assert got["intent"] == expected["intent"][0] and got["escalate"] == bool(expected["escalate"][0])
    assert got["alternatives"] == expected["alternatives"][0].tolist()


def test_ask_refuses_an_empty_question_in_one_sentence(
    server: TritonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "", "--url", server.grpc_url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "empty" in err and "\n" not in err
