"""Giving memory back after a burst of work (a baseline scan, a spool drain)."""

from __future__ import annotations

import contextlib
import ctypes
import gc


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
