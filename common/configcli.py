"""``config check FILE`` and ``config show``, the same for the agent and the collector.

``check`` reports every problem of a file (not only the first), one line each with its
file, line, column and key path, and exits 1 when there is any: run it before a restart.
``show`` prints the effective configuration (the file, then the flags' defaults), every
key with its default and comment, secrets masked; ``--defaults`` ignores the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.configshow import render
from common.errors import ConfigError


def add_config_parser(sub: Any, *, program: str, default_path: str,
                      check: Callable[[Path], Sequence[ConfigError]],
                      load: Callable[[Path | None], Any]) -> None:
    """``load(path)`` returns the config dataclass (or a list of them, printed in turn)."""
    config = sub.add_parser("config", help="check a config file, or show the effective one")
    config_sub = config.add_subparsers(dest="config_command", required=True)

    p = config_sub.add_parser("check", help="report every error of a config file")
    p.add_argument("file", nargs="?", default=default_path)

    def _check(args: argparse.Namespace) -> int:
        path = Path(args.file)
        errors = check(path)
        for error in errors:
            print(error, file=sys.stderr)
        if errors:
            print(f"{path}: {len(errors)} error{'s' if len(errors) > 1 else ''}",
                  file=sys.stderr)
            return 1
        print(f"{path}: ok")
        return 0

    p.set_defaults(func=_check)

    p = config_sub.add_parser("show", help="the effective config, with defaults and comments")
    p.add_argument("--config", default=None, help=f"the file (default: {default_path})")
    p.add_argument("--defaults", action="store_true", help="the built-in defaults only")

    def _show(args: argparse.Namespace) -> int:
        path = None if args.defaults else Path(args.config or default_path)
        if path is not None and not path.exists() and args.config is None:
            path = None
        loaded = load(path)
        title = "built-in defaults" if path is None else f"from {path}, defaults elsewhere"
        print(f"# {program} configuration ({title})")
        for item in loaded if isinstance(loaded, list) else [loaded]:
            print("\n".join(render(item)))
        return 0

    p.set_defaults(func=_show)
