"""Paths the agent trusts must be its own: refuse to start on one another user controls.

The agent runs as root and reads its configuration, keeps its key, spool and baseline in
its state directory, and moves files into a quarantine directory. If a local user could
write one of those (or a directory above it, and so swap it), the user could feed the
agent a configuration, replace the baseline that decides what is "unchanged", or plant
a link where quarantined files go. So before anything is read, each such path, after
resolving links, and every directory above it must be owned by root or by the agent's
own user and not writable by group or others. A world-writable directory with the
sticky bit (``/tmp``) is accepted above a path that is itself trusted: others cannot
rename or remove what they do not own there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from common.errors import ConfigError, Location


class UntrustedPath(ConfigError):
    """A path the agent trusts is owned or writable by another user."""

    def __init__(self, message: str, *, location: Location | None = None, path: str = "",
                 problem: str = "") -> None:
        super().__init__(message, location=location)
        self.path, self.problem = path, problem


def _trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _problem(path: str, st: os.stat_result, *, sticky_ok: bool) -> str | None:
    if st.st_uid not in _trusted_owners():
        return f"owned by uid {st.st_uid}, not root or the agent's user"
    writable = stat.S_IMODE(st.st_mode) & 0o022
    if writable and not (sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        who = "group- and world-" if writable == 0o022 else (
            "group-" if writable & 0o020 else "world-")
        return f"{who}writable (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_path(path: Path | str, *, what: str) -> None:
    """Raise ``UntrustedPath`` naming ``path`` (``what``: "state dir", ...) unless it and
    every directory above it are the agent's. A path that does not exist yet is judged
    by the directories that would hold it."""
    given = os.fspath(path)
    real = os.path.realpath(given)
    chain: list[str] = []
    current = real
    while True:
        chain.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    first = True
    for p in chain:   # the path itself first, then each directory above it
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue   # not made yet: the agent makes it 0700 below a trusted parent
        problem = _problem(p, st, sticky_ok=not first)
        first = False
        if problem is not None:
            shown = p if p == given else f"{p} (for {given})"
            raise UntrustedPath(
                f"refusing to start: the {what} {shown} is {problem}; it must be owned "
                f"by root and not writable by group or others (chown root "
                f"and chmod go-w it)", location=Location(given), path=p, problem=problem)


def check_paths(paths: Iterable[tuple[str, Path | str | None]]) -> None:
    """``check_path`` for each (what, path); None entries are skipped."""
    for what, path in paths:
        if path is not None:
            check_path(path, what=what)


def check_agent(*, config_file: Path | str | None, state_dir: Path | str,
                fim: object | None = None) -> None:
    """The paths ``sisguard-agent run`` and ``fim scan|approve`` trust: the config file,
    the state directory, the FIM quarantine directory (if configured)."""
    quarantine = getattr(fim, "quarantine_dir", None)
    check_paths([("config file", config_file), ("state dir", state_dir),
                 ("quarantine dir", quarantine)])
