"""The Linux helpers satisfy the protocols the sensors hold them through: mypy checks the
assignments below, the runtime checks that every protocol member is there."""

from __future__ import annotations

from pathlib import Path

from agent.platform import FileEvents, LogFollower, ProcessEvents, ProcessTable
from agent.platform.linux.inotify import Inotify
from agent.platform.linux.logfollow import FileFollower
from agent.platform.linux.netlink import ProcConnector
from agent.platform.linux.procfs import ProcFS


def test_the_linux_helpers_satisfy_the_platform_protocols(tmp_path: Path) -> None:
    ino: FileEvents = Inotify()
    try:
        assert isinstance(ino, FileEvents)
    finally:
        ino.close()
    connector: ProcessEvents = ProcConnector()   # not opened: needs root and netlink
    table: ProcessTable = ProcFS()
    follower: LogFollower = FileFollower(tmp_path / "auth.log", None, start_at_end=False,
                                           grace=1.0)
    assert isinstance(connector, ProcessEvents) and isinstance(table, ProcessTable)
    assert isinstance(follower, LogFollower)
    assert table.pids() and table.snapshot(table.pids()[0]).pid > 0


def test_an_object_missing_a_member_is_not_taken_for_one() -> None:
    class Half:
        def fileno(self) -> int:
            return 0

    assert not isinstance(Half(), FileEvents)
