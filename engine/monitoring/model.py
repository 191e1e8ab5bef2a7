"""The model ``finscore drift --model`` drifts on: its input columns and, where its family scores a table without
state, its score.

A served model's name is looked up in the registry (:mod:`engine.families.registry`): the family with a
:class:`~engine.families.contract.ServedModel` of that name or, for a model trained under a name of its own
(``finscore train threat --name threat_ssh``), the family whose committed shell the version's ``model.py`` is a
copy of. Its newest version in the repository is loaded with the family's scorer and read through the contract
only: the inputs it declares are the columns compared (an optional input only where both files hold it; a table
schema has already left its id column out of them), and its score is its first FP32 output of one number per row
(``churn_probability``, ``anomaly_score``), for which both files are scored in-process.

A stateful family (fraud) is not loaded: its scorer restores the live state of the cards and terminals it has
seen, or joins it in Redis, which a report must not touch; and its score depends on the requests before, so a
table's scores would depend on what came before the table. It drifts on the value columns its version records:
the amount (the card, terminal and transaction columns are keys with nearly as many categories as rows, and time
moves between any two periods by construction).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InvalidInputError, NotFoundError
from engine.families.contract import Family, Scorer, load_version
from engine.families.registry import served_model
from engine.serving.config import TensorSpec
from engine.serving.repository import ModelRepository

__all__ = ["SCORE_ROWS", "DriftModel", "drift_model"]

#: Rows scored per call: the scorers take any batch, this bounds the memory of one.
SCORE_ROWS = 65_536


@dataclass(frozen=True)
class DriftModel:
    """A model's version as drift sees it."""

    name: str
    family: str
    version: str
    #: Input columns both files must hold.
    columns: tuple[str, ...]
    #: Optional inputs, compared where both files hold them.
    optional: tuple[str, ...] = ()
    scorer: Scorer | None = None
    #: The output whose distribution is compared (None: no score drift).
    score: str | None = None
    #: Why there is no score drift, in one line (None when there is).
    note: str | None = None

    def scores(self, df: pl.DataFrame, *, source: str) -> pl.Series:
        """:attr:`score` for every row of ``df`` (a file's table, named ``source`` in errors), scored in-process
        through the contract: ``validate`` then ``score_rows``, :data:`SCORE_ROWS` rows at a time."""
        if self.scorer is None or self.score is None:
            msg = f"model {self.name!r} has no score to drift: {self.note}"
            raise NotFoundError(msg)
        specs = [s for s in self.scorer.inputs if not s.optional or s.name in df.columns]
        parts = []
        for chunk in df.iter_slices(SCORE_ROWS):
            request = {s.name: _request_column(chunk.get_column(s.name), s) for s in specs}
            try:
                out = self.scorer.score_rows(self.scorer.validate(request), outputs=[self.score])
            except InvalidInputError as exc:
                msg = f"{source}: model {self.name} cannot score the table: {exc}"
                raise InvalidInputError(msg) from None
            parts.append(np.asarray(out[self.score], dtype=np.float64).reshape(-1))
        return pl.Series(self.score, np.concatenate(parts))


def _request_column(series: pl.Series, spec: TensorSpec) -> np.ndarray:
    """A table's column as the served model receives it: text (None missing) or numbers (NaN missing)."""
    if spec.datatype == "BYTES":
        return series.cast(pl.String).to_numpy()
    if spec.datatype in ("FP32", "FP64"):
        # Text that is not a number reads as missing, as the scorers read an empty value.
        numbers = series.cast(pl.Float64, strict=False).fill_nan(None).fill_null(math.nan).to_numpy()
        return numbers.astype(np.float32 if spec.datatype == "FP32" else np.float64)
    return series.to_numpy()


def _stateful_columns(fam: Family, version_dir: Path) -> tuple[str, ...]:
    """The value columns a stateful family's version records (see the module's docstring)."""
    if fam.name != "fraud":
        msg = f"drift does not know which columns of the stateful family {fam.name!r} hold values"
        raise NotFoundError(msg)
    from engine.families.fraud.scorer import PARAMS_FILE

    def read(d: Path) -> str:
        return str(json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))["columns"]["amount"])

    return (load_version(version_dir, family="fraud", model_file=PARAMS_FILE, read=read),)


def drift_model(name: str, *, repo: Path) -> DriftModel:
    """The newest version of the served model ``name`` in the repository folder ``repo``.

    Parameters
    ----------
    name
        A served model's name, as ``finscore reload`` takes it (``churn``, ``threat``, ``fraud``, or a name a
        model was trained under).
    repo
        The model repository folder (:func:`engine.settings.resolve_settings` resolves ``--repo`` and
        ``FINSCORE_REPO``).
    """
    version_dir = ModelRepository(repo).latest(name)
    fam, served = served_model(name, version_dir)
    if fam.stateful:
        note = f"{name} is stateful (its answers depend on the requests before): drift on its input columns only"
        return DriftModel(name, fam.name, version_dir.name, _stateful_columns(fam, version_dir), note=note)
    scorer = served.scorer.load(version_dir)
    inputs = list(scorer.inputs)
    watched = getattr(scorer, "monitored", None)  # the score the served model's metrics watch, if any
    score = watched.score if watched is not None else None
    why = None if score is not None else f"{name} answers no single number per row: drift on its input columns only"
    return DriftModel(
        name,
        fam.name,
        version_dir.name,
        tuple(s.name for s in inputs if not s.optional),
        tuple(s.name for s in inputs if s.optional),
        scorer,
        score,
        why,
    )
