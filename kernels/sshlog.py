"""OpenSSH auth-log lines -> events -> per-source-IP window features, written once as Polars expressions.

Only regular-expression ``str.extract`` / ``str.contains``, ``when/then``, sorts, shifts and ``group_by``
aggregations: no Python callbacks, so the same plan runs on the GPU through ``collect(engine=pl.GPUEngine())``.

``parse_auth_lines`` reads syslog lines of ``sshd`` (``sshd-session`` since OpenSSH 9.8) in the classic
``Mon DD HH:MM:SS host sshd[pid]: message`` form or with an RFC 3339 timestamp (rsyslog's high-precision
format, read as local wall-clock time like the classic one). Every input line gives one output row; a line
that is not such a line has ``parsed`` false and nulls elsewhere, so callers can count it.

``event`` is one of :data:`EVENTS`, the first that matches, in this order:

======================  =====================================================================================
``accepted_publickey``  ``Accepted publickey for USER from IP port N ssh2``
``accepted_password``   ``Accepted password`` (or ``keyboard-interactive/pam``) ``for USER ...``
``failed_password``     ``Failed password`` (or ``keyboard-interactive/pam``) ``for [invalid user] USER ...``,
                        also inside ``message repeated N times: [ ... ]`` (counted once)
``failed_other``        ``Failed none`` / ``publickey`` / ... ``for ...`` (not counted as a failure)
``invalid_user``        ``Invalid user USER from IP``, ``input_userauth_request: invalid user USER`` and PAM's
                        ``check pass; user unknown``
``auth_failure``        ``pam_unix(sshd:auth): authentication failure; ... rhost=...`` and
                        ``PAM N more authentication failures; ...``
``break_in_attempt``    ``reverse mapping checking getaddrinfo for NAME [IP] failed - POSSIBLE BREAK-IN
                        ATTEMPT!`` and ``Address IP maps to NAME, but ... - POSSIBLE BREAK-IN ATTEMPT!``
``disconnect``          ``Received disconnect from IP ...``, ``Disconnected from ...``, ``Disconnecting ...``
``connection_closed``   ``Connection closed by ...`` and ``Connection reset by ...``
``probe``               a connection that never reached authentication: ``Did not receive identification
                        string from IP``, ``Bad protocol version identification``, ``Unable to negotiate with``
``session_opened``      ``pam_unix(sshd:session): session opened for user USER ...``
``session_closed``      ``pam_unix(sshd:session): session closed for user USER``
``other``               any other sshd message
======================  =====================================================================================

``source_ip`` is an IP literal (v4 or v6) or null: a host name in ``rhost=`` or (with ``UseDNS yes``) after
``from`` is not an address and gives null.

>>> lines = pl.LazyFrame({"line": [
...     "Mar  4 10:00:01 bastion sshd[501]: Failed password for root from 203.0.113.9 port 40001 ssh2",
...     "Mar  4 10:00:03 bastion sshd[502]: Failed password for invalid user oracle from 203.0.113.9 port 40002 ssh2",
...     "Mar  4 10:00:04 bastion sshd[503]: Accepted publickey for alice from 198.51.100.7 port 51000 ssh2",
...     "not a log line",
... ]})
>>> events = parse_auth_lines(lines, year=2024)
>>> events.select("event", "user", "invalid_user", "parsed").collect().rows()
[('failed_password', 'root', False, True), ('failed_password', 'oracle', True, True), \
('accepted_publickey', 'alice', False, True), (None, None, None, False)]
>>> window_features(events).select("source_ip", "events", "failures", "distinct_users", "min_gap_s").collect().rows()
[('198.51.100.7', 1, 0, 1, None), ('203.0.113.9', 2, 2, 2, 2.0)]
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import pairwise

import polars as pl

__all__ = [
    "ENTITIES",
    "EVENTS",
    "FEATURES",
    "SSHD_LINE",
    "USER_FEATURES",
    "entity_features",
    "parse_auth_lines",
    "window_features",
    "window_features_ref",
]

#: The closed set of event names ``parse_auth_lines`` writes (see the module docstring).
EVENTS = (
    "accepted_publickey",
    "accepted_password",
    "failed_password",
    "failed_other",
    "invalid_user",
    "auth_failure",
    "break_in_attempt",
    "disconnect",
    "connection_closed",
    "probe",
    "session_opened",
    "session_closed",
    "other",
)

#: The numeric columns of ``window_features``, after its keys ``source_ip`` and ``window_start``.
FEATURES = (
    "events",
    "failures",
    "accepted",
    "invalid_users",
    "distinct_users",
    "break_in_attempts",
    "disconnects",
    "failure_ratio",
    "mean_gap_s",
    "min_gap_s",
    "distinct_ports",
)

#: The features of a user's windows: as a source's, with the distinct source addresses the user came from in
#: place of the distinct users a source tried.
USER_FEATURES = tuple("distinct_sources" if f == "distinct_users" else f for f in FEATURES)
#: What windows can be about: a source address, or a user name.
ENTITIES = ("source_ip", "user")


def entity_features(by: str) -> tuple[str, ...]:
    """The feature columns of :func:`window_features` for windows of ``by`` (one of :data:`ENTITIES`)."""
    if by not in ENTITIES:
        msg = f"windows are per 'source_ip' or 'user', not {by!r}"
        raise ValueError(msg)
    return FEATURES if by == "source_ip" else USER_FEATURES


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: A syslog line of sshd. Groups: 1 month name, 2 day (classic form) or 3 date (RFC 3339), 4 time, 5 host,
#: 6 pid, 7 message.
SSHD_LINE = (
    r"^(?:([A-Z][a-z]{2}) +(\d{1,2}) |(\d{4}-\d{2}-\d{2})T)(\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)"
    r"(?:Z|[+-]\d{2}:?\d{2})? (\S+) sshd(?:-session|-auth)?(?:\[(\d+)\])?: (.*)$"
)

_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# Ends on a hex digit so that the colon in "from 2001:db8::1: 11: Bye" is not taken into the address.
_IP = rf"(?:{_IPV4}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*[0-9A-Fa-f])"

# sshd folds repeats into "message repeated N times: [ <message>]" and prefixes some with "error: ".
_PREFIX = r"^(?:message repeated \d+ times: \[ ?)?(?:error: |fatal: )?"
_EVENT_PATTERNS = (
    ("accepted_publickey", r"Accepted publickey for "),
    ("accepted_password", r"Accepted (?:password|keyboard-interactive/pam) for "),
    ("failed_password", r"Failed (?:password|keyboard-interactive/pam) for "),
    ("failed_other", r"Failed \S+ for "),
    ("invalid_user", r"(?:Invalid|Illegal) user |input_userauth_request: invalid user |.*check pass; user unknown"),
    ("auth_failure", r"pam_unix\(sshd:auth\): authentication failure;|PAM \d+ more authentication failures?;"),
    ("break_in_attempt", r"(?:reverse mapping checking|Address ).*POSSIBLE BREAK-IN ATTEMPT"),
    ("disconnect", r"Received disconnect from |Disconnected from |Disconnecting"),
    ("connection_closed", r"Connection (?:closed|reset) by "),
    ("probe", r"Did not receive identification string |Bad protocol version identification |Unable to negotiate "),
    ("session_opened", r"pam_unix\(sshd:session\): session opened "),
    ("session_closed", r"pam_unix\(sshd:session\): session closed "),
)
# First match wins: the address after "from/by/Address", then "IP port N", then rhost=, then "[IP]".
_SOURCE_PATTERNS = (
    rf"(?:from|by|Address) ({_IP})(?:[\s:\]]|$)",
    rf"\s({_IP}) port \d",
    rf"rhost=({_IP})(?:\s|$)",
    rf"\[({_IP})\]",
)
_USER_PATTERNS = (
    rf"(?:[Ii]nvalid|[Ii]llegal) user (.*?)(?: from | \[preauth\]| {_IP} port \d|$)",
    r"(?:Failed|Accepted) \S+ for (.*?) from ",
    r"\suser=(\S+)",
    r"session (?:opened|closed) for user (\S+)",
    rf"(?:authenticating|from) user (.*?) {_IP} port \d",
    r"(?:authentication failures|attempts exceeded) for (.*?)(?: from | \[preauth\]|$)",
)
_INVALID_USER = r"(?:^|\s)(?:[Ii]nvalid|[Ii]llegal) user |check pass; user unknown"
_EPOCH = datetime(1970, 1, 1)
_FAILURES = ("failed_password", "auth_failure")
_ACCEPTED = ("accepted_password", "accepted_publickey")


def _first_match(text: pl.Expr, patterns: tuple[str, ...]) -> pl.Expr:
    return pl.coalesce([text.str.extract(p, 1) for p in patterns])


def _month_number(name: pl.Expr) -> pl.Expr:
    return pl.coalesce([pl.when(name == month).then(pl.lit(f"{i:02d}")) for i, month in enumerate(_MONTHS, 1)])


def _timestamp(date: pl.Expr) -> pl.Expr:
    """``date`` (YYYY-MM-DD) at the ``time`` column; null for a date that does not exist."""
    return pl.concat_str([date, pl.col("time")], separator=" ").str.strptime(
        pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False
    )


def _classic_date(year: int) -> pl.Expr:
    return pl.concat_str(
        [pl.lit(f"{year:04d}"), _month_number(pl.col("month")), pl.col("day").str.zfill(2)], separator="-"
    )


def parse_auth_lines(lines: pl.LazyFrame, *, year: int, not_after: datetime | None = None) -> pl.LazyFrame:
    """One event per line of an OpenSSH auth log.

    Parameters
    ----------
    lines : pl.LazyFrame
        One String column ``line``, one row per log line (order kept).
    year : int
        The year of classic syslog timestamps, which carry none.
    not_after : datetime, optional
        When the log was last written: a classic timestamp later than this in ``year`` is from the year
        before (a log read in January holds December's lines). RFC 3339 timestamps are kept as written.

    Returns
    -------
    pl.LazyFrame
        ``timestamp`` (Datetime[us]), ``host``, ``pid`` (Int64), ``event`` (one of :data:`EVENTS`), ``user``,
        ``invalid_user`` (Boolean), ``source_ip``, ``port`` (Int64) and ``parsed`` (Boolean), one row per
        input line. A line that is not an sshd syslog line (or whose date does not exist in ``year``) has
        ``parsed`` false and every other column null.
    """
    # A crash pads syslog files with NUL bytes before the next line; CRLF files keep a carriage return.
    line = pl.col("line").cast(pl.String).str.strip_chars_start("\x00").str.strip_chars_end("\r\n")
    groups = ("month", "day", "date", "time", "host", "pid", "message")
    classic = _timestamp(_classic_date(year))
    if not_after is not None:
        late = classic > pl.lit(not_after, dtype=pl.Datetime("us"))
        classic = pl.when(late).then(_timestamp(_classic_date(year - 1))).otherwise(classic)
    timestamp = pl.coalesce(_timestamp(pl.col("date")), classic).alias("timestamp")
    msg = pl.col("message")
    # The first pattern that matches names the event (coalesce keeps the first non-null).
    matches = [
        pl.when(msg.str.contains(f"{_PREFIX}(?:{pattern})")).then(pl.lit(name)) for name, pattern in _EVENT_PATTERNS
    ]
    event = pl.when(msg.is_not_null()).then(pl.coalesce([*matches, pl.lit("other")]))
    # "Server listening on 0.0.0.0 port 22." names the server's own address and port, not a client's.
    own_address = msg.str.contains(r"^Server listening on ")
    return (
        lines.select(line.str.extract(SSHD_LINE, i + 1).alias(name) for i, name in enumerate(groups))
        .with_columns(timestamp)
        .with_columns(
            pl.when(pl.col("timestamp").is_not_null()).then(pl.col(c)).alias(c) for c in ("host", "pid", "message")
        )
        .select(
            "timestamp",
            "host",
            pl.col("pid").cast(pl.Int64, strict=False),
            event.alias("event"),
            _first_match(msg, _USER_PATTERNS).alias("user"),
            msg.str.contains(_INVALID_USER).alias("invalid_user"),
            pl.when(~own_address).then(_first_match(msg, _SOURCE_PATTERNS)).alias("source_ip"),
            pl.when(~own_address)
            .then(msg.str.extract(r"\sport (\d{1,5})(?:\D|$)", 1).cast(pl.Int64, strict=False))
            .alias("port"),
            pl.col("timestamp").is_not_null().alias("parsed"),
        )
    )


def window_features(events: pl.LazyFrame, *, every: str = "10m", by: str = "source_ip") -> pl.LazyFrame:
    """Per source IP (or per user, ``by="user"``) and tumbling window of ``every``: counts and timing of its
    events.

    Parameters
    ----------
    events : pl.LazyFrame
        Rows as written by :func:`parse_auth_lines` (``timestamp``, ``event``, ``user``, ``invalid_user``,
        ``source_ip``, ``port``); rows without a ``source_ip`` or ``timestamp`` are left out.
    every : str
        The window length as a Polars duration (``"10m"``, ``"1h"``, ...). Windows start at multiples of it
        (``dt.truncate``).

    Returns
    -------
    pl.LazyFrame
        ``source_ip``, ``window_start`` and :data:`FEATURES`: ``events``, ``failures`` (``failed_password``
        and ``auth_failure``), ``accepted``, ``invalid_users`` (events about an invalid user),
        ``distinct_users``, ``break_in_attempts``, ``disconnects``, ``failure_ratio`` (failures / events),
        ``mean_gap_s`` and ``min_gap_s`` (seconds between consecutive events of the source in the window,
        null for a lone event) and ``distinct_ports``; counts Int64, the rest Float64. Sorted by
        ``window_start`` then ``source_ip``. With ``by="user"`` the rows are users' (``user`` first, events
        without a user left out) and ``distinct_users`` becomes ``distinct_sources``.
    """
    names = entity_features(by)
    other = "source_ip" if by == "user" else "user"
    ts = pl.col("timestamp").cast(pl.Datetime("us"))
    key = [by, "window_start"]
    event = pl.col("event")
    # Gaps from a sort and a shift rather than a window function (.over), which the GPU engine runs less of.
    same_window = pl.all_horizontal(pl.col(k) == pl.col(k).shift(1) for k in key).fill_null(False)
    gap = (pl.col("us") - pl.col("us").shift(1)).cast(pl.Float64) / 1e6
    counts = {
        "failures": event.is_in(_FAILURES),
        "accepted": event.is_in(_ACCEPTED),
        "invalid_users": pl.col("invalid_user").fill_null(False),
        "break_in_attempts": event == "break_in_attempt",
        "disconnects": event == "disconnect",
    }
    return (
        events.filter(pl.col(by).is_not_null() & pl.col("timestamp").is_not_null())
        .select(
            pl.col("source_ip").cast(pl.String),
            ts.dt.truncate(every).alias("window_start"),
            ts.cast(pl.Int64).alias("us"),
            event,
            pl.col("user"),
            pl.col("invalid_user"),
            pl.col("port").cast(pl.Int64),
        )
        .sort([*key, "us"])
        .with_columns(pl.when(same_window).then(gap).alias("gap_s"))
        .group_by(key)
        .agg(
            pl.len().cast(pl.Int64).alias("events"),
            *(flag.sum().cast(pl.Int64).alias(name) for name, flag in counts.items()),
            pl.col(other).drop_nulls().n_unique().cast(pl.Int64).alias(names[FEATURES.index("distinct_users")]),
            pl.col("gap_s").mean().alias("mean_gap_s"),
            pl.col("gap_s").min().alias("min_gap_s"),
            pl.col("port").drop_nulls().n_unique().cast(pl.Int64).alias("distinct_ports"),
        )
        .with_columns((pl.col("failures") / pl.col("events")).cast(pl.Float64).alias("failure_ratio"))
        .select(*key, *names)
        .sort(["window_start", by])
    )


def window_features_ref(events: list[dict], every_seconds: int, by: str = "source_ip") -> list[dict]:
    """Plain-Python twin of :func:`window_features` (windows of ``every_seconds``), for tests.

    ``events`` are dicts with the keys ``timestamp`` (datetime), ``event``, ``user``, ``invalid_user``,
    ``source_ip`` and ``port``; the rows come back as dicts in the same order as ``window_features``.
    Written independently of it (loops, no shared constants) so that each checks the other.
    """
    every = timedelta(seconds=every_seconds)
    groups: dict[tuple[str, datetime], list[dict]] = defaultdict(list)
    other = "source_ip" if by == "user" else "user"
    for e in events:
        if e[by] is None or e["timestamp"] is None:
            continue
        start = _EPOCH + (e["timestamp"] - _EPOCH) // every * every
        groups[(e[by], start)].append(e)
    rows = []
    for (entity, start), evs in groups.items():
        times = sorted(e["timestamp"] for e in evs)
        gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
        kinds = [e["event"] for e in evs]
        failures = sum(k in ("failed_password", "auth_failure") for k in kinds)
        rows.append(
            {
                by: entity,
                "window_start": start,
                "events": len(evs),
                "failures": failures,
                "accepted": sum(k in ("accepted_password", "accepted_publickey") for k in kinds),
                "invalid_users": sum(bool(e["invalid_user"]) for e in evs),
                ("distinct_sources" if by == "user" else "distinct_users"): len(
                    {e[other] for e in evs if e[other] is not None}
                ),
                "break_in_attempts": kinds.count("break_in_attempt"),
                "disconnects": kinds.count("disconnect"),
                "failure_ratio": failures / len(evs),
                "mean_gap_s": statistics.fmean(gaps) if gaps else None,
                "min_gap_s": min(gaps) if gaps else None,
                "distinct_ports": len({e["port"] for e in evs if e["port"] is not None}),
            }
        )
    return sorted(rows, key=lambda r: (r["window_start"], r[by]))
