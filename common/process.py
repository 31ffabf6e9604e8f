"""What both programs do the same way: run a command, run a daemon until signalled."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from common import logs
from common.errors import SisguardError


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse, configure logging, run ``args.func``; a SisguardError is one line on
    stderr and exit status 2 (never a traceback for bad input)."""
    args = parser.parse_args(argv)
    logs.configure(getattr(args, "log_level", None) or "info")
    try:
        return int(args.func(args))
    except SisguardError as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def serve_until_signalled(start: Callable[[], Any], stop: Callable[[], Any],
                          log: logs.StructuredLogger) -> None:
    """start(), wait for SIGTERM or SIGINT, stop()."""
    start()
    done = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    done.wait()
    stop()
