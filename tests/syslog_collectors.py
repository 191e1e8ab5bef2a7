"""Syslog collectors for the SIEM tests: a real ``rsyslogd`` (Debian's package) on a free port, and a small one
in Python for what rsyslog cannot be made to do on cue (reset a connection in the middle of a batch, TLS
without the rsyslog-gnutls package); and a CEF reader, to parse messages back as a SIEM would."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engine.serving.server import free_port
from tests.conftest import debian_tool

__all__ = ["FakeCollector", "Rsyslog", "parse_cef"]

_UNESCAPE = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A CEF line as a SIEM reads it: seven header fields split at unescaped pipes, then ``key=value`` pairs
    split at unescaped equal signs (a key is the word before one), escapes undone."""
    header, field, i = [], "", 0
    while len(header) < 7:
        if line[i] == "\\":
            field, i = field + line[i + 1], i + 2
        elif line[i] == "|":
            header, field, i = [*header, field], "", i + 1
        else:
            field, i = field + line[i], i + 1
    rest, equals, j = line[i:], [], 0
    while j < len(rest):
        if rest[j] == "=":
            equals.append(j)
        j += 2 if rest[j] == "\\" else 1
    keys = []
    for at in equals:
        k = at
        while k > 0 and (rest[k - 1].isalnum() or rest[k - 1] == "_"):
            k -= 1
        assert k == 0 or rest[k - 1] == " ", f"no key before an unescaped '=' in {rest!r}"
        keys.append((k, at))
    ext = {}
    for n, (k, at) in enumerate(keys):
        end = keys[n + 1][0] - 1 if n + 1 < len(keys) else len(rest)
        ext[rest[k:at]] = re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], rest[at + 1 : end])
    return header, ext


def _rsyslogd() -> str:
    """rsyslogd's path (:func:`tests.conftest.debian_tool`: skipped where it is missing, a failure with
    FINSCORE_REQUIRE_RSYSLOG=1). It lives in /usr/sbin, which a user's PATH may lack."""
    sbin = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
    return debian_tool(shutil.which("rsyslogd", path=sbin) or "rsyslogd", require="FINSCORE_REQUIRE_RSYSLOG")


class Rsyslog:
    """A real ``rsyslogd -n`` kept in ``folder``: imtcp on ``port`` (a free one unless given) and nothing else (no
    system logging), writing each message's MSG part, one a line, to :attr:`messages`. :meth:`stop` and
    :meth:`start` again restart it on the same port, appending to the same file."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.exe = _rsyslogd()
        self.folder = folder
        self.port = port or free_port()
        self.messages = folder / "messages.log"
        self.conf = folder / "rsyslog.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text(
            f'global(workDirectory="{folder}" maxMessageSize="64k")\n'
            'module(load="imtcp")\n'
            'template(name="message" type="string" string="%msg%\\n")\n'
            f'ruleset(name="siem") {{ action(type="omfile" file="{self.messages}" template="message") }}\n'
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="siem")\n',
            encoding="utf-8",
        )

    def start(self) -> Rsyslog:
        with (self.folder / "rsyslogd.log").open("ab") as log:
            cmd = [self.exe, "-n", "-f", str(self.conf), "-i", str(self.folder / "rsyslogd.pid")]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log_text = (self.folder / "rsyslogd.log").read_text(errors="replace")[-500:]
                    pytest.fail(f"rsyslogd did not start: {log_text}")
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: rsyslog writes what it has read, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def lines(self) -> list[str]:
        return self.messages.read_text(encoding="utf-8").splitlines() if self.messages.is_file() else []

    def wait_for(self, count: int, timeout: float = 15) -> list[str]:
        """The messages written once there are ``count`` (rsyslog writes a little after it reads)."""
        deadline = time.monotonic() + timeout
        while len(lines := self.lines()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return lines


class FakeCollector:
    """A syslog collector in Python: reads octet-counted messages on a free port and keeps their MSG parts, in
    the order read. With ``tls`` (a server context) it speaks TLS. ``reset`` = (n, k) resets the n-th
    connection (from 1) after reading k messages, leaving the rest unread, as a collector killed in the
    middle of a batch does."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, reset: tuple[int, int] | None = None) -> None:
        self.tls = tls
        self.reset = reset
        self.messages: list[str] = []
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            try:
                self._read(conn, self.connections)
            except (OSError, ValueError):  # a client that went away, or a TLS handshake it refused
                conn.close()

    def _read(self, conn: socket.socket, number: int) -> None:
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
        stream = conn.makefile("rb")
        read = 0
        while True:
            if self.reset is not None and self.reset == (number, read):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # with bytes unread and no linger: a reset
                return
            digits = b""
            while (c := stream.read(1)) not in (b" ", b""):
                digits += c
            if not digits:  # the client closed its side: close ours, having read everything
                stream.close()
                conn.close()
                return
            message = stream.read(int(digits)).decode("utf-8")
            self.messages.append(message.split("] ", 1)[1])  # the MSG part, after the structured data
            read += 1

    def close(self) -> None:
        self._server.close()
