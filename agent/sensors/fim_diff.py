"""Unified diffs of changed text files (``report_changes: true``).

A diff needs the previous content: the baseline keeps a compressed copy of each text file
under a path with ``report_changes`` (bounded in total bytes, oldest evicted). Never for
``nodiff`` paths (secrets: shadow files, private keys): for those not even a copy is kept.
"""

from __future__ import annotations

import difflib
import os
from fnmatch import fnmatch
from typing import NamedTuple

from common.text import os_text

TEXT_SNIFF = 8192


def is_nodiff(path: str, patterns: tuple[str, ...]) -> bool:
    """A pattern with a slash matches the whole path, one without matches the name."""
    name = os.path.basename(path)
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch(path, pattern):
                return True
        elif fnmatch(name, pattern):
            return True
    return False


def is_text(content: bytes) -> bool:
    """No NUL byte in the first 8 KiB and decodable as UTF-8 there (allowing a cut char)."""
    head = content[:TEXT_SNIFF]
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3   # a multi-byte character cut at the sniff limit
    return True


class Snapshot(NamedTuple):
    """A text file's bytes and the ``fstat`` of the descriptor they were read from."""

    content: bytes
    stat: os.stat_result


def read_for_diff(path: str, max_file: int) -> Snapshot | None:
    """The content of a small text file (never following a final symlink), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size > max_file:
                return None
            content = f.read(max_file + 1)
            st = os.fstat(f.fileno())
    except OSError:
        return None
    if len(content) > max_file or not is_text(content):
        return None
    return Snapshot(content, st)


def unified(path: str, old: bytes, new: bytes, *, max_bytes: int) -> str:
    """A unified diff (``a/path`` -> ``b/path``), cut to ``max_bytes`` with a marker."""
    a = old.decode("utf-8", errors="replace").splitlines(keepends=True)
    b = new.decode("utf-8", errors="replace").splitlines(keepends=True)
    out: list[str] = []
    size = 0
    label = os_text(path)   # an OS string: valid text in the header
    for line in difflib.unified_diff(a, b, fromfile=f"a{label}", tofile=f"b{label}", n=3):
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        size += len(line.encode("utf-8", errors="replace"))
        if size > max_bytes:
            out.append(f"... diff cut at {max_bytes} bytes\n")
            break
        out.append(line)
    return "".join(out)
