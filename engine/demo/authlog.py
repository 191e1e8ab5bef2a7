"""A synthetic OpenSSH auth log with known attackers, so demos and tests need no real (licensed) log.

Lines have the exact form of sshd's syslog lines (OpenSSH 7 era, as Debian and Ubuntu write them to
``/var/log/auth.log``). Every address is made up, from ranges reserved for documentation and private use:
users come from ``10.0.0.0/8`` and ``198.51.100.0/24``, attackers from ``203.0.113.0/24``, ``192.0.2.0/24``
and ``100.64.0.0/10``.
"""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["ssh_auth_log", "write_ssh_auth_log"]

_HOST = "bastion"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_USERS = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "kim", "leo", "maya",
    "nadia", "oscar", "pavel", "quinn", "rosa", "sami", "tariq", "uma", "vera", "wen", "xavi", "yusuf", "zoe",
    "deploy", "backup", "ci", "git",
)  # fmt: skip
_SPRAY_NAMES = (
    "admin", "test", "guest", "oracle", "postgres", "ubuntu", "pi", "support", "ftpuser", "nagios", "user",
    "mysql", "tomcat", "hadoop", "jenkins", "www", "webmaster", "operator", "demo", "student", "dev", "ansible",
)  # fmt: skip
_BREAK_IN = "POSSIBLE BREAK-IN ATTEMPT!"
_PAM_FAILURE = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip} "


@dataclass
class _Log:
    """Lines as (seconds from start, insertion order, connection, message, attacker address or None)."""

    rng: random.Random
    rows: list[tuple[float, int, int, str, str | None]]
    connections: int = 0

    def connection(self) -> int:
        self.connections += 1
        return self.connections

    def add(self, t: float, conn: int, message: str, attacker: str | None = None) -> None:
        self.rows.append((t, len(self.rows), conn, message, attacker))

    def port(self) -> int:
        return self.rng.randint(32768, 60999)


def _normal_session(log: _Log, t: float, user: str, ip: str, key: str | None) -> None:
    rng, conn, port = log.rng, log.connection(), log.port()
    if rng.random() < 0.04:  # a client that gives up before authenticating
        log.add(t, conn, f"Connection closed by {ip} [preauth]")
        return
    if key is not None:
        log.add(t, conn, f"Accepted publickey for {user} from {ip} port {port} ssh2: RSA SHA256:{key}")
    else:
        if rng.random() < 0.08:  # a typo, then the right password
            log.add(t, conn, _PAM_FAILURE.format(ip=ip) + f" user={user}")
            t += rng.randint(2, 4)
            log.add(t, conn, f"Failed password for {user} from {ip} port {port} ssh2")
            t += rng.randint(3, 12)
        log.add(t, conn, f"Accepted password for {user} from {ip} port {port} ssh2")
    log.add(t, conn, f"pam_unix(sshd:session): session opened for user {user} by (uid=0)")
    t += 5 + rng.expovariate(1 / 1200)
    log.add(t, conn, f"Received disconnect from {ip}: 11: disconnected by user")
    log.add(t, conn, f"pam_unix(sshd:session): session closed for user {user}")


def _attempt(log: _Log, t: float, ip: str, user: str, *, valid: bool, dns: bool) -> None:
    """One password guess on its own connection, as sshd logs it."""
    rng, conn, port = log.rng, log.connection(), log.port()
    if dns:
        name = f"host-{ip.replace('.', '-')}.dyn.example.net"
        log.add(t, conn, f"reverse mapping checking getaddrinfo for {name} [{ip}] failed - {_BREAK_IN}", ip)
    if valid:
        log.add(t, conn, _PAM_FAILURE.format(ip=ip) + f" user={user}", ip)
        log.add(t + 2, conn, f"Failed password for {user} from {ip} port {port} ssh2", ip)
        log.add(t + 2, conn, f"Received disconnect from {ip}: 11: Bye Bye [preauth]", ip)
        return
    log.add(t, conn, f"Invalid user {user} from {ip}", ip)
    log.add(t, conn, f"input_userauth_request: invalid user {user} [preauth]", ip)
    log.add(t, conn, "pam_unix(sshd:auth): check pass; user unknown", ip)
    log.add(t, conn, _PAM_FAILURE.format(ip=ip), ip)
    log.add(t + 2, conn, f"Failed password for invalid user {user} from {ip} port {port} ssh2", ip)
    if rng.random() < 0.5:
        log.add(t + 2, conn, f"Connection closed by {ip} [preauth]", ip)
    else:
        log.add(t + 2, conn, f"Received disconnect from {ip}: 11: Bye Bye [preauth]", ip)


def _attack(log: _Log, t: float, ip: str, budget: int) -> int:
    """One attack from ``ip`` starting at ``t`` of at most about ``budget`` lines; the lines written."""
    rng, before = log.rng, len(log.rows)
    dns = rng.random() < 0.4
    kind = rng.choices(("brute", "spray", "slow"), weights=(0.4, 0.35, 0.25))[0]
    target = rng.choice(("root", "root", "admin"))
    per_try = (3 if kind == "slow" or (kind == "brute" and target == "root") else 6) + dns
    # Most attacks are a handful of guesses, a few go on for hundreds (a heavy tail).
    drawn = rng.randint(3, 15) if kind == "slow" else 2 + min(150, int(3 * rng.paretovariate(1.3)))
    tries = max(1, min(drawn, budget // per_try))
    for i in range(tries):
        if kind == "brute":  # many quick guesses at one privileged account
            _attempt(log, t, ip, target, valid=target == "root", dns=dns)
            t += rng.uniform(1.0, 4.0)
        elif kind == "spray":  # one guess per user name
            name = _SPRAY_NAMES[i] if i < len(_SPRAY_NAMES) else f"{rng.choice(_SPRAY_NAMES)}{i}"
            _attempt(log, t, ip, name, valid=False, dns=dns)
            t += rng.uniform(2.0, 10.0)
        else:  # slow scan: a probe or a guess every few minutes, under per-minute rate limits
            if rng.random() < 0.4:
                log.add(t, log.connection(), f"Did not receive identification string from {ip}", ip)
            else:
                _attempt(log, t, ip, "root", valid=True, dns=dns)
            t += rng.uniform(240.0, 900.0)
    return len(log.rows) - before


def _records(
    n_lines: int, seed: int, attack_share: float, start: datetime | None
) -> list[tuple[datetime, str, str | None]]:
    if n_lines < 1:
        msg = f"n_lines must be positive, got {n_lines}"
        raise ValueError(msg)
    if not 0.0 <= attack_share <= 1.0:
        msg = f"attack_share must be between 0 and 1, got {attack_share}"
        raise ValueError(msg)
    start = start or datetime(2024, 3, 4)
    rng = random.Random(seed)
    log = _Log(rng, [])
    users = []
    for name in _USERS:
        homes = [
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            if rng.random() < 0.6
            else f"198.51.100.{rng.randint(1, 254)}"
            for _ in range(rng.randint(1, 3))
        ]
        key = base64.b64encode(rng.randbytes(32)).decode().rstrip("=") if rng.random() < 0.6 else None
        users.append((name, homes, key))

    attack_lines = round(n_lines * attack_share)
    t = 0.0
    while len(log.rows) < n_lines - attack_lines:
        name, homes, key = rng.choice(users)
        _normal_session(log, t, name, rng.choice(homes), key)
        t += rng.expovariate(1 / 30)
    span = max(t, 3600.0)
    written = 0
    while written < attack_lines:
        ip = rng.choice(
            (
                f"203.0.113.{rng.randint(1, 254)}",
                f"192.0.2.{rng.randint(1, 254)}",
                f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            )
        )
        written += _attack(log, rng.uniform(0.0, span), ip, attack_lines - written)

    rows = sorted(log.rows)[:n_lines]
    pids: dict[int, int] = {}
    pid = 20_000 + rng.randint(0, 9_999)
    out = []
    for seconds, _, conn, message, attacker in rows:
        if conn not in pids:
            pid += rng.randint(1, 4)
            pids[conn] = pid
        at = start + timedelta(seconds=int(seconds))
        stamp = f"{_MONTHS[at.month - 1]} {at.day:>2} {at:%H:%M:%S}"
        out.append((at, f"{stamp} {_HOST} sshd[{pids[conn]}]: {message}", attacker))
    return out


def ssh_auth_log(
    n_lines: int = 20_000, *, seed: int = 7, attack_share: float = 0.03, start: datetime | None = None
) -> tuple[list[str], set[str]]:
    """Time-ordered sshd auth-log lines of a bastion host, and the source addresses of the attacks in them.

    Normal traffic: thirty users log in from one to three addresses each, by public key or by password
    (now and then after a mistyped one), open a session and disconnect. About ``attack_share`` of the
    lines are attacks: brute force (quick guesses at ``root`` or ``admin``), password spraying (one guess per
    invalid user name), slow scans (a probe or a guess every few minutes), some from addresses whose
    reverse DNS does not match (``POSSIBLE BREAK-IN ATTEMPT``). The same arguments give the same lines.

    Parameters
    ----------
    n_lines : int
        Exactly this many lines.
    seed : int
        The random seed.
    attack_share : float
        The share of lines written by attackers, between 0 and 1.
    start : datetime, optional
        The time of the first line (default 2024-03-04 00:00).

    Returns
    -------
    tuple of (list of str, set of str)
        The lines, without line ends, and the attackers' addresses that appear in them.

    >>> lines, attackers = ssh_auth_log(500, seed=1, attack_share=0.2)
    >>> len(lines), lines[0].split(" sshd[")[0], len(attackers) > 0
    (500, 'Mar  4 00:00:00 bastion', True)
    """
    records = _records(n_lines, seed, attack_share, start)
    return [line for _, line, _ in records], {ip for _, _, ip in records if ip is not None}


def write_ssh_auth_log(
    path: str | os.PathLike[str],
    n_lines: int = 20_000,
    *,
    seed: int = 7,
    attack_share: float = 0.03,
    start: datetime | None = None,
) -> set[str]:
    """Write :func:`ssh_auth_log` to ``path`` (one line each, ``\\n`` ends) and return the attackers' addresses.

    The file's modification time is set to its last line's, as a real log's is, so that a reader taking the
    year from it dates the lines right.
    """
    records = _records(n_lines, seed, attack_share, start)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{line}\n" for _, line, _ in records), encoding="utf-8")
    last = records[-1][0].timestamp()
    os.utime(p, (last, last))
    return {ip for _, _, ip in records if ip is not None}
