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
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


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
