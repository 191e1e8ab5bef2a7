"""Where finscore keeps its own records, and the audit trail its commands and served models append to.

Everything lives under one folder, ``FINSCORE_HOME`` (default ``$XDG_STATE_HOME/finscore``, else
``~/.local/state/finscore``), created mode 0700:

- ``audit.jsonl``: the hash-chained audit log of :mod:`engine.security.audit` (``FINSCORE_AUDIT_LOG`` names another
  file). ``FINSCORE_AUDIT_KEY_FILE`` keys its chain with HMAC-SHA-256.
- ``pseudonym.key``: 32 random bytes, made mode 0600 on first use (``FINSCORE_PSEUDONYM_KEY_FILE`` names
  another file). Audit lines name a customer, card or address only by its keyed pseudonym, so whoever holds
  the key can find a customer's lines (for an access or erasure request) and nobody else can.

A served model appends ``model_load`` when Triton loads it; ``finscore score`` and ``scan`` append one
``decision`` per decision they write and a closing ``run`` line saying whether the output was written;
``finscore forget`` appends ``erasure``. In a container, set ``FINSCORE_HOME`` to a mounted volume.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

import polars as pl

from engine.errors import DataFileError
from engine.security.audit import AuditLog, Decisions, load_key, pseudonymizer, pseudonyms
from engine.security.cards import candidates, find_cards
from engine.settings import resolve_settings

__all__ = [
    "ENV_HOME",
    "ENV_LOG",
    "ENV_PSEUDONYM_KEY",
    "DecisionAudit",
    "Trail",
    "finscore_home",
    "new_run_id",
    "subject_of",
    "subjects_of",
]

ENV_HOME = "FINSCORE_HOME"
ENV_LOG = "FINSCORE_AUDIT_LOG"
ENV_PSEUDONYM_KEY = "FINSCORE_PSEUDONYM_KEY_FILE"
#: Lines appended under one lock and one fsync: big enough that fsync is not the cost, small enough to stream.
BATCH = 8192
#: The column an output frame may carry its rows' subject pseudonyms in, dropped before the output is written.
SUBJECT = "_subject"
#: The decision lines' fields made here from no raw value: batch names and pseudonyms. (A request id is too when its
#: row is a number, see :meth:`DecisionAudit.record`; other rows are the caller's text, and searched.)
_MINTED = ("batch", "subject")
_LONG_DIGITS = re.compile(r"\d{12}")


def finscore_home() -> Path:
    """The folder finscore keeps its own records in (created 0700 if missing)."""
    env = resolve_settings().home
    if env is not None:
        home = env.expanduser()
    else:
        base = os.environ.get("XDG_STATE_HOME", "").strip()
        home = (Path(base) if base else Path.home() / ".local" / "state") / "finscore"
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"{home}: finscore cannot create its records folder ({exc.strerror}); set {ENV_HOME} to a writable one"
        raise DataFileError(msg) from None
    return home


def _pseudonym_key(path: Path) -> bytes:
    """The key in ``path``, made first if missing: written aside and linked in, so two processes starting at
    once agree on one key and neither reads half of it."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        key = path.read_bytes()
    except OSError as exc:
        msg = f"{path}: the pseudonym key cannot be read ({exc.strerror})"
        raise DataFileError(msg) from None
    if not 16 <= len(key) <= 64:
        msg = f"{path}: a pseudonym key file holds 16 to 64 raw bytes, not {len(key)}"
        raise DataFileError(msg)
    return key


def subject_of(value: object, key: bytes) -> str | None:
    """:meth:`Trail.subject` with the key given: for code that runs where the trail is not (a Dask worker)."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return _subject(text, pseudonymizer(key), maybe_card=True)


def subjects_of(values: pl.Series, key: bytes) -> pl.Series:
    """:func:`subject_of` of every value of a text column (the same pseudonyms), a column at a time: each
    distinct value is hashed once (a log's alerts name the same users and addresses again and again), a pass
    over the bytes finds the few values that could be card numbers, and the keyed hash runs compiled over the
    column (:func:`engine.security.audit.pseudonyms`)."""
    text = values.cast(pl.String)
    if text.null_count() == len(text):  # no subject named on any row (a log of events without users or addresses)
        return pl.Series(SUBJECT, [None] * len(text), dtype=pl.String)
    distinct = text.drop_nulls().unique(maintain_order=True)
    names = [v.strip() for v in distinct.to_list()]
    for i in candidates(distinct).arg_true().to_list():  # every spelling of one card is one subject
        if find_cards(names[i]) == [(0, len(names[i]))]:
            names[i] = names[i].replace(" ", "").replace("-", "")
    out = pseudonyms(pl.Series(SUBJECT, [n or None for n in names], dtype=pl.String), key)
    if len(distinct) < len(text) - text.null_count():
        return text.replace_strict(distinct, out, return_dtype=pl.String).alias(SUBJECT)
    if text.null_count():  # every value once (record ids): the pseudonyms are in the column's order already
        return pl.Series(SUBJECT, [None] * len(text), dtype=pl.String).scatter(text.is_not_null().arg_true(), out)
    return out


def _subject(text: str, of: Callable[[str], str], *, maybe_card: bool) -> str | None:
    text = text.strip()
    if not text:
        return None
    if maybe_card and find_cards(text) == [(0, len(text))]:  # every spelling of one card is one subject
        text = text.replace(" ", "").replace("-", "")
    return of(text)


def new_run_id() -> str:
    """A fresh id for one command's run: request ids are ``<run>/<row>``. 16 hex digits, drawn again in the
    rare case that 12 or more in a row are decimal: a run id, and the request ids that begin with it, never
    look like part of a card number."""
    while True:
        run = uuid.uuid4().hex[:16]
        if not _LONG_DIGITS.search(run):
            return run


class Trail:
    """The audit log and pseudonym key of this environment; :meth:`from_env` is the usual way in."""

    def __init__(self, log: AuditLog, pseudonym_key: bytes) -> None:
        self.log = log
        self._key = pseudonym_key

    @classmethod
    def from_env(cls) -> Trail:
        s = resolve_settings()
        home: Path | None = None
        log_path = s.audit_log
        if log_path is None:
            home = finscore_home()
            log_path = home / "audit.jsonl"
        key_file = s.audit_key_file
        pseudo_path = s.pseudonym_key_file or (home or finscore_home()) / "pseudonym.key"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return cls(AuditLog(log_path, key=load_key(key_file) if key_file else None), _pseudonym_key(pseudo_path))

    @property
    def path(self) -> Path:
        return self.log.path

    @property
    def pseudonym_key(self) -> bytes:
        """For :func:`subject_of` where the trail is not at hand; as secret as the key file."""
        return self._key

    def subject(self, value: object) -> str | None:
        """The pseudonym of a customer id, card number or address (None for a missing value).

        Text is stripped; a card number written with spaces or dashes is compacted first, so every spelling
        of one card gives one pseudonym.
        """
        return subject_of(value, self._key)

    def event(self, event: str, **fields: object) -> None:
        """Append one line (fields are JSON scalars, never a raw identifier)."""
        self.log.append(event, **fields)

    def model_load(self, model: str, version: str | int, *, where: str, **fields: object) -> None:
        """Record that ``model`` ``version`` was loaded, ``where`` = ``triton`` or ``in-process``."""
        self.log.append("model_load", model=model, version=str(version), where=where, pid=os.getpid(), **fields)

    def decisions(
        self, model: str, version: str | int, frame: pl.DataFrame | Decisions, *, minted: Collection[str] = ()
    ) -> int:
        """Append one ``decision`` line per row of ``frame`` (its columns the fields: ``request_id``,
        ``subject``, ``decision``, ``score``...; or :class:`Decisions`, written by one compiled pass); returns how
        many. Written in batches of :data:`BATCH` lines, each whole or not at all. ``minted``: columns made here
        from no raw value (:meth:`AuditLog.append_frame`)."""
        if isinstance(frame, Decisions):
            for start in range(0, len(frame), BATCH):
                some = frame.slice(start, min(start + BATCH, len(frame)))
                self.log.append_decisions("decision", some, model=model, version=str(version))
            return len(frame)
        for start in range(0, frame.height, BATCH):
            part = frame.slice(start, BATCH)
            self.log.append_frame("decision", part, minted=minted, model=model, version=str(version))
        return frame.height


class DecisionAudit:
    """The audit of one batch command's run: ``decision`` lines as outputs are written, one ``run`` line at
    the end.

    ``decision`` and ``score`` name the output columns carrying the decision and its score; ``subject`` the
    column of the raw id (pseudonymised here, before anything else sees it). Request ids are
    ``<run>/<row>``, the row counted from 0 in the input, so a decision can be traced to its input row.

    A command that resumes (``scan``) passes the ``run`` id of its first attempt and calls :meth:`resume`
    before recording: the lines a killed attempt wrote are then not written again. ``written`` counts the
    run's decision lines in the log, an earlier attempt's included.
    """

    def __init__(
        self,
        trail: Trail,
        *,
        command: str,
        model: str,
        version: str | int,
        decision: str,
        score: str,
        subject: str | None = None,
        run: str | None = None,
    ) -> None:
        self.trail = trail
        self.command = command
        self.model = model
        self.version = str(version)
        self.decision = decision
        self.score = score
        self.subject = subject
        self.run = run or new_run_id()
        self.written = 0
        self._pending: list[pl.LazyFrame | Decisions] = []  # one kind at a time, see _kind
        self._queued = 0  # rows in the queued batches (before the resumed run's lines are left out)
        # What the pending lines are (:meth:`record`): "compiled" (rows, written by AuditLog.append_decisions),
        # "minted" (request ids of the run's own text) or "searched" (request ids searched like raw values).
        self._kind = "searched"
        self._held = pl.Series("request_id", [], dtype=pl.String)
        self._closed = False

    def resume(self, since: int = 0) -> None:
        """Take up this run where an earlier attempt was killed: read the log from byte ``since`` (its size
        before that attempt's first line) for what the run holds already, so that :meth:`record` queues only
        the decisions still missing and :meth:`close` writes no second ``run`` line.

        Lines are matched by request id, not counted, so an attempt killed between two appends of one flush,
        or in the middle of one (whole lines reach the file in order), ends with each decision once.
        """
        run = re.escape(self.run.encode("ascii"))
        ours = re.compile(rb'"request_id":"(' + run + rb'/[^"]*)"')  # only this run's decision lines have one
        closing = re.compile(rb'"event":"run",.*"run":"' + run + rb'"')
        held = []
        for raw in self.trail.log.lines(since):
            if not raw.endswith(b"}\n"):  # cut short by a crash: no line, and the log takes none until repaired
                continue
            if found := ours.search(raw):
                held.append(found.group(1).decode("ascii"))
            elif closing.search(raw):
                self._closed = True
        self._held = pl.Series("request_id", held, dtype=pl.String).unique()
        self.written = self._held.len()

    def record(
        self, frame: pl.DataFrame, *, batch: str | None = None, prefix: str = "", decided: str | None = None
    ) -> None:
        """Queue a decision line per row of ``frame`` (a Polars frame with ``row`` and the named columns);
        lines are appended :data:`BATCH` at a time, and by :meth:`flush`. ``batch`` names the checkpoint
        batch the rows come from, for a command that resumes: each line carries it. ``prefix`` goes before
        each row in its request id (``scan``: the file's number and a colon); it ends in a non-digit.
        ``decided`` is every row's decision when the rows have one (a scan's ``alert``): ``frame`` then needs no
        column of it.

        A request id made of whole row numbers and such a prefix is the run's own text: the audit log neither
        searches it for card numbers nor escapes it. Any other ``row`` column is searched like a raw value."""
        if not frame.height:
            return
        if prefix and (prefix[-1].isdigit() or find_cards(prefix) or not prefix.isascii() or '"' in prefix):
            msg = f"a request id prefix is the run's own text ending in a non-digit, not {prefix!r}"
            raise ValueError(msg)
        minted = frame.get_column("row").dtype.is_integer()
        subjects: pl.Series | None = None
        if SUBJECT in frame.columns:  # pseudonymised already, where the raw value was read
            subjects = frame.get_column(SUBJECT).cast(pl.String)
        elif self.subject and self.subject in frame.columns:
            subjects = subjects_of(frame.get_column(self.subject), self.trail.pseudonym_key)
        if minted and not self._held.len():  # the lines are written by one compiled pass (AuditLog.append_decisions)
            kind = "compiled" if batch is None else "compiled-batches"
            if self._pending and kind != self._kind:
                self.flush()
            self._kind = kind
            self._pending.append(
                Decisions.of(
                    self.run,
                    frame.get_column("row").to_numpy(),
                    prefix=prefix,
                    batch=batch,
                    subject=subjects,
                    decision=decided if decided is not None else frame.get_column(self.decision),
                    score=frame.get_column(self.score).cast(pl.Float64).to_numpy(),
                )
            )
            self._queued += frame.height
            if self._queued >= BATCH:
                self.flush(whole=True)
            return
        rows = pl.col("row")
        subject = pl.lit(subjects) if subjects is not None else pl.lit(None, dtype=pl.String)
        score = pl.col(self.score).cast(pl.Float64)
        # Kept lazy: the queued batches' lines are made in one pass when they are appended.
        lines = frame.lazy().select(
            pl.concat_str([pl.lit(f"{self.run}/{prefix}"), rows.cast(pl.String)]).alias("request_id"),
            *([pl.lit(batch, dtype=pl.String).alias("batch")] if batch is not None else []),
            subject.alias("subject"),
            (pl.lit(decided, dtype=pl.String) if decided is not None else pl.col(self.decision).cast(pl.String)).alias(
                "decision"
            ),
            pl.when(score.is_nan()).then(None).otherwise(score.round(6)).alias("score"),
        )
        if self._held.len():
            lines = lines.filter(~pl.col("request_id").is_in(self._held))
        kind = "minted" if minted else "searched"
        if self._pending and kind != self._kind:
            self.flush()  # one append's request ids are all the run's own text or all searched
        self._kind = kind
        self._pending.append(lines)
        self._queued += frame.height
        if self._queued >= BATCH:
            self.flush(whole=True)

    def flush(self, *, whole: bool = False) -> None:
        """Append the queued decision lines; with ``whole``, only as many as fill appends of :data:`BATCH` lines,
        the rest staying queued, so that each append is one sealed run of lines (not a full one and a short one)."""
        if not self._pending:
            return
        if self._kind.startswith("compiled"):
            queued = Decisions.join([p for p in self._pending if isinstance(p, Decisions)])
            n = len(queued) - len(queued) % BATCH if whole else len(queued)
            if n:
                self.written += self.trail.decisions(self.model, self.version, queued.slice(0, n))
            self._pending = [queued.slice(n, len(queued))] if n < len(queued) else []
            self._queued = len(queued) - n
            return
        frame = pl.concat([p for p in self._pending if isinstance(p, pl.LazyFrame)]).collect()
        n = frame.height - frame.height % BATCH if whole else frame.height
        if n:
            minted = (*_MINTED, "request_id") if self._kind == "minted" else _MINTED
            self.written += self.trail.decisions(self.model, self.version, frame.head(n), minted=minted)
        rest = frame.slice(n)
        self._pending, self._queued = ([rest.lazy()] if rest.height else []), rest.height

    def close(self, status: str, **counts: object) -> None:
        """The closing ``run`` line: ``status`` is ``written`` (the output holds these decisions) or
        ``failed`` (it does not: the decisions of this run id never reached a file). Written once per run:
        not again when :meth:`resume` found it."""
        self.flush()
        if self._closed:
            return
        self.trail.event(
            "run",
            command=self.command,
            model=self.model,
            version=self.version,
            run=self.run,
            status=status,
            decisions=self.written,
            **counts,
        )
        self._closed = True
