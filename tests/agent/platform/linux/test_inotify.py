"""The Linux inotify helper on a real descriptor."""

from __future__ import annotations

import errno
import os
import select
import struct
from pathlib import Path

from agent.platform import WatchEvent
from agent.platform.linux.inotify import (
    IN_CREATE,
    IN_IGNORED,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Inotify,
    decode,
)


def wait_readable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(10_000), "no inotify event within 10 s"


def drain(ino: Inotify, want: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    while len(events) < want:
        wait_readable(ino.fileno())
        events.extend(ino.read())
    return events


def test_events_arrive_with_their_names_and_a_shared_move_cookie(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        wd, err = ino.add_watch(os.fsencode(tmp_path), IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO)
        assert wd >= 0 and err == 0
        assert ino.read() == []           # non-blocking: nothing queued yet
        (tmp_path / "up.txt").write_text("x")
        (tmp_path / "up.txt").rename(tmp_path / "up.php")
        events = drain(ino, 3)
        assert [(e.wd, e.mask, e.name) for e in events] == [
            (wd, IN_CREATE, b"up.txt"), (wd, IN_MOVED_FROM, b"up.txt"),
            (wd, IN_MOVED_TO, b"up.php")]
        assert events[1].cookie == events[2].cookie != 0
        ino.rm_watch(wd)
        assert any(e.mask & IN_IGNORED for e in drain(ino, 1))
    finally:
        ino.close()


def test_a_watch_that_cannot_be_added_returns_its_errno(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        assert ino.add_watch(os.fsencode(tmp_path / "missing"), IN_CREATE) == (-1, errno.ENOENT)
    finally:
        ino.close()


def test_decode_keeps_whole_events_and_drops_a_truncated_tail() -> None:
    one = struct.pack("iIII", 3, IN_CREATE, 0, 8) + b"a.php\0\0\0"
    assert decode(one + one[:10]) == [WatchEvent(3, IN_CREATE, 0, b"a.php")]
    assert decode(b"") == []
