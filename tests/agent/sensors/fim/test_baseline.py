"""Baseline.held: rows become durable only after what the caller puts first."""

from __future__ import annotations

from pathlib import Path

from agent.sensors.fim.baseline import Baseline
from agent.sensors.fim.state import FileState


def _state(path: str) -> FileState:
    return FileState(path=path, type="file", size=1, mode=0o644, uid=0, gid=0, owner=None,
                     group=None, mtime_ns=1, ctime_ns=1, inode=1)


def test_held_rows_are_committed_after_the_callers_barrier(tmp_path: Path) -> None:
    base = Baseline(tmp_path)
    order: list[str] = []
    with base.held() as commit:
        base.put(_state("/w/a"))
        base.put_many([_state("/w/b")])   # nests: no commit of its own
        assert Baseline(tmp_path).get("/w/a") is None   # another reader: not yet there
        commit(lambda: order.append("spooled"))
    assert order == ["spooled"]
    other = Baseline(tmp_path)
    assert other.get("/w/a") is not None and other.get("/w/b") is not None


def test_held_rows_without_a_commit_are_dropped(tmp_path: Path) -> None:
    base = Baseline(tmp_path)
    with base.held():
        base.put(_state("/w/a"))
    assert base.get("/w/a") is None
    base.put(_state("/w/c"))   # outside: committed at once, as before
    assert Baseline(tmp_path).get("/w/c") is not None
