"""SIEM forwarding: ``finscore scan --siem syslog://HOST:PORT`` (or ``syslogs://`` for TLS) sends each batch's
alerts to a syslog collector while the scan runs, besides the alerts file, which stays the record.

Messages are made by :mod:`engine.batch.scan.siem_format`. :class:`SiemForwarder` sends them on a thread of
its own (a :class:`~engine.batch.scan.follow.BatchFollower`, as the audit writer is): units hand it the names of
their finished batches, it reads each batch's alerts part back from the checkpoint in checkpoint order, sends
the batch whole, and then writes the batch's ``<stem>.siem`` marker. A resumed or rerun scan sends only the
batches without a marker.

**At least once per batch.** Plain TCP syslog has no acknowledgements: a write that succeeds has only reached
this host's socket buffer, and the first write after a collector dies usually succeeds too (the reset comes
back after it). Counting the messages written before a failure would lose the ones in flight, so the unit of
delivery is the batch, and its proof is the end of the connection: each batch goes over a connection of its
own (a handshake per batch: cheap beside a batch of 65,536 rows), which the forwarder then closes (a TLS
``close_notify``, or a TCP half-close) and waits for the collector to close too. A collector closes its side
when it reads our close, so only after reading everything before it; one that goes away with some of it
unread resets the connection instead. A reset, or any failure before the collector's close, sends the batch
again, whole, over a new connection; only after the collector's close is the marker written.

So every alert is read by the collector at least once, and an alert is sent twice only when its batch was on
the wire, or read but not yet marked, when the connection failed or the scan was killed; the copies carry
the same id (CEF ``externalId``, ECS ``event.id``) for the SIEM to drop. Two gaps are beyond plain syslog
(RELP's acknowledgements close them, and the alerts file holds every alert anyway): a collector that loses
messages it has read (killed with its queue in memory), and one that never closes a half-closed connection,
for which a batch counts as sent once TCP has acknowledged every byte (Linux's ``SIOCOUTQ``) and a further
``LINGER`` seconds have passed (rsyslog closes at once; the tests run against it).

**A dead or restarting collector** never fails the scan. Connection errors are retried, reconnecting, after
0.1 s, doubling up to 5 s between attempts, for as long as the scan runs; once the scan's own work is done the
forwarder is given ``timeout`` seconds (``--siem-timeout``) of the collector being down before it stops. The
batches it did not send keep the checkpoint, and running the same command again sends only those.
"""

from __future__ import annotations

import errno
import json
import math
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.batch.scan.alerts import AlertFormat
from engine.batch.scan.follow import BatchFollower
from engine.batch.scan.siem_format import FORMATS, batch_messages
from engine.errors import UsageError

__all__ = ["SiemForwarder", "SiemOutcome", "SiemTarget"]

#: Seconds between reconnection attempts: the first, and the most the doubling reaches.
FIRST_RETRY = 0.1
LAST_RETRY = 5.0
#: Seconds a connection may take to open, and a batch's bytes to be written and acknowledged.
CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
#: Seconds a collector may keep a connection half-closed after acknowledging every byte of a batch.
LINGER = 2.0
_POLL = 0.05
_SCHEMES = {"syslog": False, "syslogs": True}
_EXPECTED = "expected syslog://HOST:PORT (TCP) or syslogs://HOST:PORT (TLS)"


def _sent(name: str) -> None:
    """Batch ``name`` is sent and its ``.siem`` marker written. Nothing happens here: tests replace it to act
    on the collector at that point."""


@dataclass(frozen=True)
class SiemTarget:
    """Where and how a scan forwards its alerts; :meth:`parse` checks a ``--siem`` URL and its companions."""

    host: str
    port: int
    tls: bool = False
    body: str = "cef"
    ca: Path | None = None
    timeout: float = 60.0

    @classmethod
    def parse(cls, url: str, *, body: str = "cef", ca: Path | None = None, timeout: float = 60.0) -> SiemTarget:
        """``syslog://HOST:PORT`` or ``syslogs://HOST:PORT`` (IPv6 in brackets); raises :class:`UsageError`."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            came = f"{scheme[:16]}://" if scheme and "://" in url else "no scheme"
            msg = f"--siem {_EXPECTED}, got {came}"
            raise UsageError(msg)
        if parts.username is not None or parts.password is not None:
            msg = "--siem takes no user or password: syslog has no login, use syslogs:// and --siem-ca for trust"
            raise UsageError(msg)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            msg = f"--siem {_EXPECTED}, with nothing after the port"
            raise UsageError(msg)
        if not parts.hostname:
            msg = f"--siem names no host: {_EXPECTED}"
            raise UsageError(msg)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port is None:
            msg = f"--siem names no port: {_EXPECTED} (the usual ports are 514 for TCP, 6514 for TLS)"
            raise UsageError(msg)
        if not 1 <= port <= 65535:
            msg = "--siem port must be a number from 1 to 65535"
            raise UsageError(msg)
        if body not in FORMATS:
            msg = f"--siem-format must be {' or '.join(FORMATS)}, got {body[:16]!r}"
            raise UsageError(msg)
        if not math.isfinite(timeout) or timeout < 0:
            msg = f"--siem-timeout must be 0 or more seconds, got {timeout}"
            raise UsageError(msg)
        target = cls(parts.hostname, port, _SCHEMES[scheme], body, ca, float(timeout))
        if ca is not None:
            if not target.tls:
                msg = "--siem-ca applies to syslogs:// (TLS) only"
                raise UsageError(msg)
            target.context()  # a file that is no CA certificate is a usage error now, not a retry later
        return target

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'syslogs' if self.tls else 'syslog'}://{host}:{self.port}"

    def context(self) -> ssl.SSLContext:
        """The TLS context: the system's trust store, or only ``ca`` when given."""
        try:
            return ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)
        except (OSError, ssl.SSLError):
            msg = f"--siem-ca {self.ca}: not a readable PEM certificate file"
            raise UsageError(msg) from None

    def connect(self, context: ssl.SSLContext | None = None) -> socket.socket:
        """An open connection to the collector (TLS with ``context`` when the target is ``syslogs://``)."""
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        try:
            if self.tls:
                sock = (context or self.context()).wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(SEND_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return sock


@dataclass(frozen=True)
class SiemOutcome:
    """What forwarding did in one attempt of a scan: alerts sent, batches left unsent, and when some were
    left, the sentence that says so."""

    sent: int
    unsent: int
    problem: str = ""


class SiemForwarder(BatchFollower):
    """Sends the alerts of a scan's batches to ``target``, in checkpoint order, each batch whole, then marks
    it (``<stem>.siem`` in the checkpoint ``state``). ``fmt`` is the alerts parts' format; ``run`` the scan's
    run id, which starts every alert's id. :meth:`finish` waits for the last batch and says what was left."""

    def __init__(self, target: SiemTarget, state: Path, fmt: AlertFormat, units: int, *, run: str) -> None:
        self.target = target
        self.state = state
        self.fmt = fmt
        self.run = run
        self.sent = 0
        #: When the collector stopped answering (``time.monotonic()``), None while it answers.
        self.down_since: float | None = None
        self.last_error = ""
        self._context = target.context() if target.tls else None
        self._sock: socket.socket | None = None
        super().__init__(units, name="finscore-siem")

    def forwarded(self, name: str) -> bool:
        """Whether batch ``name`` went to this target, in this body format, in this or an earlier attempt."""
        marker = self.state / f"{name}.siem"
        if not marker.is_file():
            return False
        noted = json.loads(marker.read_text(encoding="utf-8"))
        return bool(noted.get("to") == self.target.url and noted.get("body") == self.target.body)

    def take(self, name: str, held: object = None) -> None:
        if self.forwarded(name):
            return
        part = self.state / f"{name}.alerts{self.fmt.suffix}"
        messages = batch_messages(part, self.fmt, body=self.target.body, batch_id=f"{self.run}/{name}")
        if messages and not self._send(b"".join(messages)):
            return  # stopped before the batch got through: unmarked, so the next attempt sends it
        marker = self.state / f"{name}.siem"
        tmp = marker.with_name(marker.name + ".partial")
        tmp.write_text(json.dumps({"to": self.target.url, "body": self.target.body, "messages": len(messages)}))
        tmp.replace(marker)
        self.sent += len(messages)
        _sent(name)

    def _send(self, payload: bytes) -> bool:
        """Send ``payload`` over a connection of its own until the collector has read all of it (see the
        module's docstring), starting over on a new connection after a failure, with backoff; False when
        stopped first."""
        delay = FIRST_RETRY
        while not self._stopping.is_set():
            try:
                self._sock = self.target.connect(self._context)
                self._sock.sendall(payload)
                _hand_over(self._sock, SEND_TIMEOUT)
            except OSError as exc:  # refused, reset, timed out, TLS refused: the collector, not the scan
                if self.down_since is None:
                    self.down_since = time.monotonic()
                self.last_error = _reason(exc)
                self._stopping.wait(delay)
                delay = min(2 * delay, LAST_RETRY)
            else:
                self.down_since = None
                return True
            finally:
                self._close()
        return False

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self._stopping.set()
        sock = self._sock
        if sock is not None:  # wakes a send blocked on a collector that does not read (TLS left as it is)
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        super().stop()
        self._close()

    def unsent(self) -> int:
        """Batches finished in the checkpoint but not forwarded to this target."""
        return sum(1 for m in self.state.glob("u*.done") if not self.forwarded(m.name[: -len(".done")]))

    def finish(self) -> SiemOutcome:
        """Wait for every batch to be forwarded, as long as the collector answers; stop once it has been down
        for the target's timeout, counted from this call at the earliest (the scan's own work is done)."""
        since = time.monotonic()
        while self._thread.is_alive():
            self._thread.join(0.05)
            down = self.down_since
            if down is not None and time.monotonic() - max(down, since) >= self.target.timeout:
                break
        self.stop()
        self.check()
        unsent = self.unsent()
        if not unsent:
            return SiemOutcome(self.sent, 0)
        batches = f"{unsent} batch{'es' if unsent != 1 else ''} of alerts {'were' if unsent != 1 else 'was'}"
        problem = (
            f"the SIEM collector at {self.target.url} did not answer for {self.target.timeout:g} s after the scan "
            f"({self.last_error or 'no answer'}): {batches} not forwarded; the alerts file is complete, and "
            "running the same command again sends only what is missing"
        )
        return SiemOutcome(self.sent, unsent, problem)


def _reason(exc: OSError) -> str:
    """A connection failure in a few words (never a message's content)."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__


def _hand_over(sock: socket.socket, timeout: float) -> None:
    """Close our side of ``sock`` after a batch and return once the collector has closed its side, which it
    does only after reading everything we sent; raise the connection's failure (a reset) otherwise. A
    collector that keeps the connection half-closed is let go :data:`LINGER` seconds after TCP acknowledged
    every byte; one that acknowledges nothing for ``timeout`` seconds has failed."""
    deadline = time.monotonic() + timeout
    acknowledged: float | None = None
    if not isinstance(sock, ssl.SSLSocket):
        sock.shutdown(socket.SHUT_WR)
    sock.settimeout(_POLL)
    while True:
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.unwrap()  # sends our close_notify, then reads up to the collector's
                return
            if not sock.recv(4096):  # a collector writes nothing back: this is its close
                return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # closed without a close_notify of its own
            return
        except TimeoutError:
            pass
        now = time.monotonic()
        if _unacknowledged(sock):
            if now > deadline:
                raise TimeoutError(errno.ETIMEDOUT, "the collector did not take what was sent")
        else:
            acknowledged = acknowledged or now
            if now - acknowledged >= LINGER:
                return


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes written to ``sock`` the peer has not acknowledged yet (Linux's SIOCOUTQ); 0 where it cannot be
    asked, so elsewhere a batch counts as sent once written."""
    if sys.platform != "linux":
        return 0
    import fcntl
    import termios

    try:
        got = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ: the same request on sockets
    except OSError:
        return 0
    return int(struct.unpack("i", got)[0])
