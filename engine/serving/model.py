"""The generic body of a Triton python-backend model: what every ``model_repo/*/model.py`` inherits.

``initialize`` reads ``args`` once (version folder, instance kind) and loads the scorer (any
:class:`engine.families.contract.Scorer`); ``execute`` runs two steps and returns exactly one response per
request:

1. :meth:`BackendModel.read`: each request's inputs by name; a missing required input is that request's error;
2. :meth:`BackendModel.score`: validate and score. Stateless scorers have the batch's valid requests checked
   and scored in one call; a stateful family (fraud) overrides this step alone, to read requests in order.

Every failure goes through one mapping, :func:`triton_code`: a :class:`FinscoreError` is INVALID_ARG with its
sentence (UNAVAILABLE for :class:`StateUnavailableError`), for that request alone; anything unexpected is
INTERNAL with a generic message and a logged traceback. The server never dies because of a request.
"""

from __future__ import annotations

import gc
import json
import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.device import resolve_device
from engine.errors import FinscoreError, InvalidInputError, StateUnavailableError
from engine.families.contract import Scorer, StatefulScorer
from engine.security.trail import Trail, finscore_home
from engine.serving.metrics import ServingMetrics, reason_of
from engine.serving.sample import ScoredSample
from engine.settings import resolve_settings

__all__ = ["BackendModel", "as_output", "triton_code"]

log = logging.getLogger("finscore.serving")


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _merged(
    read: list[tuple[int, dict[str, np.ndarray]]],
) -> tuple[list[tuple[int, int]], dict[str, np.ndarray]] | None:
    """Several requests' columns joined into one batch, or ``None`` when a request's shape is off (its own
    check then says how): different names, an array not ``[rows, width]`` with the first request's width (1 for
    a column, the feature width for a twin's matrix), columns of different lengths, no rows, or a column whose
    type differs from the first request's."""
    if len(read) < 2:
        return None
    names = read[0][1].keys()
    width = next(iter(read[0][1].values()), np.empty((0, 1))).shape[-1]
    sizes = []
    for i, columns in read:
        if columns.keys() != names:
            return None
        try:
            shapes = {a.shape for a in columns.values()}
        except AttributeError:  # not arrays
            return None
        if len(shapes) != 1:
            return None
        shape = shapes.pop()
        if len(shape) != 2 or shape[1] != width or shape[0] < 1:
            return None
        sizes.append((i, shape[0]))
    # One join per dtype, not one per name: each name's rows are then a slice of its dtype's block.
    first = read[0][1]
    groups: dict[np.dtype, list[str]] = {}
    for name in first:
        groups.setdefault(first[name].dtype, []).append(name)
    total = sum(n for _, n in sizes)
    joined: dict[str, np.ndarray] = {}
    for dtype, group in groups.items():
        block = np.concatenate([c[name] for name in group for _, c in read])
        if block.dtype != dtype:  # a request sent another type: each request is checked on its own
            return None
        joined.update((name, block[k * total : (k + 1) * total]) for k, name in enumerate(group))
    return sizes, {name: joined[name] for name in first}


def triton_code(exc: BaseException) -> str:
    """The Triton error code of a failure: the one mapping every served model uses."""
    if isinstance(exc, StateUnavailableError):
        return "UNAVAILABLE"
    if isinstance(exc, FinscoreError):
        return "INVALID_ARG"
    return "INTERNAL"


def as_output(value: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """An output array as the stub takes it: ``[rows, *dims]``, text as UTF-8 bytes."""
    arr = np.asarray(value)
    if arr.dtype == object:
        flat = arr.ravel().tolist()
        try:
            encoded = list(map(str.encode, flat))  # all text, as scorers answer: the encoder's own loop
        except TypeError:  # bytes or None among the values: those are kept as they are
            encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
        arr = np.array(encoded, dtype=object).reshape(arr.shape)
    if any(d < 0 for d in dims):  # a list per row, as long as the batch's longest: already [rows, n]
        return arr.reshape((arr.shape[0], -1)) if arr.size else arr.reshape((arr.shape[0], 0))
    return arr.reshape((-1, *dims))


def _trimmed(block: np.ndarray) -> np.ndarray:
    """A request's slice of a variable-length output without the columns that only pad other requests' lists
    (``""`` or NaN in every row)."""
    if block.ndim != 2 or not block.shape[1]:
        return block
    filled = ~np.isnan(block) if block.dtype.kind == "f" else (block != b"") & (block != "")
    used = np.flatnonzero(filled.any(axis=0))
    return block[:, : used[-1] + 1] if len(used) else block[:, :0]


class BackendModel:
    """Subclassed by a model.py that sets ``pb_utils`` and ``scorer_class``."""

    pb_utils: ClassVar[Any]
    scorer_class: ClassVar[type[Scorer]]
    #: Outputs that are a list per row (a dimension -1): each request's slice is cut to its own longest list.
    _lists: frozenset[str] = frozenset()
    #: finscore's own metrics (:mod:`engine.serving.metrics`), None when they are off or the backend has none.
    metrics: ServingMetrics | None = None
    #: The sample of scored rows (:mod:`engine.serving.sample`), None unless FINSCORE_SAMPLE names this model.
    sample: ScoredSample | None = None

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.output_dims = {t["name"]: [int(d) for d in t["dims"]] for t in config["output"]}
        self._lists = frozenset(name for name, dims in self.output_dims.items() if any(d < 0 for d in dims))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        device = resolve_device(args.get("model_instance_kind", "CPU"))
        self.scorer: Any = self.scorer_class.load(version_dir, device=device)
        # What a request must carry comes from the scorer's own declaration (the config is generated from it).
        self.required = [spec.name for spec in self.scorer.inputs if not spec.optional]
        self._required = frozenset(self.required)
        # A load no audit line records does not happen: a failing log fails the load, with its sentence.
        trail = Trail.from_env()
        trail.model_load(
            self.model_name,
            args["model_version"],
            where="triton",
            instance=args.get("model_instance_name", ""),
            device=device,
        )
        settings = resolve_settings()
        if settings.metrics and hasattr(self.pb_utils, "MetricFamily"):
            self.metrics = ServingMetrics(
                self.pb_utils,
                model=self.model_name,
                version=args["model_version"],
                monitored=getattr(self.scorer, "monitored", None),
                flush_ms=settings.metrics_flush_ms,
            )
        sampled = {name.strip() for name in (settings.sample or "").split(",")}
        if self.model_name in sampled or "all" in sampled:
            schema_id = getattr(getattr(self.scorer, "schema", None), "id_column", None)
            self.sample = ScoredSample(
                finscore_home() / "samples" / self.model_name / args["model_version"],
                name=str(args.get("model_instance_name") or self.model_name).replace("/", "_").replace(" ", "_"),
                subjects=(schema_id,) if schema_id else getattr(self.scorer, "SUBJECTS", ()),
                pseudonym_key=trail.pseudonym_key,
                every=settings.sample_every,
                part_rows=settings.sample_rows,
                parts=settings.sample_parts,
            )
        if isinstance(self.scorer, StatefulScorer):
            # Kept state is a few hundred thousand long-lived objects: a full collection over them stalls a
            # request by tens of milliseconds. Frozen, the collector skips them.
            gc.collect()
            gc.freeze()

    def _given(self, request: Any) -> dict[str, np.ndarray]:
        """The request's inputs by name, fetched from the stub in one call (one call per name costs five
        times as much)."""
        return {t.name(): t.as_numpy() for t in request.inputs()}

    def _inputs(self, request: Any) -> dict[str, np.ndarray]:
        columns = self._given(request)
        if not self._required.issubset(columns):  # Triton itself refuses undeclared inputs
            missing = next(name for name in self.required if name not in columns)
            msg = f"input {missing!r} is missing from the request"
            exc = InvalidInputError(msg)
            exc.reason = "missing_input"  # type: ignore[attr-defined]  # the metrics' reason label
            raise exc
        return columns

    def requested(self, request: Any) -> list[str]:
        """The outputs the request asks for (all of them when it names none)."""
        names = getattr(request, "requested_output_names", None)
        wanted = [n for n in (names() if names is not None else []) if n in self.output_dims]
        return wanted or list(self.output_dims)

    def _log_error(self, text: str) -> None:
        logger = getattr(self.pb_utils, "Logger", None)
        if logger is not None:
            logger.log_error(text)
        else:
            log.error(text)

    def fail(self, responses: list[Any], indices: Sequence[int], exc: BaseException, doing: str) -> None:
        """Answer the requests ``indices`` with the error ``exc`` (while ``doing`` something), through
        :func:`triton_code`: the one place an exception becomes a Triton error."""
        code = triton_code(exc)
        if self.metrics is not None:
            self._watching(self.metrics.rejected, reason_of(exc), len(indices))
        if code == "INTERNAL":
            self._log_error(f"unexpected error {doing} ({self.model_name}):\n{traceback.format_exc()}")
            msg = f"internal error while {doing}"
        else:
            msg = str(exc)
        for i in indices:
            error = self.pb_utils.TritonError(msg, getattr(self.pb_utils.TritonError, code))
            responses[i] = self.pb_utils.InferenceResponse(error=error)

    def answer(
        self,
        responses: list[Any],
        sizes: list[tuple[int, int]],
        outputs: dict[str, np.ndarray],
        wanted: dict[int, list[str]],
    ) -> None:
        """Cut the batch's ``outputs`` into one response per request: ``sizes`` holds (request, rows) in order."""
        asked = {name for names in wanted.values() for name in names}
        # Text is encoded once for the batch; each response gets a slice.
        ready = {name: as_output(outputs[name], self.output_dims[name]) for name in asked}
        tensor, response = self.pb_utils.Tensor, self.pb_utils.InferenceResponse
        if len(sizes) == 1 and not self._lists & asked:  # one request is the batch: its outputs as they are
            i = sizes[0][0]
            responses[i] = response(output_tensors=[tensor(name, ready[name]) for name in wanted[i]])
            return
        start = 0
        for i, n in sizes:
            stop = start + n
            blocks = {name: ready[name][start:stop] for name in wanted[i]}
            lists = self._lists & blocks.keys()
            if lists:
                width = max(_trimmed(blocks[name]).shape[1] for name in lists)
                blocks = {name: b[:, :width] if name in lists else b for name, b in blocks.items()}
            responses[i] = response(output_tensors=[tensor(name, block) for name, block in blocks.items()])
            start = stop

    def _validated(
        self, read: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]
    ) -> tuple[list[tuple[int, int]], dict[str, np.ndarray]]:
        """The valid requests as (request, rows) and their rows as one batch; each invalid request gets its
        error. The whole batch is checked at once first (one check per column, not one per column and
        request); only when that finds a fault is each request checked on its own."""
        if len(read) == 1:  # one request: its own check is the batch's
            i, columns = read[0]
            try:
                rows = dict(self.scorer.validate(columns))
            except Exception as exc:
                self.fail(responses, [i], exc, "reading the request")
                return [], {}
            return [(i, len(next(iter(rows.values()))))], rows
        try:
            merged = _merged(read)  # joining odd in-process arrays can fail too: each is then checked alone
            if merged is not None:
                return merged[0], dict(self.scorer.validate(merged[1]))
        except Exception:  # noqa: S110 - a request is at fault: the checks below name it
            pass
        frames: list[tuple[int, dict[str, np.ndarray]]] = []
        for i, columns in read:
            try:
                frames.append((i, dict(self.scorer.validate(columns))))
            except Exception as exc:
                self.fail(responses, [i], exc, "reading the request")
        sizes = [(i, len(next(iter(frame.values())))) for i, frame in frames]
        return sizes, _concat([f for _, f in frames]) if frames else {}

    def read(self, requests: list[Any], responses: list[Any]) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Step 1: each request's inputs by name, as (request index, columns)."""
        read: list[tuple[int, dict[str, np.ndarray]]] = []
        for i, request in enumerate(requests):
            try:
                read.append((i, self._inputs(request)))
            except Exception as exc:
                self.fail(responses, [i], exc, "reading the request")
        return read

    def score(self, requests: list[Any], read: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]) -> None:
        """Step 2: validate the requests read and score the valid ones in one call, answering each."""
        sizes, rows = self._validated(read, responses)
        if not sizes:
            return
        try:
            wanted = {i: self.requested(requests[i]) for i, _ in sizes}
            # Outputs no request of the batch asks for are not computed (a scan asks for reasons only
            # for the rows it alerts on).
            union = {name for names in wanted.values() for name in names} | self.watched()
            outputs = self.scorer.score_rows(rows, outputs=union)
            self.answer(responses, sizes, outputs, wanted)
        except Exception as exc:
            self.fail(responses, [i for i, _ in sizes], exc, "scoring")
            return
        self.observe(rows, outputs)

    def observe(self, rows: Any, outputs: dict[str, np.ndarray]) -> None:
        """Count a scored batch in the metrics and keep its share of the sample, after it is answered."""
        if self.metrics is not None:
            self._watching(self.metrics.scored, outputs)
        if self.sample is not None:
            self._watching(self.sample.add, rows, outputs)

    def _watching(self, step: Any, *args: Any) -> None:
        """A metrics or sample step: what fails there is logged, never a request's answer."""
        try:
            step(*args)
        except Exception:
            self._log_error(f"metrics or sample of {self.model_name} failed:\n{traceback.format_exc()}")

    def watched(self) -> set[str]:
        """The outputs the metrics count, computed whatever the requests ask for (none with metrics off)."""
        watched = self.metrics.monitored if self.metrics is not None else None
        if watched is None:
            return set()
        return {watched.score} | ({watched.decision} if watched.decision else set())

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        read = self.read(requests, responses)
        if read:
            self.score(requests, read, responses)
        return responses

    def finalize(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.sample is not None:
            self.sample.close()
        if isinstance(getattr(self, "scorer", None), StatefulScorer):
            try:
                self.scorer.snapshot()
            except Exception:
                self._log_error(f"could not snapshot the {self.model_name} state:\n{traceback.format_exc()}")
        self.scorer = None
