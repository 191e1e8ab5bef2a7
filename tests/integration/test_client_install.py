"""Install by role: the base install of finscore (``finscore[client]``) scores through a running server with no
training, serving or benchmark library in its environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.families.churn import ChurnScorer
from engine.serving.server import TritonServer
from tests.conftest import request_arrays

ROOT = Path(__file__).resolve().parents[2]
#: What a card processor calling the server must not have to install.
HEAVY = ("torch", "xgboost", "polars", "numba", "sklearn", "dask", "distributed", "fastapi", "pytriton", "onnxruntime")

SCRIPT = """
import importlib.util, json, sys
import pyarrow.parquet as pq
from clients import ModelClient

url, data, heavy = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
with ModelClient(url, "churn") as client:
    out = client.infer(pq.read_table(data))
print(json.dumps({
    "churn_probability": out["churn_probability"].tolist(),
    "reason_codes": [[c.decode() if isinstance(c, bytes) else c for c in row] for row in out["reason_codes"].tolist()],
    "installed": [m for m in heavy if importlib.util.find_spec(m) is not None],
}))
"""


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with ``pip install finscore`` (the base install) from a copy of the source, so
    the build leaves nothing in the work tree."""
    tmp = tmp_path_factory.mktemp("client-env")
    source = tmp / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "model_repo", "tests", ".*cache"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def test_client_only_install_scores_through_the_server(
    client_env: Path, server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame, tmp_path: Path
) -> None:
    frame = customers.head(40)
    data = tmp_path / "rows.parquet"
    frame.write_parquet(data)
    done = subprocess.run(
        [str(client_env), "-c", SCRIPT, server.grpc_url, str(data), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the source tree: the installed package, not the checkout, is imported
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["installed"] == []
    local = scorer.score(request_arrays(scorer, frame))
    np.testing.assert_allclose(result["churn_probability"], local["churn_probability"], rtol=0, atol=1e-6)
    assert result["reason_codes"] == [
        [c.decode() if isinstance(c, bytes) else c for c in r] for r in local["reason_codes"].tolist()
    ]


def test_client_only_install_names_the_extra_a_command_needs(client_env: Path, tmp_path: Path) -> None:
    finscore = client_env.parent / "finscore"
    done = subprocess.run(
        [str(finscore), "demo-data", "churn", "--out", "x.parquet"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: finscore demo-data needs polars, which is not installed: pip install 'finscore[serve]'"
    ]
