"""The audit log's ``decision`` lines of a batch command, written in one compiled pass over the batch's arrays.

A scan appends one line per alert (57k for a million events): Polars wrote them as text columns joined per line,
which took a scan's audit 35 ms of the 47 its writer costs. Here each line is its bytes copied into one buffer:
the text every line shares (``seq``'s key, the time, the event and shared fields, the run's part of the request
id) once per line, then the row's own values. The values that take few spellings (a request id's prefix, the
batch, the decision) come as codes into small tables of their bytes; the subject as an Arrow string buffer;
the score as its rounded value, spelled as Polars casts a float to text (see :func:`put_score`).

The caller checks that the text is JSON as it stands (no escaping needed) and that no field is a card number;
this kernel only copies. :func:`engine.security.audit.AuditLog.append_decisions` is the caller.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["MAX_SCORE", "decision_lines", "put_score"]

#: Scores spelled here: below this magnitude, the shortest text of a score rounded to 6 decimals is its digits
#: with the trailing zeros cut (at most 15 significant digits, which no other text of 15 or fewer reads back to).
MAX_SCORE = 1e9
_NULL = np.frombuffer(b"null", dtype=np.uint8)


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(out: np.ndarray, p: int, src: np.ndarray, a: int, b: int) -> int:  # pragma: no cover - compiled
    """Copy ``src[a:b]`` to ``out[p]``; the position after it. A loop: for the few bytes of a field it costs
    less than a slice assignment (whose checks the two long texts of each line are worth)."""
    for k in range(b - a):
        out[p + k] = src[a + k]
    return p + b - a


@numba.njit(cache=True, nogil=True)
def _put_uint(out: np.ndarray, p: int, v: int) -> int:  # pragma: no cover - compiled
    """Write ``v`` (0 or more) in decimal at ``out[p]``; the position after it (unsigned: no floor division's
    sign fix-ups)."""
    u = np.uint64(v)
    n = 1
    t = u
    while t >= np.uint64(10):
        t = t // np.uint64(10)
        n += 1
    for k in range(n - 1, -1, -1):
        q = u // np.uint64(10)
        out[p + k] = np.uint8(48 + (u - q * np.uint64(10)))
        u = q
    return p + n


@numba.njit(cache=True, nogil=True)
def put_score(out: np.ndarray, p: int, x: float) -> int:  # pragma: no cover - compiled
    """Write ``x``, a score Polars rounded to 6 decimals (``abs(x) <`` :data:`MAX_SCORE`), as Polars casts it to
    text: ``0.585949``, ``2.0``, ``-0.0``, and below 1e-5 ``5e-6``; the position after it."""
    if x < 0.0 or (x == 0.0 and np.signbit(x)):
        out[p] = 45  # -
        p += 1
        x = -x
    m = np.int64(np.rint(x * 1e6))  # the rounded score's micro-units: exact, the rounding error is far below 0.5
    if 0 < m < 10:
        out[p] = 48 + m
        out[p + 1] = 101  # e
        out[p + 2] = 45  # -
        out[p + 3] = 54  # 6
        return p + 4
    p = _put_uint(out, p, int(m // 1_000_000))
    out[p] = 46  # .
    p += 1
    frac = m % 1_000_000
    if frac == 0:
        out[p] = 48
        return p + 1
    digits = 6
    while frac % 10 == 0:
        frac //= 10
        digits -= 1
    for k in range(digits - 1, -1, -1):
        out[p + k] = 48 + frac % 10
        frac //= 10
    return p + digits


@numba.njit(cache=True, nogil=True)
def _put_code(out: np.ndarray, p: int, code: int, offsets: np.ndarray, data: np.ndarray) -> int:  # pragma: no cover
    """Write entry ``code`` of a table (``offsets`` into ``data``), between quotes; ``null`` for code -1."""
    if code < 0:
        return _copy(out, p, _NULL, 0, 4)
    out[p] = 34
    p = _copy(out, p + 1, data, offsets[code], offsets[code + 1])
    out[p] = 34
    return p + 1


@numba.njit(cache=True, nogil=True)
def decision_lines(
    first_seq: int,
    opening: np.ndarray,
    request: np.ndarray,
    rows: np.ndarray,
    prefix: np.ndarray,
    prefix_offsets: np.ndarray,
    prefix_data: np.ndarray,
    batch_key: np.ndarray,
    batch: np.ndarray,
    batch_offsets: np.ndarray,
    batch_data: np.ndarray,
    subject_key: np.ndarray,
    subject_valid: np.ndarray,
    subject_offsets: np.ndarray,
    subject_data: np.ndarray,
    decision_key: np.ndarray,
    decision: np.ndarray,
    decision_offsets: np.ndarray,
    decision_data: np.ndarray,
    score_key: np.ndarray,
    score: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The lines ``{"seq":N<request>"<prefix><row>",<batch>,<subject>,<decision>,<score>}`` and newline, one per
    row: ``opening`` is ``{"seq":``; ``request`` the text from after the seq to the request id's row part
    (the time, the event and shared fields, ``"request_id":"<run>/``); each ``*_key`` the text before that
    field's value (``","batch":`` and so on; an empty ``batch_key`` leaves the batch out). ``prefix``, ``batch``
    and ``decision`` are codes into their tables (-1: null); ``subject_valid`` says which rows have a subject in
    the Arrow buffers; a NaN score is null. Answers the bytes and where each line starts (one more: the end)."""
    n = len(rows)
    widest = 0
    for t in (prefix_offsets, batch_offsets, decision_offsets):
        for k in range(len(t) - 1):
            widest = max(widest, t[k + 1] - t[k])
    longest_subject = 0
    for i in range(n):
        longest_subject = max(longest_subject, subject_offsets[i + 1] - subject_offsets[i])
    fixed = len(opening) + len(request) + len(batch_key) + len(subject_key) + len(decision_key) + len(score_key)
    # seq and row (20 digits each), three table entries and the subject quoted, a score (17 characters), "}\n"
    bound = fixed + 40 + 3 * (widest + 2) + longest_subject + 6 + 24 + 3
    out = np.empty(n * bound, dtype=np.uint8)
    starts = np.empty(n + 1, dtype=np.int64)
    p = 0
    for i in range(n):
        starts[i] = p
        out[p : p + len(opening)] = opening
        p += len(opening)
        p = _put_uint(out, p, first_seq + i)
        out[p : p + len(request)] = request
        p += len(request)
        p = _copy(out, p, prefix_data, prefix_offsets[prefix[i]], prefix_offsets[prefix[i] + 1])
        p = _put_uint(out, p, rows[i])
        out[p] = 34  # the request id's closing quote
        p += 1
        if len(batch_key):
            p = _copy(out, p, batch_key, 0, len(batch_key))
            p = _put_code(out, p, batch[i], batch_offsets, batch_data)
        p = _copy(out, p, subject_key, 0, len(subject_key))
        if subject_valid[i]:
            out[p] = 34
            p = _copy(out, p + 1, subject_data, subject_offsets[i], subject_offsets[i + 1])
            out[p] = 34
            p += 1
        else:
            p = _copy(out, p, _NULL, 0, 4)
        p = _copy(out, p, decision_key, 0, len(decision_key))
        p = _put_code(out, p, decision[i], decision_offsets, decision_data)
        p = _copy(out, p, score_key, 0, len(score_key))
        if np.isnan(score[i]):
            p = _copy(out, p, _NULL, 0, 4)
        else:
            p = put_score(out, p, score[i])
        out[p] = 125  # }
        out[p + 1] = 10
        p += 2
    starts[n] = p
    return out[:p], starts
