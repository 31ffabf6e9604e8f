"""The export queue: bounded in bytes, newest dropped when full, ids never put twice,
and what was put survives a crash (a process killed right after put returned)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from collector.outputs.diskqueue import DiskQueue
from tests.harness import REPO


def items(n: int, start: int = 0, size: int = 100) -> list[tuple[str, str, bytes]]:
    return [(f"id-{i}", "alerts", b"x" * size) for i in range(start, start + n)]


def test_put_peek_ack_in_order_and_counts(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite", max_bytes=10_000)
    assert q.put(items(5)).added == 5
    assert (q.depth(), q.size()) == (5, 500)
    head = q.peek(max_items=3, max_bytes=10_000)
    assert [i.id for i in head] == ["id-0", "id-1", "id-2"]
    q.ack(head[:2])
    q.reject(head[2:])
    assert [i.id for i in q.peek(max_items=10, max_bytes=10_000)] == ["id-3", "id-4"]
    assert (q.depth(), q.size(), q.delivered, q.rejected) == (2, 200, 2, 1)
    q.close()


def test_peek_bounds_bytes_but_always_gives_the_first(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite", max_bytes=100_000)
    q.put([("big", "alerts", b"x" * 5000), *items(3)])
    assert [i.id for i in q.peek(max_items=10, max_bytes=1000)] == ["big"]
    q.ack(q.peek(max_items=1, max_bytes=1))
    assert len(q.peek(max_items=10, max_bytes=250)) == 2


def test_full_queue_drops_the_newest_and_counts_them(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite", max_bytes=1000, reserve_bytes=300)
    first = q.put(items(8))
    second = q.put(items(5, start=8))
    assert (first.added, second.added, second.dropped) == (8, 2, 3)
    assert second.dropped_ids == ("id-10", "id-11", "id-12")
    assert q.size() == 1000 and q.dropped == 3
    # the oldest are kept: the first signs of an intrusion cannot be pushed out
    assert q.peek(max_items=1, max_bytes=1)[0].id == "id-0"
    # the queue-full alert has a reserve of its own
    assert q.put([("alert", "alerts", b"a" * 200)], reserve=True).added == 1
    assert q.put([("alert2", "alerts", b"a" * 200)], reserve=True).dropped == 1


def test_an_id_waiting_or_recently_sent_is_a_duplicate(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite", max_bytes=100_000, remember_sent=3)
    q.put(items(5))
    assert q.put(items(2)).duplicates == 2
    q.ack(q.peek(max_items=5, max_bytes=100_000))
    again = q.put(items(5))
    # only the last three delivered ids are remembered (bounded): 0 and 1 go again
    assert (again.duplicates, again.added) == (3, 2)


def test_what_put_returned_survives_a_kill_and_the_byte_count_is_rebuilt(
        tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from collector.outputs.diskqueue import DiskQueue\n"
        f"q = DiskQueue(Path({str(path)!r}), max_bytes=10**6)\n"
        "q.put([(f'id-{i}', 'alerts', b'y' * 50) for i in range(200)])\n"
        "q.ack(q.peek(max_items=20, max_bytes=10**6))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert done.returncode == -9
    q = DiskQueue(path, max_bytes=10**6)
    assert (q.depth(), q.size()) == (180, 180 * 50)
    assert q.peek(max_items=1, max_bytes=1)[0].id == "id-20"
    assert q.put(items(20)).duplicates == 20    # the delivered ids are remembered too
