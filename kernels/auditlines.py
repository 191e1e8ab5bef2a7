"""The audit log's ``decision`` lines of a batch command, written in one compiled pass over the batch's arrays.

A scan appends one line per alert (57k for a million events): Polars wrote them as text columns joined per line,
which took 35 ms of the 47 its writer cost; this pass takes 3 ms (50-60 ns a line). Each line is its bytes copied
into one buffer: the text every line shares (``seq``'s key, the time, the event and shared fields, the run's part
of the request id), the row's number, the text from the request id's end to the subject (the batch between) and
from the subject to the score (the decision between), each picked by a code from a small table; the subject
from an Arrow string buffer; the score as its rounded value, spelled as Polars casts a float to text
(see :func:`put_score`).

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
    """Copy ``src[a:b]`` to ``out[p]``; the position after it. Indexed by unsigned numbers, so Numba checks for
    no negative index and LLVM makes the loop a vector copy: 3.5 ns for 100 bytes, where a slice assignment
    (``out[p:q] = src[a:b]``, views made and checked for overlap) took 35."""
    up, ua = np.uint64(p), np.uint64(a)
    for k in range(np.uint64(b - a)):
        out[up + k] = src[ua + k]
    return p + b - a


@numba.njit(cache=True, nogil=True)
def _put_uint(out: np.ndarray, p: int, v: int) -> int:  # pragma: no cover - compiled
    """Write ``v`` (0 or more) in decimal at ``out[p]``; the position after it (unsigned: no floor division's
    sign fix-ups)."""
    u = np.uint64(v)
    n = np.uint64(1)
    t = u
    while t >= np.uint64(10):
        t = t // np.uint64(10)
        n += np.uint64(1)
    at = np.uint64(p) + n
    while at > np.uint64(p):
        at -= np.uint64(1)
        q = u // np.uint64(10)
        out[at] = np.uint8(48 + (u - q * np.uint64(10)))
        u = q
    return p + int(n)


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
def decision_lines(
    first_seq: int,
    opening: np.ndarray,
    request: np.ndarray,
    rows: np.ndarray,
    prefix: np.ndarray,
    prefix_offsets: np.ndarray,
    prefix_data: np.ndarray,
    middle: np.ndarray,
    middle_offsets: np.ndarray,
    middle_data: np.ndarray,
    subject_valid: np.ndarray,
    subject_offsets: np.ndarray,
    subject_data: np.ndarray,
    ending: np.ndarray,
    ending_offsets: np.ndarray,
    ending_data: np.ndarray,
    score: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """One line a row, ``{"seq":<seq><request><prefix><row><middle><subject><ending><score>}`` and a newline:
    ``opening`` is ``{"seq":``; ``request`` the text from after the seq to the request id's row part (the time,
    the event and shared fields, ``"request_id":"<run>/``); ``prefix``, ``middle`` and ``ending`` are codes into
    tables of texts (the request id's prefix; its closing quote to the subject's value, the batch between;
    the subject's value to the score's, the decision between). ``subject_valid`` says which rows have a
    subject in the Arrow buffers (the others' is null); a NaN score is null. Answers the bytes and where each
    line starts (one more: the end)."""
    n = len(rows)
    widest = 0
    for t in (prefix_offsets, middle_offsets, ending_offsets):
        longest = 0
        for k in range(len(t) - 1):
            longest = max(longest, t[k + 1] - t[k])
        widest += longest
    longest_subject = 0
    for i in range(n):
        longest_subject = max(longest_subject, subject_offsets[i + 1] - subject_offsets[i])
    # seq and row (20 digits each), the three texts, the subject quoted, a score (at most 17 characters), "}\n"
    bound = len(opening) + len(request) + 40 + widest + longest_subject + 6 + 24 + 3
    out = np.empty(n * bound, dtype=np.uint8)
    starts = np.empty(n + 1, dtype=np.int64)
    p = 0
    for i in range(n):
        starts[i] = p
        p = _copy(out, p, opening, 0, len(opening))
        p = _put_uint(out, p, first_seq + i)
        p = _copy(out, p, request, 0, len(request))
        p = _copy(out, p, prefix_data, prefix_offsets[prefix[i]], prefix_offsets[prefix[i] + 1])
        p = _put_uint(out, p, rows[i])
        p = _copy(out, p, middle_data, middle_offsets[middle[i]], middle_offsets[middle[i] + 1])
        if subject_valid[i]:
            out[p] = 34
            p = _copy(out, p + 1, subject_data, subject_offsets[i], subject_offsets[i + 1])
            out[p] = 34
            p += 1
        else:
            p = _copy(out, p, _NULL, 0, 4)
        p = _copy(out, p, ending_data, ending_offsets[ending[i]], ending_offsets[ending[i] + 1])
        if np.isnan(score[i]):
            p = _copy(out, p, _NULL, 0, 4)
        else:
            p = put_score(out, p, score[i])
        out[p] = 125  # }
        out[p + 1] = 10
        p += 2
    starts[n] = p
    return out[:p], starts
