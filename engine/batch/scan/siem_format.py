"""What a scan sends a SIEM: each alert as an RFC 5424 syslog message, framed by octet counting (RFC 6587),
its body CEF (the default) or ECS JSON.

The header is ``<36>1 TIMESTAMP HOSTNAME finscore PROCID alert [origin software="finscore" swVersion=V] MSG``:

- PRI 36 is facility 4 (security/authorization, RFC 5424's own words for it: what a SIEM's syslog input
  files as security) and severity 4 (warning): an alert is a statistical anomaly for an analyst to review, not
  an outage; 1 (alert, "action must be taken immediately") would page people, as a collector's routing
  rules commonly do for it;
- TIMESTAMP is when the message was made (UTC, microseconds); the alert's own time is in the body;
- the structured data is IANA's registered ``origin`` element, so no private enterprise number is needed;
- MSG is UTF-8 without a byte-order mark; octet counting needs no escaping, and no body holds a line break.

Every body is made from the alert as the alerts file holds it, after the output guard: a value the guard
masks, tokenizes or encrypts goes out masked, tokenized or encrypted, and nothing else of the input row is
read. Each alert carries an id, ``<run>/<batch>/<n>``, the same every time its batch is sent, so a SIEM can
drop the duplicates a resent batch brings (CEF ``externalId``, ECS ``event.id``).

CEF (ArcSight's Common Event Format, revision 25): ``CEF:0|finscore|finscore|<finscore version>|finscore.<model>|
finscore <model> autoencoder|<severity>|<extension>``. Severity is 5 (medium) at the model's threshold and one
more per doubling of the score above it, up to 10. Extension keys: ``rt`` (the alert's time, ms since the
epoch), ``start`` (an auth-log window's start), ``src`` (an IPv4 source), ``c6a2`` (an IPv6 one), ``suser``,
``cfp1`` anomalyScore, ``cfp2`` threshold, ``cs1`` topFeatures (comma-separated), ``cs2`` logFile, ``cn1`` row,
``cs3`` recordId, ``cs4`` modelVersion, ``cs5`` sourceAddress (a source the guard tokenized or encrypted, which
is no address any more), ``externalId``.

ECS: the alert file's JSON object itself (``@timestamp``, ``event.kind`` alert, ``event.module`` finscore,
``source.ip``, ``user.name``, ``finscore.*``), plus ``event.id``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import socket
from datetime import datetime, timezone
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl

from engine.batch.scan.alerts import ALERT_SCHEMA, AlertFormat

__all__ = ["FACILITY", "FORMATS", "SEVERITY", "batch_messages", "cef_body", "ecs_body", "read_alerts", "syslog_frame"]

#: RFC 5424 facility 4, security/authorization messages, and severity 4, warning.
FACILITY = 4
SEVERITY = 4
#: Message bodies, by the name ``--siem-format`` takes.
FORMATS = ("cef", "ecs")
_PRODUCT = "finscore"
_MSGID = "alert"


@cache
def _finscore_version() -> str:
    try:
        return version("finscore")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def read_alerts(part: Path, fmt: AlertFormat) -> list[dict[str, Any]]:
    """The alerts of one checkpoint part (written by ``fmt``) as ECS objects: the JSON lines as they are, or
    Parquet rows rendered as the JSON lines output would have them."""
    if fmt.parquet:
        frame = pl.read_parquet(part).select(list(ALERT_SCHEMA))
        lines = dataclasses.replace(fmt, parquet=False).render(frame).get_column("line").to_list()
    else:
        lines = part.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


#: CEF's escapes: in a header field backslashes and pipes (a line break, never valid there, becomes a space);
#: in an extension value backslashes, equal signs and line breaks (pipes need none).
_HEADER = str.maketrans({"\\": "\\\\", "|": "\\|", "\n": " ", "\r": " "})
_VALUE = str.maketrans({"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"})


def _header(text: str) -> str:
    return text.translate(_HEADER)


def _value(text: str) -> str:
    return text.translate(_VALUE)


def _millis(iso: str) -> int:
    """An ECS time (``...Z``) as CEF wants it: milliseconds since the epoch."""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(round(when.timestamp() * 1000))


def _severity(score: float | None, threshold: float | None) -> int:
    """5 at the threshold, one more per doubling of the score above it, at most 10."""
    if score is None or not threshold or threshold <= 0 or score <= threshold:
        return 5
    return min(10, 5 + int(math.log2(score / threshold)))


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else "0"


def cef_body(alert: dict[str, Any], *, event_id: str) -> str:
    """One alert (an ECS object of the alerts file) as a CEF line."""
    event, own = alert.get("event", {}), alert.get("finscore", {})
    model = str(own.get("model", ""))
    score, threshold = own.get("anomaly_score"), own.get("threshold")
    fields: list[tuple[str, str | None]] = [("rt", str(_millis(alert["@timestamp"])))]
    if event.get("start"):
        fields.append(("start", str(_millis(event["start"]))))
    source = (alert.get("source") or {}).get("ip")
    if source is not None:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:  # tokenized or encrypted by the guard: no address any more
            fields += [("cs5", source), ("cs5Label", "sourceAddress")]
        else:
            fields += [("src", source)] if address.version == 4 else [("c6a2", source), ("c6a2Label", "sourceIPv6")]
    fields.append(("suser", (alert.get("user") or {}).get("name")))
    if score is not None:
        fields += [("cfp1", _number(score)), ("cfp1Label", "anomalyScore")]
    if threshold is not None:
        fields += [("cfp2", _number(threshold)), ("cfp2Label", "threshold")]
    fields += [
        ("cs1", ",".join(own.get("top_features") or [])),
        ("cs1Label", "topFeatures"),
        ("cs2", ((alert.get("log") or {}).get("file") or {}).get("path")),
        ("cs2Label", "logFile"),
        ("cn1", str(own["row"]) if own.get("row") is not None else None),
        ("cn1Label", "row"),
    ]
    if own.get("record_id") is not None:
        fields += [("cs3", str(own["record_id"])), ("cs3Label", "recordId")]
    fields += [("cs4", str(own.get("model_version", ""))), ("cs4Label", "modelVersion"), ("externalId", event_id)]
    rule = (alert.get("rule") or {}).get("name") or f"finscore {model} autoencoder"
    header = [
        "CEF:0",
        _header(_PRODUCT),
        _header(_PRODUCT),
        _header(_finscore_version()),
        _header(f"finscore.{model}"),
        _header(rule),
        str(_severity(score, threshold)),
    ]
    extension = " ".join(f"{k}={_value(v)}" for k, v in fields if v is not None)
    return "|".join(header) + "|" + extension


def ecs_body(alert: dict[str, Any], *, event_id: str) -> str:
    """One alert (an ECS object of the alerts file) as compact JSON, with ``event.id`` added."""
    event = dict(alert.get("event") or {})
    event["id"] = event_id
    return json.dumps({**alert, "event": event}, ensure_ascii=False, separators=(",", ":"))


def _sd_value(text: str) -> str:
    """An RFC 5424 PARAM-VALUE: backslash, quote and closing bracket escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@cache
def _hostname() -> str:
    """This host's name as RFC 5424 allows it (printable ASCII, at most 255 characters), else ``-``."""
    name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)[:255]
    return name or "-"


def syslog_frame(body: str, *, when: datetime | None = None) -> bytes:
    """``body`` as one RFC 5424 message (see the module's docstring), framed by octet counting: the
    message's length in bytes, a space, the message."""
    stamp = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    origin = f'[origin software="{_PRODUCT}" swVersion="{_sd_value(_finscore_version())}"]'
    pri = FACILITY * 8 + SEVERITY
    message = f"<{pri}>1 {stamp} {_hostname()} {_PRODUCT} {os.getpid()} {_MSGID} {origin} {body}".encode()
    return b"%d %s" % (len(message), message)


def batch_messages(part: Path, fmt: AlertFormat, *, body: str, batch_id: str) -> list[bytes]:
    """The framed messages of one checkpoint part, in its order; ``body`` is ``cef`` or ``ecs``; alert ``n``
    gets the id ``<batch_id>/<n>``."""
    make = cef_body if body == "cef" else ecs_body
    when = datetime.now(timezone.utc)
    return [syslog_frame(make(a, event_id=f"{batch_id}/{n}"), when=when) for n, a in enumerate(read_alerts(part, fmt))]
