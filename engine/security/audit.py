"""A hash-chained, append-only audit log of scoring decisions and model loads, one JSON object a line.

A line, compact and ASCII only, its members always in this order::

    {"seq":41,"time":"2025-01-31T09:12:03.123456Z","event":"decision","model":"churn","version":3,
     "request_id":"6f1d0c...","decision":"decline","prev":"9b0e...","hash":"5be1..."}

- ``seq`` counts lines from 0; ``time`` is when the line was appended (UTC, microseconds; the lines of one
  append share it); ``event`` says what happened; the caller's fields follow, each a JSON scalar.
- The last line of each append seals it: its ``prev`` is the previous append's ``hash`` (64 zeros for the first
  append), and its ``hash`` is SHA-256, or HMAC-SHA-256 with a key, of the append's bytes as written: its earlier
  lines, each with its newline, then the sealing line cut before ``,"hash":`` and closed with ``}``. The other
  lines of the append end after their fields. An append of one line (a model load, a run's end) is one sealed
  line; a batch of decisions is sealed every :data:`SEAL` lines. The bytes as written are hashed, not a
  re-serialisation, so a verifier needs no canonical-JSON rules of its own and any changed byte shows.

Why a hash per append and not per line: a scan's 57k decision lines took 100-115 ms to chain a line at a time
in Python (one SHA-256 call per line); as one stream per append the SHA-256 takes 11 ms. Like journald's
sealing, this names the append an edit is in, not the line; a log written a hash per line is a log of one-line
appends and verifies.

:func:`verify` names the first bad line or append: an edited line (its append's hash), a deleted line (a gap in
``seq``), lines swapped or moved (``seq`` out of order), an append spliced in from another chain (``prev``), a
cut or garbled line (not JSON, or no hash where an append ends) and a wrong key (the first append fails).

What it cannot see:

- Appends cut from the end: what is left is still a whole chain. Record :func:`head` somewhere the log's writers
  cannot reach and pass it as ``expect_head``: lines removed after it then show.
- Without a key, whoever can write the file can edit a line and recompute every hash after it; the unkeyed
  form catches accidents and naive edits only. With a key they cannot, so long as the key is kept from them.
  Verify a keyed log with its key, always: a chain rewritten without a key passes a check without one.

Callers must never pass a raw customer id, account or card number: pass :func:`pseudonym` of it. As a last
guard, a field holding what looks like a card number (13-19 digits starting 2-6, Luhn-valid, not inside a
longer word) is refused. Several processes may append at once (Triton model instances, batch jobs): an
exclusive ``flock`` serialises them, which holds on a local disk, not on NFS. One key per log: start a new log
when the key changes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import struct
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from engine.errors import DataFileError, InvalidInputError
from engine.security.cards import first_card_cell, has_card
from engine.security.jsontext import PLAIN, encode, json_member_parts, plain
from kernels.auditlines import MAX_SCORE, decision_lines

__all__ = [
    "AuditLog",
    "Decisions",
    "SEAL",
    "AuditReport",
    "head",
    "load_key",
    "pseudonym",
    "pseudonymizer",
    "pseudonyms",
    "verify",
]

GENESIS = (-1, "0" * 64)  # the head of an empty log: its first line has seq 0 and this hash as prev
_OWN = frozenset({"seq", "time", "prev", "hash"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Lines of one append under one hash at most: a bigger append is sealed every SEAL lines, so memory stays flat.
SEAL = 8192
_OFFSETS = struct.Struct("<q")  # an Arrow large string's offsets: little-endian int64
_PERSON = b"finscore-pseudo"  # the pseudonyms' BLAKE2b personalisation
_PLAIN_TEXT = re.compile(PLAIN)
_OPENING = np.frombuffer(b'{"seq":', np.uint8)
#: ``render(start, stop, first, middle)``: lines ``start`` to ``stop`` of an append, seq from ``first``, ``middle``
#: after each seq; their bytes and where the last line starts.
_Render = Callable[[int, int, int, str], tuple[memoryview, int]]


def _joined_subjects(parts: Sequence[Decisions]) -> pl.Series | None:
    """The subjects of ``parts`` one after the other (None when no part has any)."""
    if all(p.subject is None for p in parts):
        return None
    return pl.concat(
        [p.subject if p.subject is not None else pl.Series([None] * len(p), dtype=pl.String) for p in parts]
    )


def _table(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``texts`` (ASCII) as one byte array and the offsets of each."""
    data = "".join(texts).encode("ascii")
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    return offsets, np.frombuffer(data, dtype=np.uint8)


def _decision_codes(decision: pl.Series | str, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """``n`` rows' decisions as INT32 codes into a table of them (-1: null), and the table; ``decision`` one text
    for every row, or a column of them."""
    if isinstance(decision, str):  # one decision for the batch, known to the caller (a scan's "alert")
        return np.zeros(n, np.int32), (decision,)
    given = decision if decision.dtype == pl.String else decision.cast(pl.String)
    table = given.unique(maintain_order=True)
    if given.null_count():
        table = table.drop_nulls()
    if len(table) == 1 and not given.null_count():  # one decision for the batch
        return np.zeros(n, np.int32), (table.item(),)
    index = pl.int_range(len(table), eager=True)
    codes = given.replace_strict(table, index, default=-1, return_dtype=pl.Int32).fill_null(-1).to_numpy()
    return np.asarray(codes, dtype=np.int32), tuple(table.to_list())


@dataclass(frozen=True)
class Decisions:
    """A batch command's decisions as :meth:`AuditLog.append_decisions` writes them, one line each with the
    members ``request_id`` (``<run>/<prefix><row>``), ``batch`` (when ``batch`` is given), ``subject``,
    ``decision`` and ``score``. ``prefix``, ``batch`` and ``decision`` are INT32 codes into their tables
    (-1: null); ``subject`` is text (pseudonyms, or null; None: null on every row); ``score`` float64 rounded to 6
    decimals, NaN for none.
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("request_id", "batch", "subject", "decision", "score")

    run: str
    rows: np.ndarray
    prefix: np.ndarray
    prefixes: tuple[str, ...]
    batch: np.ndarray | None
    batches: tuple[str, ...]
    subject: pl.Series | None
    decision: np.ndarray
    decisions: tuple[str, ...]
    score: np.ndarray

    @classmethod
    def of(
        cls,
        run: str,
        rows: np.ndarray,
        *,
        prefix: str,
        batch: str | None,
        subject: pl.Series | None,
        decision: pl.Series | str,
        score: np.ndarray,
    ) -> Decisions:
        """One batch's decisions: its rows (whole numbers), their request ids' ``prefix`` and ``batch`` (one each),
        subjects (None: none), decisions (text, or one text for every row) and scores (rounded here to 6 decimals
        as Polars rounds)."""
        n = len(rows)
        codes, decisions = _decision_codes(decision, n)
        return cls(
            run=run,
            rows=np.asarray(rows, dtype=np.int64),
            prefix=np.zeros(n, np.int32),
            prefixes=(prefix,),
            batch=np.zeros(n, np.int32) if batch is not None else None,
            batches=(batch,) if batch is not None else (),
            subject=subject.cast(pl.String) if subject is not None and subject.null_count() < n else None,
            decision=codes,
            decisions=decisions,
            score=np.round(np.asarray(score, dtype=np.float64), 6),  # Polars' round(6) to the bit (a test checks)
        )

    @classmethod
    def join(cls, parts: Sequence[Decisions]) -> Decisions:
        """``parts`` (of one run, all with a batch or all without) one after the other."""
        if len(parts) == 1:
            return parts[0]

        def joined(codes: list[np.ndarray | None], tables: list[tuple[str, ...]]) -> tuple[np.ndarray, tuple[str, ...]]:
            union = list(dict.fromkeys(t for table in tables for t in table))
            where = {t: i for i, t in enumerate(union)}
            moved = []
            for c, table in zip(codes, tables, strict=True):
                remap = np.array([*(where[t] for t in table), -1], dtype=np.int32)  # -1 (null) stays -1
                moved.append(remap[c])
            return np.concatenate(moved), tuple(union)

        prefix, prefixes = joined([p.prefix for p in parts], [p.prefixes for p in parts])
        batched = parts[0].batch is not None
        batch, batches = joined([p.batch for p in parts], [p.batches for p in parts]) if batched else (None, ())
        decision, decisions = joined([p.decision for p in parts], [p.decisions for p in parts])
        return cls(
            run=parts[0].run,
            rows=np.concatenate([p.rows for p in parts]),
            prefix=prefix,
            prefixes=prefixes,
            batch=batch,
            batches=batches,
            subject=_joined_subjects(parts),
            decision=decision,
            decisions=decisions,
            score=np.concatenate([p.score for p in parts]),
        )

    def slice(self, start: int, stop: int) -> Decisions:
        """The decisions from ``start`` to ``stop``."""
        return dataclasses.replace(
            self,
            rows=self.rows[start:stop],
            prefix=self.prefix[start:stop],
            batch=self.batch[start:stop] if self.batch is not None else None,
            subject=self.subject.slice(start, stop - start) if self.subject is not None else None,
            decision=self.decision[start:stop],
            score=self.score[start:stop],
        )

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pl.DataFrame:
        """The same decisions as the frame :meth:`AuditLog.append_frame` takes."""

        def text(codes: np.ndarray, table: tuple[str, ...]) -> pl.Series:
            return pl.Series([*table, None], dtype=pl.String).gather(np.where(codes < 0, len(table), codes))

        prefix = text(self.prefix, self.prefixes)
        columns = {
            "request_id": (f"{self.run}/" + prefix + pl.Series(self.rows).cast(pl.String)),
            **({"batch": text(self.batch, self.batches)} if self.batch is not None else {}),
            "subject": self.subject if self.subject is not None else pl.Series([None] * len(self), dtype=pl.String),
            "decision": text(self.decision, self.decisions),
            "score": pl.Series(self.score).fill_nan(None),
        }
        return pl.DataFrame(columns)

    def arrays(self) -> Callable[[int, int], tuple[Any, ...]]:
        """:func:`kernels.auditlines.decision_lines`' arguments after ``opening`` and ``request``, for the rows
        from ``start`` to ``stop``: the Arrow buffers and tables made once, the rows' arrays sliced."""
        n = len(self.rows)
        if self.subject is None:  # no subject on any row: every line's is null
            offsets, data, present = np.zeros(n + 1, np.int64), np.zeros(0, np.uint8), np.zeros(n, np.bool_)
        else:
            subject = self.subject.to_arrow()
            if subject.type != pa.large_string():
                subject = subject.cast(pa.large_string())
            _, buffer, text = subject.buffers()
            offsets = np.frombuffer(buffer, dtype=np.int64)[subject.offset : subject.offset + n + 1]
            data = np.frombuffer(text, dtype=np.uint8) if text is not None else np.zeros(0, np.uint8)
            present = ~subject.is_null().to_numpy(zero_copy_only=False)
        rows = np.ascontiguousarray(self.rows, dtype=np.int64)
        prefix = np.ascontiguousarray(self.prefix, dtype=np.int32)
        # The text between the request id's row and the subject's value (its batch's), and between the subject's
        # value and the score (its decision's): one entry per batch and per decision, the last for null.
        if self.batch is not None:
            middles = [f'","batch":{encode(b)},"subject":' for b in (*self.batches, None)]
            middle = np.where(self.batch < 0, len(self.batches), self.batch).astype(np.int32)
        else:
            middles, middle = ['","subject":'], np.zeros(n, np.int32)
        endings = [f',"decision":{encode(d)},"score":' for d in (*self.decisions, None)]
        ending = np.where(self.decision < 0, len(self.decisions), self.decision).astype(np.int32)
        score = np.ascontiguousarray(self.score, dtype=np.float64)
        prefixes, middle_table, ending_table = _table(self.prefixes), _table(middles), _table(endings)

        def sliced(start: int, stop: int) -> tuple[Any, ...]:
            return (
                rows[start:stop], prefix[start:stop], *prefixes,
                middle[start:stop], *middle_table,
                present[start:stop], offsets[start : stop + 1], data,
                ending[start:stop], *ending_table,
                score[start:stop],
            )  # fmt: skip

        return sliced


def _check_key(key: bytes | None) -> bytes | None:
    if key is not None and (not isinstance(key, bytes) or len(key) < 16):
        msg = "an audit key must be at least 16 bytes"
        raise InvalidInputError(msg)
    return key


class _Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def _sealer(key: bytes | None) -> Callable[[], _Digest]:
    """A fresh SHA-256, or HMAC-SHA-256 with ``key``, to take one append's bytes."""
    if key is None:
        return hashlib.sha256
    return lambda: hmac.new(key, digestmod=hashlib.sha256)


def _check_event(event: Mapping[str, object], where: str) -> str:
    """The event's name, once every field is a JSON scalar that is not a card number; ``where`` names the event."""
    name = event.get("event")
    if not isinstance(name, str) or not name:
        msg = f"an audit event{where} needs an 'event' name, a non-empty string"
        raise InvalidInputError(msg)
    if not _OWN.isdisjoint(event.keys()):
        msg = f"audit fields{where} may not be named seq, time, prev or hash: the log writes those itself"
        raise InvalidInputError(msg)
    for field, value in event.items():
        if type(field) is not str or not field:
            msg = f"audit field names{where} must be non-empty strings, not {field!r}"
            raise InvalidInputError(msg)
        if isinstance(value, str):
            card = has_card(value)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            card = abs(value) >= 10**12 and has_card(str(value))
        elif isinstance(value, float):
            if math.isfinite(value):
                continue
            msg = f"audit field {field!r}{where} must be a finite number"
            raise InvalidInputError(msg)
        else:
            msg = f"audit field {field!r}{where} must be a str, int, float, bool or None, not {type(value).__name__}"
            raise InvalidInputError(msg)
        if card:
            msg = f"audit field {field!r}{where} holds what looks like a card number; log pseudonym(...) of it instead"
            raise InvalidInputError(msg)
    return name


def _tail(fd: int, path: Path) -> tuple[int, str]:
    """The seq and hash of the last line, read backwards from the end (the caller holds a lock)."""
    end = os.fstat(fd).st_size
    if end == 0:
        return GENESIS
    buf = b""
    while True:  # lines are a few hundred bytes: one read, nearly always
        start = max(0, end - 8192)
        buf = os.pread(fd, end - start, start) + buf
        end, cut = start, buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0 or start == 0:
            break
    try:
        record = json.loads(buf[cut + 1 :]) if buf.endswith(b"\n") else None
    except ValueError:
        record = None
    if type(record) is not dict or type(record.get("seq")) is not int or not _HEX64.fullmatch(str(record.get("hash"))):
        msg = f"{path}: the last line is not a whole audit line (a crash while writing?); run finscore audit verify"
        raise DataFileError(msg)
    return record["seq"], record["hash"]


class AuditLog:
    """Appends to the audit log at ``path``, keyed with HMAC-SHA-256 when ``key`` (16+ bytes) is given."""

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.path = Path(path)
        self._key = _check_key(key)

    def append(self, event: str, **fields: object) -> dict[str, object]:
        """Write one line and return its record, e.g. ``append("model_load", model="churn", version=3)``."""
        record: dict[str, object] = {"event": event, **fields}
        now, seq, prev, digest = self._write([record])
        return {"seq": seq, "time": now, **record, "prev": prev, "hash": digest}

    def append_many(self, events: Sequence[Mapping[str, object]]) -> tuple[int, str]:
        """Write one line per event (a mapping of ``event`` and the fields) under one lock and one fsync, sealed
        by one hash (one per :data:`SEAL` lines).

        Every event is checked before the first is written, and a failed write is cut back, so a batch is
        written whole or not at all (short of a crash). Returns the new head, ``(seq, hash)`` of the last line.
        """
        _, seq, _, digest = self._write(events)
        return seq, digest

    def append_frame(
        self, event: str, frame: pl.DataFrame, *, minted: Collection[str] = (), **shared: object
    ) -> tuple[int, str]:
        """Write one ``event`` line per row of ``frame``: the ``shared`` fields every line has, then the frame's
        columns (text, numbers or yes/no; a missing value is ``null``), whole or not at all; returns the new
        head like :meth:`append_many`.

        Polars writes the lines' JSON (a batch command's decisions have a faster way, :meth:`append_decisions`),
        the checks of :meth:`append_many` run a column at a time (no card number, finite numbers, no field named
        like the log's own), and the lines of an append are hashed as one stream. ``minted`` names columns the
        caller made itself from no customer value (batch names, pseudonyms): they are not searched for card
        numbers, which took a scan's 57k decision lines 25-35 ms of the 0.3 s their audit costs.
        """
        named = ["event", *shared]
        clash = [c for c in frame.columns if c in named]
        if clash:
            msg = f"audit field {clash[0]!r} is both a column of the frame and an event name or shared field"
            raise InvalidInputError(msg)
        _check_event({"event": event, **shared, **dict.fromkeys(frame.columns)}, "")
        found = first_card_cell(frame.drop(c for c in minted if c in frame.columns))
        if found is not None:
            column, row = found
            msg = (
                f"audit field {column!r} (row {row} of the frame) holds what looks like a card number; "
                "log pseudonym(...) of it instead"
            )
            raise InvalidInputError(msg)
        head = encode({"event": event, **shared})[1:-1] + ("," if frame.width else "")
        framed, members = json_member_parts(frame)
        parts = [pl.lit(head), *members]

        def render(start: int, stop: int, first: int, middle: str) -> tuple[memoryview, int]:
            return _unsealed_lines(framed.slice(start, stop - start), parts, first, middle)

        _, seq, _, digest = self._write_lines(framed.height, render)
        return seq, digest

    def append_decisions(self, event: str, decisions: Decisions, **shared: object) -> tuple[int, str]:
        """Write one ``event`` line per decision, as :meth:`append_frame` writes :meth:`Decisions.frame` with its
        request ids, batches and subjects minted, in one compiled pass (:func:`kernels.auditlines.decision_lines`).
        Decisions the pass cannot spell as they stand (text to escape, a score of a billion or more) go through
        :meth:`append_frame`, whose lines are the same."""
        named = {"event": event, **shared}
        clash = [c for c in Decisions.FIELDS if c in named]
        if clash:
            msg = f"audit field {clash[0]!r} is both a decision field and an event name or shared field"
            raise InvalidInputError(msg)
        _check_event({**named, **dict.fromkeys(Decisions.FIELDS)}, "")
        for name, table in (("decision", decisions.decisions), ("request_id", decisions.prefixes)):
            for text in table:
                if has_card(text):
                    msg = f"audit field {name!r} holds what looks like a card number; log pseudonym(...) of it instead"
                    raise InvalidInputError(msg)
        score = decisions.score
        given = score[~np.isnan(score)]
        if not np.isfinite(given).all():
            msg = "column 'score' holds a NaN or infinite number; JSON has none"
            raise InvalidInputError(msg)
        texts = [decisions.run, *decisions.prefixes, *decisions.batches, *decisions.decisions]
        spelled = (
            all(_PLAIN_TEXT.fullmatch(t) for t in texts)
            and not (given.size and np.abs(given).max() >= MAX_SCORE)
            and (decisions.subject is None or plain(decisions.subject))
        )
        if not spelled:
            return self.append_frame(event, decisions.frame(), minted=("request_id", "batch", "subject"), **shared)
        head = encode(named)[1:-1] + ',"request_id":"' + decisions.run + "/"
        sliced = decisions.arrays()

        def render(start: int, stop: int, first: int, middle: str) -> tuple[memoryview, int]:
            request = np.frombuffer((middle + head).encode("ascii"), np.uint8)
            out, starts = decision_lines(first, _OPENING, request, *sliced(start, stop))
            return out.data, int(starts[-2])

        _, seq, _, digest = self._write_lines(len(decisions.rows), render)
        return seq, digest

    def size(self) -> int:
        """Where the next line will start, in bytes (0 before the first): a place to read :meth:`lines` from
        later. Taken under the lock, so it is never in the middle of another writer's batch."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def lines(self, start: int = 0) -> Iterator[bytes]:
        """The lines from byte ``start`` (a :meth:`size` taken earlier) to the end as it is now, each with its
        newline; lines appended meanwhile are left out. Nothing is checked: :func:`verify` does that."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return
        with f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # no writer holds the lock now, so the file holds whole lines
            end = os.fstat(f.fileno()).st_size
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.seek(start)
            pos = start
            while pos < end:
                raw = f.readline(end - pos)
                if not raw:
                    break
                pos += len(raw)
                yield raw

    def _write(self, events: Sequence[Mapping[str, object]]) -> tuple[str, int, str, str]:
        names = [_check_event(e, f" (event {i} of the batch)" if len(events) > 1 else "") for i, e in enumerate(events)]
        bodies = []
        for name, event in zip(names, events, strict=True):
            if type(event) is not dict or next(iter(event)) != "event":
                event = {"event": name, **{k: v for k, v in event.items() if k != "event"}}
            bodies.append(encode(event)[1:-1])
        frame = pl.DataFrame({"body": bodies}, schema={"body": pl.String})

        def render(start: int, stop: int, first: int, middle: str) -> tuple[memoryview, int]:
            return _unsealed_lines(frame.slice(start, stop - start), [pl.col("body")], first, middle)

        return self._write_lines(frame.height, render)

    def _write_lines(self, n: int, render: _Render) -> tuple[str, int, str, str]:
        """Append ``n`` lines, ``render`` writing those from ``start`` to ``stop`` (checked and ASCII, seq from
        ``first``, ``middle`` after the seq), under one lock and one fsync, sealed every :data:`SEAL` lines;
        returns the time, and the seq, prev and hash of the last line."""
        sealer = _sealer(self._key)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by os.close
            seq, digest = _tail(fd, self.path)
            size = os.fstat(fd).st_size
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            middle, prev = f',"time":"{now}",', digest
            try:
                for start in range(0, n, SEAL):
                    stop = min(start + SEAL, n)
                    lines, last = render(start, stop, seq + 1, middle)
                    seq, prev = seq + stop - start, digest
                    # The last line is sealed: its text without the closing brace, then prev and the hash.
                    unsealed = lines[:last]
                    sealing = b"".join((lines[last:-2], f',"prev":"{prev}"'.encode("ascii")))
                    h = sealer()
                    h.update(unsealed)
                    h.update(sealing)
                    h.update(b"}")
                    digest = h.hexdigest()
                    _write_all(fd, (unsealed, sealing, f',"hash":"{digest}"}}\n'.encode("ascii")))
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # no half batch, and no unsealed lines that the next append would refuse
                raise
        finally:
            os.close(fd)
        return now, seq, prev, digest


def _unsealed_lines(frame: pl.DataFrame, members: list[pl.Expr], first: int, middle: str) -> tuple[memoryview, int]:
    """A line per row of ``frame`` with seq from ``first``, each with its newline, and where the last line starts:
    Polars writes them in one pass, and Arrow's buffer of the column is their concatenation already (joining
    them as Python text took longer than writing them)."""
    seq = (pl.int_range(pl.len()) + first).cast(pl.String)
    lines = frame.select(pl.concat_str([pl.lit('{"seq":'), seq, pl.lit(middle), *members, pl.lit("}\n")]))
    text = lines.to_series().to_arrow()
    if text.type != pa.large_string():
        text = text.cast(pa.large_string())
    _, offsets, data = text.buffers()
    first_byte, last, end = (
        _OFFSETS.unpack_from(offsets, 8 * (text.offset + i))[0] for i in (0, len(text) - 1, len(text))
    )
    return memoryview(data)[first_byte:end], last - first_byte


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write ``parts`` one after the other, in one call where the system takes them all (not joined first: a
    sealed part of 8,192 lines is 2 MB to copy)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if views:
            views[0] = views[0][done:]


def pseudonym(value: str, key: bytes) -> str:
    """A keyed BLAKE2b of ``value``, 32 hex digits: the same value and key give the same pseudonym.

    Log this, never the customer id, account or card number itself; whoever holds ``key`` (16-64 bytes, best
    not the audit key) can find a customer's lines by computing it again. Normalise ``value`` first (e.g.
    strip spaces from a card number): different text gives a different pseudonym.
    """
    if not isinstance(value, str):
        msg = f"pseudonym takes a str, not {type(value).__name__}"
        raise InvalidInputError(msg)
    return pseudonymizer(key)(value)


def pseudonymizer(key: bytes) -> Callable[[str], str]:
    """:func:`pseudonym` with ``key`` fixed: the keyed hash is set up once, for pseudonymising many values."""
    keyed = _pseudonym_state(key)

    def of(value: str) -> str:
        h = keyed.copy()
        h.update(value.encode("utf-8"))
        return h.hexdigest()

    return of


def pseudonyms(values: pl.Series, key: bytes) -> pl.Series:
    """:func:`pseudonym` of each value of a text column (a missing value stays missing), in one compiled call
    (:func:`kernels.blake2.blake2b_hex`, bit for bit ``hashlib``'s): a scan's 57k alert subjects took 32-60 ms
    as a Python loop over ``hashlib``, 15 ms so."""
    from kernels.blake2 import blake2b_hex, keyed_state

    return blake2b_hex(values, keyed_state(_pseudonym_key(key), digest_size=16, person=_PERSON), 16)


def _pseudonym_state(key: bytes) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16, key=_pseudonym_key(key), person=_PERSON)


def _pseudonym_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or not 16 <= len(key) <= 64:
        msg = "a pseudonym key must be 16 to 64 bytes"
        raise InvalidInputError(msg)
    return key


@dataclass(frozen=True)
class AuditReport:
    """What :func:`verify` found: ``lines`` sound lines up to ``head``, then the first ``problem`` and its ``line``."""

    ok: bool
    lines: int
    problem: str | None = None
    line: int | None = None
    head: tuple[int, str] = GENESIS
    keyed: bool = False

    def sentence(self) -> str:
        if not self.ok:
            return f"audit log BROKEN at line {self.line}: {self.problem}"
        how = "HMAC key checked" if self.keyed else "no key: a recomputed chain would also pass"
        return f"audit log OK: {self.lines} lines, head {self.head[0]}:{self.head[1]} ({how})"


def _parsed(raw: bytes, seq: int) -> tuple[str, dict[str, object]]:
    """What is wrong with ``raw`` (a line with its newline) as line ``seq`` of a log, if anything; and its record."""
    if not raw.endswith(b"\n"):
        return "the line is incomplete, the log ends in the middle of it", {}
    try:
        record = json.loads(raw)
    except ValueError:
        return "the line is not valid JSON (garbled or cut)", {}
    if type(record) is not dict or not (
        type(record.get("seq")) is int and type(record.get("time")) is str and type(record.get("event")) is str
    ):
        return "the line is not an audit line (its seq, time or event is missing or malformed)", {}
    sealed = "hash" in record
    if sealed != ("prev" in record) or (sealed and not _HEX64.fullmatch(str(record["hash"]))):
        return "the line is not an audit line (its prev or hash is missing or malformed)", {}
    if sealed and not raw.endswith(f',"hash":"{record["hash"]}"}}\n'.encode("ascii")):
        return "the line is not an audit line (its hash is not its last member)", {}
    found = record["seq"]
    if found != seq:
        why = "lines before it were deleted or reordered" if found > seq else "lines were reordered or repeated"
        return f"it has seq {found} where {seq} was expected, so {why}", {}
    return "", record


def _seal_problem(first: int, last: int, keyed: bool, unkeyed_matches: bool) -> str:
    """Why the append of lines ``first``..``last`` (from 0) fails its hash."""
    if first < last:
        return (
            f"lines {first + 1}-{last + 1} were written in one append and do not match the hash on line "
            f"{last + 1}, so one of them was edited" + (" or the key is wrong" if keyed and first == 0 else "")
        )
    if first > 0:
        return "its hash does not match its content, so the line was edited"
    if keyed and unkeyed_matches:
        return "the log is hashed without a key, but a key was given"
    if keyed:
        return "its hash does not match, so the key is wrong or the line was edited"
    return "its hash does not match, so the line was edited or the log is keyed and needs its key"


def verify(
    path: str | os.PathLike[str], *, key: bytes | None = None, expect_head: tuple[int, str] | None = None
) -> AuditReport:
    """Check every line of the log and stop at the first problem; lines appended meanwhile are left out.

    ``expect_head`` is a ``(seq, hash)`` recorded earlier with :func:`head`: the line with that seq must
    still be there with that hash, which shows lines cut from the end or a chain rewritten up to it.
    """
    sealer, keyed = _sealer(_check_key(key)), key is not None
    if expect_head is not None and not (
        type(expect_head[0]) is int and expect_head[0] >= -1 and _HEX64.fullmatch(str(expect_head[1]))
    ):
        msg = "expect_head must be (seq, hash) as head() returns it: seq from -1, hash 64 lowercase hex digits"
        raise InvalidInputError(msg)
    try:
        f = Path(path).open("rb")
    except OSError as exc:
        msg = f"{path}: the audit log cannot be read ({exc.strerror})"
        raise DataFileError(msg) from exc
    seq, prev, pos = 0, GENESIS[1], 0
    first = 0  # the seq of the first line of the append being read
    h, plain = sealer(), hashlib.sha256()  # ``plain``: the first append unkeyed, to tell a log that has no key

    def broken(problem: str, line: int) -> AuditReport:
        return AuditReport(False, first, problem, line + 1, (first - 1, prev), keyed)

    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # no writer holds the lock now, so the file holds whole lines
        size = os.fstat(f.fileno()).st_size
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        for raw in f:
            raw = raw[: size - pos]
            pos += len(raw)
            problem, record = _parsed(raw, seq)
            if problem:
                return broken(problem, seq)
            if "hash" not in record:  # the append goes on: its hash is on its last line
                h.update(raw)
                if first == 0 and keyed:
                    plain.update(raw)
                seq += 1
                continue
            digest = str(record["hash"])
            signed = raw[: -len(digest) - 12] + b"}"  # cut before ,"hash":"...", closed again
            h.update(signed)
            if first == 0 and keyed:
                plain.update(signed)
            if h.hexdigest() != digest:
                return broken(_seal_problem(first, seq, keyed, plain.hexdigest() == digest), first)
            if record["prev"] != prev:
                return broken("it does not follow the append before it (its prev is not that append's hash)", first)
            if expect_head is not None and first <= expect_head[0] <= seq and (seq, digest) != expect_head:
                problem = f"it is seq {expect_head[0]} but not the recorded head, so the log was rewritten up to it"
                return broken(problem, expect_head[0])
            seq, prev, first, h = seq + 1, digest, seq + 1, sealer()
            if pos >= size:
                break
    if first < seq:
        which = f"lines {first + 1}-{seq} are" if seq - first > 1 else f"line {seq} is"
        problem = f"{which} not sealed by a hash: the log ends in the middle of an append"
        return broken(problem, first)
    if expect_head is not None and expect_head[0] >= seq:
        problem = (
            f"the log has {seq} line{'' if seq == 1 else 's'} but the recorded head is seq {expect_head[0]}, "
            "so lines were cut from its end"
        )
        return broken(problem, seq)
    return AuditReport(True, seq, head=(seq - 1, prev), keyed=keyed)


def head(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(seq, hash)`` of the last line, ``(-1, 64 zeros)`` for an empty log: record it outside the log."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        msg = f"{path}: the audit log cannot be read ({exc.strerror})"
        raise DataFileError(msg) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _tail(fd, Path(path))
    finally:
        os.close(fd)


def load_key(path: str | os.PathLike[str]) -> bytes:
    """An audit key from a file of 32 raw bytes or 64 hex digits (a trailing newline is fine)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        msg = f"{path}: the audit key file cannot be read ({exc.strerror})"
        raise DataFileError(msg) from exc
    text = data.strip().lower().decode("ascii", "replace")
    if _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    if len(data) == 32:
        return data
    msg = f"{path}: an audit key file holds 32 raw bytes or 64 hex digits, not {len(data)} bytes"
    raise InvalidInputError(msg)
