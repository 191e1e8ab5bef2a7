"""Recommendations for a file of customers, through the served ``recommender`` or in-process: one output row per
(customer, rank), the customers it cannot answer counted and listed.

The work is :func:`engine.batch.score.score_file`'s: requests of ``request_rows`` customers, a request the model
refuses bisected down to the rows it refuses (an unknown customer without a profile, a value the model does not
take), a hidden partial file renamed into place at the end, the output guard and the audit trail. This module
only says what a request and an output row of the recommender are: the file's id column goes as
``customer_id``, with ``k`` and whichever profile columns the model takes the file has; each answer is written
long, ``customer_id, rank, product_id, score, reason``, a customer with no suitable product adding no row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from engine.batch.score import BulkSummary, ScoreFn, score_file
from engine.errors import InvalidInputError
from engine.security.guard import OutputGuard
from engine.security.trail import DecisionAudit

__all__ = ["COLUMNS", "in_process", "recommend_file", "recommend_file_through", "recommendation_frame"]

#: The columns of the output file.
COLUMNS = ("customer_id", "rank", "product_id", "score", "reason")
#: The model's inputs that are not profile fields.
_REQUEST = ("customer_id", "k")


def in_process(scorer: Any) -> ScoreFn:
    """A :class:`~engine.families.recommender.RecommenderScorer` answering request arrays as the server does:
    the request checked by ``validate``, then ``score_rows``."""
    return lambda arrays: scorer.score_rows(scorer.validate(arrays))


def _text(values: np.ndarray) -> np.ndarray:
    """Text outputs as str, whether they came from the wire (bytes) or from a scorer (str)."""
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.ravel()], dtype=object)


def _requests(recommend: ScoreFn, id_column: str, k: int) -> ScoreFn:
    """``recommend`` fed the rows of a file: ``id_column`` sent as ``customer_id``, ``k`` for every row, and
    each answer widened to ``k`` columns (lists differ in length, and the answers to the requests a bisection
    makes are stacked)."""

    def call(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = arrays[id_column]
        if any(v == b"" for v in ids.ravel()):
            msg = f"column {id_column!r} is empty: every row needs a customer id"
            raise InvalidInputError(msg)
        request = {name: a for name, a in arrays.items() if name != id_column}
        request["customer_id"] = ids
        request["k"] = np.full((len(ids), 1), k, dtype=np.int32)
        out = {}
        for name, arr in recommend(request).items():
            arr = np.asarray(arr).reshape(len(ids), -1)
            wide = np.full((len(ids), k), np.nan if arr.dtype.kind == "f" else "", dtype=arr.dtype)
            wide[:, : arr.shape[1]] = arr
            out[name] = wide
        return out

    return call


def recommendation_frame(ids: list[object] | None, rows: np.ndarray, outputs: dict[str, np.ndarray]) -> pl.DataFrame:
    """A :data:`~engine.batch.score.FrameFn`: one row per listed product (``row`` is the customer's input row,
    what the audit's request ids name; it is not written)."""
    schema = {
        "row": pl.Int64,
        "customer_id": pl.String,
        "rank": pl.Int32,
        "product_id": pl.String,
        "score": pl.Float32,
        "reason": pl.String,
    }
    if not outputs:
        return pl.DataFrame(schema=schema)
    products = _text(outputs["product_ids"]).reshape(len(rows), -1)
    i, j = np.nonzero(products != "")  # row-major: by customer, then by rank
    customers = ["" if ids is None or ids[x] is None else str(ids[x]) for x in i.tolist()]
    return pl.DataFrame(
        {
            "row": rows[i],
            "customer_id": customers,
            "rank": j + 1,
            "product_id": products[i, j],
            "score": np.asarray(outputs["scores"])[i, j],
            "reason": _text(outputs["reasons"]).reshape(len(rows), -1)[i, j],
        },
        schema=schema,
    )


def recommend_file(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    recommend: ScoreFn,
    inputs: Sequence[tuple[str, str]],
    k: int,
    id_column: str = "customer_id",
    request_rows: int = 256,
    progress: bool = True,
    guard: OutputGuard | None = None,
    audit: DecisionAudit | None = None,
) -> BulkSummary:
    """Write the top ``k`` products of every customer of ``data`` (CSV or Parquet) to ``out`` (CSV or Parquet).

    ``recommend`` answers request arrays (a served model's ``infer_arrays``, or :func:`in_process`); ``inputs``
    are the model's ``(name, datatype)`` pairs. The file must have ``id_column``; the profile fields among
    ``inputs`` are sent when it has them (a blank value is no value). ``guard`` and ``audit`` as in
    :func:`~engine.batch.score.score_file`: card numbers in ``customer_id`` are masked even without a guard, and
    the audit gets one ``decision`` line per product written.
    """
    profile = [(name, datatype) for name, datatype in inputs if name not in _REQUEST]
    return score_file(
        data,
        out,
        score=_requests(recommend, id_column, k),
        inputs=[(id_column, "BYTES")],
        optional=profile,
        id_column=id_column,
        request_rows=request_rows,
        progress=progress,
        guard=guard or OutputGuard.build(("customer_id",)),
        audit=audit,
        frame=recommendation_frame,
        written=COLUMNS,
    )


def recommend_file_through(
    client: Any, data: str | os.PathLike[str], out: str | os.PathLike[str], *, k: int, **options: Any
) -> BulkSummary:
    """:func:`recommend_file` through a served model (``client`` is a :class:`clients.RecommenderClient`): its
    inputs from the model's metadata."""
    inputs = [(i.name, i.datatype) for i in client.inputs]
    return recommend_file(data, out, recommend=client.infer_arrays, inputs=inputs, k=k, **options)
