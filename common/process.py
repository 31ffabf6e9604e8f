"""What both programs do the same way: run a command, run a daemon until signalled."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from common import logs
from common.errors import SisguardError

# After SIGTERM/SIGINT, stop() and the interpreter's exit get this long before the
# process ends itself (systemd's TimeoutStopSec defaults to 90 s; we stay far below).
STOP_TIMEOUT = 8.0
# The main thread's wait is woken by the signal wakeup fd; this is only a backstop.
POLL = 2.0


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


def _force_exit(log: logs.StructuredLogger, status: int, why: str) -> None:
    log.error("exiting without a clean stop", reason=why)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def serve_until_signalled(start: Callable[[], Any], stop: Callable[[], Any],
                          log: logs.StructuredLogger, *,
                          stop_timeout: float = STOP_TIMEOUT) -> None:
    """start(), wait for SIGTERM or SIGINT, stop().

    Whichever thread the kernel delivers the signal to, the C-level handler writes to
    the wakeup fd that the main thread is waiting on, so the main thread wakes and runs
    the Python handler at once (a wait on a lock with no timeout would only be
    interrupted by a signal delivered to the main thread itself). From the first signal
    on, a watchdog ends the process after ``stop_timeout`` seconds, whatever hangs
    (stop(), a thread the interpreter joins at exit); a second signal ends it at once.
    SIGINT inherited as ignored stays ignored (the convention for background jobs).
    """
    done = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if done.is_set():
            _force_exit(log, 128 + signum, f"second {name}")
        log.info("stopping", signal=name)
        done.set()

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        # An inherited SIG_IGN for SIGINT stays (a background job of a script: Ctrl-C is
        # for the script, which then sends SIGTERM once, as scripts/demo does).
        if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
            continue
        signal.signal(signum, _signal)   # kept until exit: a second signal ends it
    try:
        start()
        while not done.is_set():
            select.select([read_fd], [], [], POLL)
            with contextlib.suppress(BlockingIOError):
                os.read(read_fd, 512)
        watchdog = threading.Timer(stop_timeout, _force_exit,
                                   args=(log, 1, f"still running {stop_timeout:g}s after "
                                         "the signal"))
        watchdog.daemon = True
        watchdog.name = "stop-watchdog"
        watchdog.start()   # left running: it also covers the interpreter's exit
        stop()
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(read_fd)
        os.close(write_fd)
