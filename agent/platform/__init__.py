"""The operating system beneath the sensors: the seam a second platform plugs into.

``agent.platform.linux`` holds the Linux helpers: inotify (``inotify.py``), the netlink
process connector (``netlink.py``), ``/proc`` (``procfs.py``, ``exe_open.py``), log
following (``logfollow.py``) and reads beneath a root that never follow a link
(``saferead.py``). The sensors hold these helpers through the small protocols below: only
what the sensors call, nothing more. A second platform writes classes that satisfy them in
``agent/platform/<os>/`` and the sensors' factories pick them (docs/agent-layout.md).

The records these protocols carry (``ProcEvent``, ``Snapshot``) are today defined beside the
Linux helpers; they hold no Linux object (numbers and text), a second platform fills them
too. ``saferead`` has no protocol: FIM and the hash helpers use its ``Tree`` as the one
way to open a file beneath a root (``openat2``/``O_NOFOLLOW``), which is POSIX more than
Linux; a platform without it would need its own FIM reader first.

This module imports only ``typing``: the hash helpers import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agent.platform.linux.netlink import ProcEvent
    from agent.platform.linux.procfs import Snapshot


class WatchEvent(NamedTuple):
    """One file-system notification: watch descriptor, event mask, move cookie, name."""

    wd: int
    mask: int
    cookie: int
    name: bytes


@runtime_checkable
class FileEvents(Protocol):
    """Directory watches delivering events on a pollable descriptor (inotify on Linux)."""

    def fileno(self) -> int: ...

    def add_watch(self, path: bytes, mask: int) -> tuple[int, int]:
        """(watch descriptor, 0), or (-1, errno)."""
        ...

    def rm_watch(self, wd: int) -> None: ...

    def read(self) -> list[WatchEvent]:
        """What is queued now (at most one read's worth); [] when nothing is."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ProcessEvents(Protocol):
    """The kernel's stream of process events (fork, exec, exit): the netlink connector."""

    recv_buffer: int
    granted_buffer: int
    buffer_option: str

    def open(self, *, ack_timeout: float = 2.0) -> None: ...

    def recv(self) -> list[ProcEvent]: ...

    def close(self) -> None: ...


@runtime_checkable
class ProcessTable(Protocol):
    """The running processes (``/proc`` on Linux)."""

    root: str
    clk_tck: int

    def pids(self) -> list[int]: ...

    def snapshot(self, pid: int) -> Snapshot: ...

    def start_ticks(self, pid: int) -> int | None: ...

    def boot_id(self) -> str: ...

    def boot_time(self) -> float: ...


@runtime_checkable
class LogFollower(Protocol):
    """One log file followed across rotation and truncation, from a saved position."""

    path: Path

    def prime(self) -> None: ...

    def poll(self) -> list[bytes]: ...

    def state(self) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


__all__ = ["FileEvents", "LogFollower", "ProcessEvents", "ProcessTable", "WatchEvent"]
