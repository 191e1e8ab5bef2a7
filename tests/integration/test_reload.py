"""``finscore reload`` and ``finscore train ... --load`` against the real bundled Triton: a version trained while the
server runs is served once asked for, answers as the new version does in-process, and every failure is one
sentence (no server, a model the repository lacks, a version that does not load: the old one keeps serving).

The server here has a repository of its own: the session's repository is shared by the other tests, which must
not see new versions appear."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient

from clients import ModelClient
from engine.cli import main
from engine.demo.tables import CHURN_ID, CHURN_LABEL
from engine.families.churn import ChurnScorer, train_churn
from engine.serving.repository import ModelRepository
from engine.serving.server import ServerPorts, TritonServer, free_port
from tests.conftest import request_arrays


@pytest.fixture(scope="module")
def served(customers_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server on a repository of its own, serving churn version 1; always stopped."""
    folder = tmp_path_factory.mktemp("reload")
    repo = ModelRepository(folder / "model_repo")
    train_churn(customers_path, label=CHURN_LABEL, id_column=CHURN_ID, repo=repo, threads=2)
    log = folder / "triton.log"
    with TritonServer(repo, ports=ServerPorts.free(), log_path=log, ready_timeout=120) as server:
        yield server
    print(f"Triton log kept at {log}")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def served_now(server: TritonServer) -> tuple[str, list[str]]:
    """The churn version an unversioned request runs, and every version in the repository the server says is
    ready."""
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        ready = [str(v) for v in server.repo.versions("churn") if raw.is_model_ready("churn", str(v))]
    finally:
        raw.close()
    with ModelClient(server.grpc_url, "churn") as client:
        return client.served_version(), ready


def assert_answers_as(url: str, version_dir: Path, other_dir: Path, frame: pl.DataFrame) -> None:
    """The server's churn answers are those of ``version_dir`` in-process, and not those of ``other_dir``:
    through the feature-tensor twin and through raw columns alike."""
    new, old = ChurnScorer.load(version_dir), ChurnScorer.load(other_dir)
    expected = new.score(request_arrays(new, frame))["churn_probability"]
    previous = old.score(request_arrays(old, frame))["churn_probability"]
    for features in (True, False):
        with ModelClient(url, "churn", features=features) as client:
            served = client.infer(frame)["churn_probability"]
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    assert np.abs(expected - previous).max() > 1e-3  # the two versions differ: the check above tells them apart


def test_reload_serves_the_version_trained_while_the_server_runs(
    served: TritonServer, customers_path: Path, customers: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    url = served.grpc_url
    before, _ = served_now(served)
    result = train_churn(
        customers_path, label=CHURN_LABEL, id_column=CHURN_ID, repo=served.repo, threads=2, seed=int(before) + 100
    )
    new = str(result.version)
    assert served_now(served) == (before, [before])  # written, not yet served: the server does not watch the folder

    code, out, err = run(capsys, "reload", "churn", "--url", url)

    assert (code, err) == (0, ""), err
    # The feature-tensor twin (what clients that encode are served by) is loaded with it.
    assert out == (
        f"churn version {new} is ready at {url} (was version {before})\n"
        f"churn_features version {new} is ready at {url} (was version {before})\n"
    )
    assert served_now(served) == (new, [new])
    assert_answers_as(url, result.path, served.repo.model_dir("churn") / before, customers.head(300))


def test_train_with_load_serves_the_new_version(
    served: TritonServer, customers_path: Path, customers: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    url = served.grpc_url
    before, _ = served_now(served)
    repo = str(served.repo.root)
    argv = ["--data", str(customers_path), "--label", CHURN_LABEL, "--id", CHURN_ID, "--repo", repo]

    code, out, err = run(capsys, "train", "churn", *argv, "--seed", str(int(before) + 200), "--load", url)

    assert (code, err) == (0, ""), err
    new = str(int(before) + 1)
    assert out.startswith(f"churn version {new} written to ")
    assert out.endswith(
        f"churn version {new} is ready at {url} (was version {before})\n"
        f"churn_features version {new} is ready at {url} (was version {before})\n"
    )
    assert served_now(served) == (new, [new])
    model_dir = served.repo.model_dir("churn")
    assert_answers_as(url, model_dir / new, model_dir / before, customers.head(300))


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    served: TritonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = served.grpc_url
    before, _ = served_now(served)
    model_dir = served.repo.model_dir("churn")
    broken = model_dir / str(int(before) + 1)
    shutil.copytree(model_dir / before, broken)
    (broken / "model.ubj").write_bytes(b"not a model")
    try:
        code, out, err = run(capsys, "reload", "churn", "--url", url)
    finally:
        shutil.rmtree(broken)

    assert (code, out) == (1, "")
    assert err.startswith(f"Error: the server at {url} could not load model 'churn': version {broken.name} ")
    assert "not a readable churn version" in err  # the model's own reason, as Triton passes it on
    assert err.endswith(f"; it still serves version {before}\n") and err.count("\n") == 1
    assert "Traceback" not in err and "At:" not in err  # the backend's stack trace is left out
    assert served_now(served) == (before, [before])


def test_a_model_the_repository_lacks_is_one_sentence(served: TritonServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "reload", "no_such_model", "--url", served.grpc_url)
    assert (code, out) == (1, "")
    assert err == (
        f"Error: model 'no_such_model' is not in the repository of the server at {served.grpc_url} "
        "(it has: churn, churn_features)\n"
    )


def test_no_server_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "reload", "churn", "--url", url)
    assert (code, out) == (1, "")
    assert err == f"Error: no Triton server answers at {url}: start one with `finscore serve`\n"
