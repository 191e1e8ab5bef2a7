"""Commands that live outside the engine and are found when installed: the engine never imports them itself.

A plugin is a module with ``add_arguments(parser)`` and the command function named in its row of
:data:`PLUGINS`. ``finscore bench`` comes from the ``bench`` package of the source tree (``finscore[bench]``);
other packages add commands through the ``finscore.commands`` entry-point group, whose value names the module
(``mycmd = "mypkg.cli"``, which defines ``add_arguments`` and ``command``). A missing plugin keeps its command in
``finscore --help`` and says in one sentence how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

from engine.cli.common import Subparsers
from engine.errors import UsageError

__all__ = ["PLUGINS", "Plugin", "add_parsers"]

GROUP = "finscore.commands"


@dataclass(frozen=True)
class Plugin:
    """A command found in ``module``, run by its function ``command``; ``install`` tells how to get it."""

    name: str
    module: str
    help: str
    install: str
    command: str = "command"


PLUGINS = (
    Plugin(
        "bench",
        "bench.cli",
        "latency and throughput of a served model, beside perf_analyzer",
        "install finscore[bench] from the source tree (pip install -e '.[bench]')",
        command="bench_command",
    ),
)


def _module(name: str) -> ModuleType | None:
    """The plugin's module, or None when its package is not installed (an error inside it is not hidden)."""
    top = name.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        return None
    return importlib.import_module(name)


def _installed() -> list[Plugin]:
    """The plugins other packages register under the ``finscore.commands`` entry points."""
    own = {p.name for p in PLUGINS}
    return [
        Plugin(ep.name, ep.value, f"{ep.name} (from {ep.value})", "")
        for ep in entry_points(group=GROUP)
        if ep.name not in own
    ]


def _missing(plugin: Plugin) -> object:
    def run(args: argparse.Namespace) -> int:
        msg = f"finscore {plugin.name} is not installed: {plugin.install}"
        raise UsageError(msg)

    return run


def add_parsers(sub: Subparsers) -> None:
    for plugin in (*PLUGINS, *_installed()):
        module = _module(plugin.module)
        if module is None:
            p = sub.add_parser(plugin.name, help=f"{plugin.help} (not installed)", add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_missing(plugin))
            continue
        p = sub.add_parser(plugin.name, help=plugin.help)
        module.add_arguments(p)
        p.set_defaults(func=getattr(module, plugin.command))
