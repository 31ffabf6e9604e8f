"""Unified diffs of changed text files (``report_changes: true``).

``nodiff`` is matched against the path that is actually opened: the file is read beneath
the watched root, never through a link (``agent.platform.linux.saferead``), so the lexical
path is the file's path.

A diff needs the previous content: the baseline keeps a compressed copy of each text file
under a path with ``report_changes`` (bounded in total bytes, oldest evicted). Never for
``nodiff`` paths (secrets: shadow files, private keys): for those not even a copy is kept.
"""

from __future__ import annotations

import difflib
import os
from fnmatch import fnmatch
from typing import NamedTuple

from agent.platform.linux.saferead import Tree, read_capped
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


def private_link(st: os.stat_result) -> bool:
    """A hard link (``nlink > 1``) that others may not read: it may be the link a user
    made to a file it cannot read (possible where ``fs.protected_hardlinks`` is 0), so
    its bytes never leave the host in a diff or an excerpt."""
    return st.st_nlink > 1 and not st.st_mode & 0o004


class Snapshot(NamedTuple):
    """A text file's bytes and the ``fstat`` of the descriptor they were read from."""

    content: bytes
    stat: os.stat_result


def read_for_diff(tree: Tree, path: str, max_file: int, *, ino: int | None = None
                  ) -> Snapshot | None:
    """The content of a small text file, read beneath the root (never through a link,
    only a regular file, only inode ``ino`` when given), else None."""
    try:
        fd = tree.open_file(path, ino=ino)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size > max_file:
            return None
        content = read_capped(fd, max_file + 1)
        st = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(content) > max_file or not is_text(content) or private_link(st):
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
