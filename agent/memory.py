"""Giving memory back after a burst of work (a baseline scan, the inventory, a drain)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys


def exec_with_system_malloc() -> None:
    """Run this program again with ``PYTHONMALLOC=malloc``, unless it is set already.

    CPython's own allocator keeps a 1 MiB arena as long as one object in it lives, so
    after a burst (the first inventory: 800 documents) a few long-lived objects pin
    megabytes. With glibc's malloc, ``release_heap`` can return every free page: 2.5
    MiB less idle RSS in bench/agent. An explicit ``PYTHONMALLOC`` is respected.
    """
    if os.environ.get("PYTHONMALLOC"):
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, own_command_line())


def own_command_line() -> list[str]:
    """How this process was started: ``sys.orig_argv`` (3.10+), else rebuilt (3.9)."""
    original = getattr(sys, "orig_argv", None)
    if original:
        return [sys.executable, *original[1:]]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:   # python -m agent.cli ...
        module = spec.name[:-len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", module, *sys.argv[1:]]
    return [sys.executable, *sys.argv]


def release_heap(*, collect: bool = True) -> None:
    """Collect garbage (unless not ``collect``), then ask glibc to return free heap pages
    to the kernel.

    CPython frees its 1 MiB arenas once empty, but glibc keeps freed chunks mapped:
    without ``malloc_trim`` a daemon's RSS stays at its high-water mark. A no-op where
    the C library has no ``malloc_trim`` (musl).
    """
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
