"""``finscore protect`` / ``protect-keys`` (tokenize, encrypt, mask columns; key files), ``finscore audit``
(check the hash-chained log) and ``finscore forget`` (erasure from every store), over :mod:`engine.security`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from engine.cli.common import Subparsers, add_client_tls, add_repo, client_tls
from engine.errors import DataFileError, InvalidInputError, UsageError
from engine.settings import env_name, resolve_settings

__all__ = ["add_parsers", "audit_command", "forget_command", "protect_command", "protect_keys_command", "read_ids"]

_HEAD = re.compile(r"(-1|[0-9]+):([0-9a-fA-F]{64})")


def add_parsers(sub: Subparsers) -> None:
    _add_protect(sub)
    _add_audit(sub)
    _add_forget(sub)


def _add_protect(sub: Subparsers) -> None:
    p = sub.add_parser("protect", help="tokenize, encrypt or mask columns of a CSV or Parquet file (PCI DSS, GDPR)")
    p.add_argument("file", type=Path, metavar="FILE", help="CSV or Parquet table")
    p.add_argument("--out", required=True, type=Path, help="protected table: .csv or .parquet")
    for flag, what in (
        ("--tokenize", "replace by a keyed token that still joins (repeatable)"),
        ("--encrypt", "encrypt with AES-GCM, readable again with --reveal (repeatable)"),
        ("--mask", "mask the card numbers in it, first 6 and last 4 at most (repeatable)"),
    ):
        p.add_argument(flag, action="append", default=[], metavar="COL", help=f"column to {what}")
    p.add_argument(
        "--keys", type=Path, metavar="FILE", help=f"key file (default: the keys in {env_name('protect_keys')})"
    )
    p.add_argument("--reveal", action="store_true", help="decrypt the --encrypt columns instead")
    p.set_defaults(func=protect_command)
    k = sub.add_parser("protect-keys", help="create a protection key file, or add a key version to it")
    k.add_argument("action", choices=("generate", "rotate"), help="generate: new file with v1; rotate: add a version")
    k.add_argument("--keys", required=True, type=Path, metavar="FILE", help="the key file")
    k.set_defaults(func=protect_keys_command)


def protect_command(args: argparse.Namespace) -> int:
    """``finscore protect``: one line of counts, never a value."""
    from engine.security.protect import KeyRing, protect_file, reveal_file

    if args.reveal:
        if args.tokenize or args.mask or not args.encrypt:
            msg = "--reveal decrypts the --encrypt columns; tokens and masks cannot be undone"
            raise UsageError(msg)
        c = reveal_file(args.file, args.out, decrypt=args.encrypt, keys=KeyRing.from_env_or_file(args.keys))
        print(f"{args.out}: {c['rows']:,} rows; {c['decrypted']:,} values decrypted")
        return 0
    if not (args.tokenize or args.encrypt or args.mask):
        msg = "nothing to do: give --tokenize, --encrypt or --mask COL"
        raise UsageError(msg)
    keys = KeyRing.from_env_or_file(args.keys) if args.tokenize or args.encrypt else None
    c = protect_file(args.file, args.out, tokenize=args.tokenize, encrypt=args.encrypt, mask=args.mask, keys=keys)
    print(
        f"{args.out}: {c['rows']:,} rows; {c['tokenized']:,} values tokenized, {c['encrypted']:,} encrypted, "
        f"{c['masked']:,} masked ({c['pans_found']:,} card numbers)"
    )
    if c["pans_left"]:
        print(f"Warning: {c['pans_left']:,} card numbers remain in columns left as they are", file=sys.stderr)
    return 0


def protect_keys_command(args: argparse.Namespace) -> int:
    """``finscore protect-keys generate|rotate``: the new version and the file, never a key."""
    from engine.security.protect import KeyRing

    ring = KeyRing.generate(args.keys) if args.action == "generate" else KeyRing.rotate(args.keys)
    print(f"{args.keys}: key version {ring.current} is now current (versions {', '.join(map(str, ring.versions))})")
    return 0


def head_arg(text: str) -> tuple[int, str]:
    """An argparse ``type``: ``SEQ:HASH`` as ``finscore audit head`` prints it."""
    found = _HEAD.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError("expected SEQ:HASH as 'finscore audit head' prints it")
    return int(found.group(1)), found.group(2).lower()


def _add_audit(sub: Subparsers) -> None:
    audit = sub.add_parser("audit", help="check the hash-chained audit log of decisions and model loads")
    actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    v = actions.add_parser("verify", help="check every line; exit 1 at the first edited, deleted or moved line")
    v.add_argument("log", type=Path, metavar="LOG", help="the audit log (JSON lines)")
    v.add_argument(
        "--key-file",
        type=Path,
        help=f"a keyed log's key: 32 raw bytes or 64 hex (default ${env_name('audit_key_file')})",
    )
    v.add_argument("--head", type=head_arg, metavar="SEQ:HASH", help="a head recorded with 'audit head' earlier")
    h = actions.add_parser("head", help="print SEQ:HASH of the last line, to record outside the log")
    h.add_argument("log", type=Path, metavar="LOG", help="the audit log (JSON lines)")
    audit.set_defaults(func=audit_command)


def audit_command(args: argparse.Namespace) -> int:
    """``finscore audit verify|head``: 0 when the log is sound, 1 at its first bad line."""
    from engine.security.audit import head, load_key, verify

    if args.audit_action == "head":
        print("{}:{}".format(*head(args.log)))
        return 0
    key_file = resolve_settings(audit_key_file=getattr(args, "key_file", None)).audit_key_file
    report = verify(args.log, key=load_key(key_file) if key_file else None, expect_head=args.head)
    print(report.sentence())
    return 0 if report.ok else 1


def _add_forget(sub: Subparsers) -> None:
    p = sub.add_parser(
        "forget", help="erase customers from every store finscore keeps (GDPR), recorded in the audit log"
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="customer or card ids to erase")
    p.add_argument(
        "--ids-file",
        metavar="FILE",
        help="read the ids from FILE, one per line ('-': standard input), so they stay out of the process list "
        "and the shell's history",
    )
    add_repo(p)
    p.add_argument(
        "--url", help="the running server's gRPC address HOST:PORT, erased in memory (default 127.0.0.1:8001)"
    )
    p.add_argument(
        "--no-server", action="store_true", help="do not ask a running server (none runs on this repository)"
    )
    add_client_tls(p)
    p.add_argument(
        "--fraud-redis",
        metavar="URL",
        help=f"also erase from the fraud state shared in this Redis (default: {env_name('fraud_redis')}, if set)",
    )
    p.set_defaults(func=forget_command)


def read_ids(path: str) -> list[str]:
    """The ids in ``path`` (``-``: standard input), one per line; blank lines are skipped."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"--ids-file {path}: cannot be read ({type(exc).__name__}); give a UTF-8 text file, one id per line"
        raise DataFileError(msg) from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        msg = f"--ids-file {path}: holds no id (one per line)"
        raise InvalidInputError(msg)
    return ids


def forget_command(args: argparse.Namespace) -> int:
    """``finscore forget``: one line per store and place with counts, then where the audit lines went; 1 when a
    place could not be searched."""
    from engine.security.erasure import ErasureContext, forget

    ids = [*args.ids, *(read_ids(args.ids_file) if args.ids_file else [])]
    if not ids:
        msg = "give the ids to erase: finscore forget ID... or --ids-file FILE"
        raise UsageError(msg)
    s = resolve_settings(repo=args.repo, url=args.url, fraud_redis=args.fraud_redis)
    ctx = ErasureContext(
        repo=s.repo, url=None if args.no_server else s.url, tls=client_tls(args), redis_url=s.fraud_redis
    )
    report = forget(ids, ctx)
    for line in report.lines():
        print(line)
    print(f"audit: {report.audit_lines} erasure lines appended to {report.audit_log}")
    if not report.complete:
        print(
            "Error: some places could not be searched (see above); fix that and run forget again, it removes what "
            "is left",
            file=sys.stderr,
        )
        return 1
    return 0
