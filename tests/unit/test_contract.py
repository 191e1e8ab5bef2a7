"""Every registered model family against the one contract (engine.families.contract): trained on its own
tiny example data, its served configs must equal what its scorers declare, every version must carry
metrics.json, reasons must be shaped alike, and each served model's committed shell must run its scorer."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from engine.families.contract import Family, ServedModel, TrainResult, contract_problems
from engine.families.registry import FAMILIES, family
from engine.serving.model import BackendModel
from engine.serving.repository import DEFAULT_REPOSITORY, ModelRepository
from tests.unit.test_serving import fake_pb_utils


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Family, TrainResult, Path]]:
    """Each family trained once on its example data, into a repository of its own."""
    out = {}
    for name in FAMILIES:
        fam = family(name)
        folder = tmp_path_factory.mktemp(f"contract-{name}")
        repo = ModelRepository(folder / "repo")
        out[name] = (fam, fam.train(**fam.example(folder), repo=repo, threads=2), repo.root)
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_keeps_the_contract(name: str, trained: dict[str, tuple[Family, TrainResult, Path]]) -> None:
    fam, result, root = trained[name]
    assert contract_problems(fam, result, root) == []
    assert (result.path / "metrics.json").is_file()
    assert result.path.parent.parent == root


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_served_model_has_a_shell_that_runs_its_scorer(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    for served in family(name).served:
        shell = DEFAULT_REPOSITORY / served.name / "model.py"
        spec = importlib.util.spec_from_file_location(f"shell_{served.name}", shell)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert issubclass(module.TritonPythonModel, BackendModel)
        assert module.TritonPythonModel.scorer_class is served.scorer


def test_a_family_that_breaks_the_contract_is_named(trained: dict[str, tuple[Family, TrainResult, Path]]) -> None:
    fam, result, root = trained["churn"]
    served = fam.served[0]  # the raw-column model (its twin follows)

    class NoScoreRows:
        load = served.scorer.load
        OUTPUTS = served.scorer.OUTPUTS

        def inputs(self) -> list:
            return []

        def validate(self, columns: object) -> object:
            return columns

    broken = dataclasses.replace(fam, served=(ServedModel("churn", NoScoreRows, "reason_codes"),))  # type: ignore[arg-type]
    assert contract_problems(broken, result, root) == [
        "churn/churn: NoScoreRows lacks score_rows of the scorer contract"
    ]

    class OtherOutputs(served.scorer):  # type: ignore[misc, valid-type]
        OUTPUTS = served.scorer.OUTPUTS[:2]

    drifted = dataclasses.replace(fam, served=(ServedModel("churn", OtherOutputs, "reason_codes"),))
    assert contract_problems(drifted, result, root) == [
        "churn/churn: the config's outputs are not what OtherOutputs declares"
    ]
    wrong_reasons = dataclasses.replace(fam, served=(ServedModel("churn", served.scorer, "retention_action"),))
    assert contract_problems(wrong_reasons, result, root) == [
        "churn/churn: reasons 'retention_action' are not 3 names (BYTES) or indices (INT32)"
    ]
    (result.path / "metrics.json").rename(result.path / "metrics.moved")
    try:
        assert contract_problems(fam, result, root) == [f"churn/churn: version {result.path.name} has no metrics.json"]
    finally:
        (result.path / "metrics.moved").rename(result.path / "metrics.json")
    assert contract_problems(fam, object(), root) == ["churn: train returned object, not a TrainResult"]


def test_registry_names_the_families_it_has() -> None:
    from engine.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no model family 'nope'; the families are churn, threat, fraud"):
        family("nope")
