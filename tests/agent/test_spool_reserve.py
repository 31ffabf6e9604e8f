from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.spool_reserve import DiskReserve, disk_full


def test_disk_full_is_told_from_other_sqlite_errors() -> None:
    assert disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not disk_full(sqlite3.OperationalError("database is locked"))


def test_reserve_is_made_with_real_bytes_released_once_and_made_again(tmp_path: Path) -> None:
    reserve = DiskReserve(tmp_path / "spool.db.reserve", 64 * 1024)
    assert reserve.ensure()
    assert reserve.path.stat().st_blocks * 512 >= 64 * 1024   # not sparse: frees real room
    assert reserve.release()
    assert not reserve.release()   # nothing left to free
    assert reserve.ensure() and reserve.path.exists()


def test_no_reserve_when_it_is_off(tmp_path: Path) -> None:
    reserve = DiskReserve(tmp_path / "r", 0)
    assert not reserve.ensure()
    assert not reserve.path.exists()
