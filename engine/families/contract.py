"""What a model family provides, and the helpers every family builds on.

A family is a folder under ``engine/families/`` and one line in :mod:`engine.families.registry`. It gives:

- ``train(...) -> TrainResult``: a new version in the model repository, with ``metrics.json`` beside the
  model (written by :func:`publish_version`, so no family can forget it);
- for each model it serves, a scorer class that fills in :class:`Scorer`: ``load`` a version folder,
  declare its ``inputs`` and ``outputs``, ``validate`` a request and ``score_rows`` validated rows. A family
  that keeps state between requests (fraud) fills in :class:`StatefulScorer` as well;
- a tiny example data set (:attr:`Family.example`), so that ``tests/unit/test_contract.py`` trains every
  registered family and checks it against this contract: a family that breaks it fails a test, not a review.

The helpers are the one place for what families used to repeat: the served config built from the scorer's
inputs and outputs (:func:`model_config`, the CPU/GPU kind chosen by :func:`engine.device.instance_kind`),
loading a version folder with its one-sentence errors (:func:`load_version`) and top-k reason codes
(:func:`top_indices`, :func:`reason_names`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
import polars as pl

from engine.device import Device, instance_kind
from engine.errors import ModelNotReadyError, UsageError
from engine.families.twin import decode_indices
from engine.serving.config import ModelConfig, TensorSpec
from engine.serving.repository import VersionWriter
from kernels.ranking import top_k

__all__ = [
    "METRICS_FILE",
    "N_REASONS",
    "REFERENCE_FILE",
    "REFERENCE_ROWS",
    "Family",
    "Metrics",
    "Scorer",
    "ServedModel",
    "StatefulScorer",
    "TrainResult",
    "check_model_name",
    "contract_problems",
    "load_version",
    "model_config",
    "publish_version",
    "reason_names",
    "schema_inputs",
    "table_config",
    "top_indices",
]

METRICS_FILE = "metrics.json"
#: A sample of a version's training inputs (:func:`publish_version`), the reference of ``finscore drift``.
REFERENCE_FILE = "reference.parquet"
REFERENCE_ROWS = 10_000
#: Reason codes per row, in every family: the three features (or columns) that weigh most.
N_REASONS = 3

T = TypeVar("T")


class Metrics(Protocol):
    """Held-out figures of a training run: printable, and saved as ``metrics.json``."""

    def as_dict(self) -> dict[str, float | int]: ...
    def table(self) -> str: ...


@dataclass(frozen=True)
class TrainResult:
    """What every family's ``train`` returns; families subclass it with what their command prints."""

    version: int
    path: Path
    metrics: Metrics | None
    seconds: float


@runtime_checkable
class Scorer(Protocol):
    """A trained version, ready to score: what the served model runs and what in-process scoring uses."""

    #: The outputs every request may ask for, in config order.
    OUTPUTS: ClassVar[Sequence[TensorSpec]]

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu") -> Scorer: ...

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    def validate(self, columns: Mapping[str, object]) -> Mapping[str, Any]: ...

    def score_rows(
        self, rows: Mapping[str, Any], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]: ...


@runtime_checkable
class StatefulScorer(Scorer, Protocol):
    """A scorer whose answers depend on the requests before: the served model reads a batch's requests in
    arrival order (see :class:`engine.families.fraud.serving.FraudBackendModel`), freezes the long-lived state
    out of the garbage collector after loading, and snapshots it when unloaded."""

    def snapshot(self) -> Path | None: ...


@dataclass(frozen=True)
class ServedModel:
    """One Triton model of a family: its name (and ``model_repo/<name>/model.py`` shell) and scorer."""

    name: str
    scorer: type[Scorer]
    #: The output holding the reason codes: BYTES names, or INT32 indices into names the config publishes;
    #: None for a model that makes no decision to explain (face detection and embedding).
    reasons: str | None
    #: A model that answers a list per row (the recommender) gives one reason per listed item instead:
    #: BYTES with the list's variable length.
    reasons_per_item: bool = False


@dataclass(frozen=True)
class Family:
    """A registered model family."""

    name: str
    summary: str
    train: Callable[..., TrainResult]
    served: tuple[ServedModel, ...]
    #: Writes a tiny data set into a folder and returns the ``train`` keywords that learn from it (the
    #: contract test, and a new user's first try).
    example: Callable[[Path], dict[str, Any]]
    stateful: bool = False
    notes: Mapping[str, str] = field(default_factory=dict)


_MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_model_name(name: str) -> str:
    """``name`` when it can name a served model (a letter, then up to 63 letters, digits, ``_`` or ``-``: a folder
    of the repository and a Triton model name); otherwise one sentence.

    >>> check_model_name("propensity_card")
    'propensity_card'
    """
    if not _MODEL_NAME.match(name):
        msg = f"model name {name!r} must start with a letter and hold only letters, digits, '_' and '-' (64 at most)"
        raise UsageError(msg)
    return name


def schema_inputs(schema: Any) -> list[TensorSpec]:
    """One ``[batch, 1]`` input per raw column a :class:`engine.tables.schema.TableSchema` keeps."""
    return [TensorSpec(c.name, c.wire, (1,)) for c in schema.columns]


def model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    device: Device = "cpu",
    instance_count: int = 1,
    max_batch_size: int = 4096,
    parameters: Mapping[str, str] | None = None,
) -> ModelConfig:
    """The served config of a scorer's inputs and outputs, on the instance kind ``device`` asks for."""
    return ModelConfig(
        name=name,
        inputs=list(inputs),
        outputs=list(outputs),
        max_batch_size=max_batch_size,
        instance_kind=instance_kind(device),
        instance_count=instance_count,
        parameters=dict(parameters or {}),
    )


def table_config(
    name: str,
    schema: Any,
    outputs: Sequence[TensorSpec],
    *,
    device: Device = "cpu",
    instance_count: int = 1,
) -> ModelConfig:
    """The served config of a model fed a table's raw columns (:func:`schema_inputs`); its ``id_column`` parameter
    tells bulk scoring and clients which column identifies a row in outputs."""
    return model_config(
        name,
        schema_inputs(schema),
        outputs,
        device=device,
        instance_count=instance_count,
        parameters={"id_column": schema.id_column or ""},
    )


def publish_version(
    writer: VersionWriter,
    config: ModelConfig,
    metrics: Mapping[str, object],
    *,
    reference: pl.DataFrame | None = None,
) -> Path:
    """Write ``metrics.json`` into the version being written, then publish it with its config.

    ``reference``: the training table's model inputs (no id, no label), of which up to :data:`REFERENCE_ROWS` rows
    (a seeded sample) are kept as :data:`REFERENCE_FILE`: what ``finscore drift --reference MODEL:VERSION``
    compares a current table with, so the training file need not be kept beside the model.
    """
    (writer.path / METRICS_FILE).write_text(json.dumps(dict(metrics), indent=2), encoding="utf-8")
    if reference is not None and reference.height:
        kept = reference if reference.height <= REFERENCE_ROWS else reference.sample(REFERENCE_ROWS, seed=0)
        kept.write_parquet(writer.path / REFERENCE_FILE)
    return writer.commit(config)


def load_version(
    version_dir: str | Path,
    *,
    family: str,
    model_file: str,
    read: Callable[[Path], T],
    errors: tuple[type[BaseException], ...] = (),
) -> T:
    """``read(version_dir)``, with one sentence when the folder holds no model or cannot be read.

    ``errors`` are the exceptions of the family's own model library that mean an unreadable file (for
    example ``xgboost.core.XGBoostError``); missing or malformed files, JSON and keys are always covered.
    """
    d = Path(version_dir)
    if not (d / model_file).is_file():
        msg = f"{d} holds no trained {family} model ({model_file} missing): run `finscore train {family}`"
        raise ModelNotReadyError(msg)
    unreadable: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, *errors)
    try:
        return read(d)
    except unreadable as exc:
        msg = f"{d} is not a readable {family} version ({type(exc).__name__}); retrain with `finscore train {family}`"
        raise ModelNotReadyError(msg) from None


def top_indices(values: np.ndarray, k: int = N_REASONS, *, positive: bool = False) -> np.ndarray:
    """Column indices (INT32, ``[rows, k]``) of each row's ``k`` largest values, largest first; -1 where a
    row has fewer than ``k`` columns, and with ``positive`` where the value is not above zero. One kernel call
    (:func:`kernels.ranking.top_k`): a one-row request pays no NumPy call per step.

    >>> top_indices(np.array([[0.1, -2.0, 0.5, 0.0]]), positive=True).tolist()
    [[2, 0, -1]]
    """
    return top_k(np.asarray(values), k, positive)


def reason_names(indices: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Names (object array) of :func:`top_indices`' indices, the empty name for -1.

    >>> reason_names(np.array([[1, -1]]), ["a", "b"]).tolist()
    [['b', '']]
    """
    return decode_indices(indices, names)


_TENSOR = re.compile(
    r'\{ name: "(?P<name>[^"]+)" data_type: TYPE_(?P<type>[A-Z0-9]+) '
    r"dims: \[ (?P<dims>[-0-9, ]+) \](?P<opt> optional: true)? \}"
)
_WIRE = {"STRING": "BYTES"}


def _config_tensors(text: str, section: str) -> list[tuple[str, str, tuple[int, ...], bool]]:
    body = text.split(f"{section} [", 1)[1].split("\n]", 1)[0]
    return [
        (m["name"], _WIRE.get(m["type"], m["type"]), tuple(int(d) for d in m["dims"].split(",")), bool(m["opt"]))
        for m in _TENSOR.finditer(body)
    ]


def _specs(specs: Sequence[TensorSpec]) -> list[tuple[str, str, tuple[int, ...], bool]]:
    return [(s.name, s.datatype, tuple(s.dims), s.optional) for s in specs]


def contract_problems(family: Family, result: object, repository: Path) -> list[str]:
    """What ``family`` gets wrong of the contract, one sentence each (none when it keeps it), judged on the
    ``result`` of its ``train`` into ``repository`` and on the versions that run wrote."""
    problems = []
    if not isinstance(result, TrainResult):
        problems.append(f"{family.name}: train returned {type(result).__name__}, not a TrainResult")
    for served in family.served:
        where = f"{family.name}/{served.name}"
        model_dir = repository / served.name
        versions = sorted((p for p in model_dir.glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name))
        if not versions:
            problems.append(f"{where}: training wrote no version of the served model")
            continue
        version = versions[-1]
        if not (version / METRICS_FILE).is_file():
            problems.append(f"{where}: version {version.name} has no {METRICS_FILE}")
        members = ("load", "inputs", "OUTPUTS", "validate", "score_rows") + (("snapshot",) if family.stateful else ())
        missing = [m for m in members if not hasattr(served.scorer, m)]
        if missing:
            problems.append(f"{where}: {served.scorer.__name__} lacks {', '.join(missing)} of the scorer contract")
        if problems:
            continue
        scorer = served.scorer.load(version)
        if not isinstance(scorer, Scorer) or (family.stateful and not isinstance(scorer, StatefulScorer)):
            problems.append(f"{where}: {served.scorer.__name__} does not fill in the scorer contract")
            continue
        config = (model_dir / "config.pbtxt").read_text(encoding="utf-8")
        if _config_tensors(config, "input") != _specs(scorer.inputs):
            problems.append(f"{where}: the config's inputs are not what {served.scorer.__name__} declares")
        if _config_tensors(config, "output") != _specs(scorer.OUTPUTS):
            problems.append(f"{where}: the config's outputs are not what {served.scorer.__name__} declares")
        if served.reasons is None:
            continue
        reasons = {s.name: s for s in scorer.OUTPUTS}.get(served.reasons)
        if served.reasons_per_item:
            if reasons is None or tuple(reasons.dims) != (-1,) or reasons.datatype != "BYTES":
                problems.append(f"{where}: reasons {served.reasons!r} are not one name (BYTES) per listed item")
        elif reasons is None or tuple(reasons.dims) != (N_REASONS,) or reasons.datatype not in ("BYTES", "INT32"):
            problems.append(f"{where}: reasons {served.reasons!r} are not {N_REASONS} names (BYTES) or indices (INT32)")
    return problems
