"""The FIM baseline: one SQLite file in the sensor's state directory.

Tables (paths and link targets are stored as bytes, ``os.fsencode``, so any file name
round-trips; a ``target`` written as text by an older agent is read as it is; owner and
group names are valid text, ``common.text.os_text``):

* ``files``: the last known state of every watched path (see ``FileState``).
* ``roots``: roots whose first baseline scan finished (a root missing here gets a silent
  initial scan; one present gets a reconciliation scan that reports changes).
* ``copies``: zlib-compressed copies of text files for diffs, bounded in total bytes
  (oldest evicted first).
* ``approved``: the approved content of protected roots (``fim approve``), compressed.

One connection, shared by the sensor's threads under a lock; WAL so that
``sisguard-agent fim ...`` can work beside a running agent.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.sensors.fim.state import FileState
from common.text import is_valid_text, os_text

FILENAME = "baseline.db"
CACHE_KIB = -512   # SQLite page cache (negative: KiB); 2 MiB by default, per connection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY, type TEXT, size INTEGER, mode INTEGER, uid INTEGER, gid INTEGER,
    owner TEXT, grp TEXT, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER,
    sha256 TEXT, sha1 TEXT, md5 TEXT, sha512 TEXT, target TEXT, xattrs TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (root BLOB PRIMARY KEY, initialized REAL);
CREATE TABLE IF NOT EXISTS copies (path BLOB PRIMARY KEY, stored REAL, size INTEGER,
                                   data BLOB);
CREATE TABLE IF NOT EXISTS approved (
    path BLOB PRIMARY KEY, type TEXT, mode INTEGER, uid INTEGER, gid INTEGER,
    sha256 TEXT, target TEXT, data BLOB
) WITHOUT ROWID;
"""

_COLUMNS = ("path, type, size, mode, uid, gid, owner, grp, mtime_ns, ctime_ns, inode, "
            "sha256, sha1, md5, sha512, target, xattrs")
_INSERT = f"INSERT OR REPLACE INTO files ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"

# a runtime alias: the optional members are strings, so that Python 3.9 can build it
Row = tuple[bytes, str, int, int, int, int, "str | None", "str | None", int, int, int,
            "str | None", "str | None", "str | None", "str | None", "bytes | str | None",
            "str | None"]


def _os_blob(value: str | None) -> bytes | None:
    """An OS string (link target) as its bytes: SQLite cannot bind a lone surrogate."""
    return None if value is None else os.fsencode(value)


def _os_str(value: bytes | str | None) -> str | None:
    """Back from the column: bytes as written by ``_os_blob``; text as older agents wrote."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _name_text(value: str | None) -> str | None:
    """An owner or group name, valid text (rows from an older agent included)."""
    return value if value is None or is_valid_text(value) else os_text(value)


def to_row(s: FileState) -> Row:
    h = s.hashes
    return (os.fsencode(s.path), s.type, s.size, s.mode, s.uid, s.gid, _name_text(s.owner),
            _name_text(s.group), s.mtime_ns, s.ctime_ns, s.inode, h.get("sha256"),
            h.get("sha1"), h.get("md5"), h.get("sha512"), _os_blob(s.target_path), s.xattrs)


def from_row(r: Row) -> FileState:
    hashes = {name: value for name, value in zip(("sha256", "sha1", "md5", "sha512"),
                                                 r[11:15]) if value}
    return FileState(path=os.fsdecode(r[0]), type=r[1], size=r[2], mode=r[3], uid=r[4],
                     gid=r[5], owner=r[6], group=r[7], mtime_ns=r[8], ctime_ns=r[9],
                     inode=r[10], hashes=hashes, target_path=_os_str(r[15]), xattrs=r[16])


def _range(prefix: str) -> tuple[bytes, bytes]:
    """Byte range of paths strictly below directory ``prefix``."""
    p = os.fsencode(prefix.rstrip("/"))
    return p + b"/", p + b"0"   # '0' sorts right after '/'


@dataclass(frozen=True)
class Approved:
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    sha256: str | None
    target: str | None
    data: bytes | None   # compressed


class Baseline:
    def __init__(self, state_dir: Path, *, copies_max: int = 256 * 1024 * 1024) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME
        self.copies_max = copies_max
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                                  isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # a small page cache: an idle agent must stay small, and the OS caches the file
        self.db.execute(f"PRAGMA cache_size={CACHE_KIB}")
        self.db.executescript(_SCHEMA)
        os.chmod(self.path, 0o600)

    def release_memory(self) -> None:
        """Drop the page cache a scan filled (it refills as needed)."""
        with self.lock:
            self.db.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # files
    def get(self, path: str) -> FileState | None:
        with self.lock:
            row = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ?",
                                  (os.fsencode(path),)).fetchone()
        return from_row(row) if row else None

    def put(self, state: FileState) -> None:
        with self.lock:
            self.db.execute(_INSERT, to_row(state))

    def put_many(self, states: Iterable[FileState]) -> None:
        with self.lock, self._transaction():
            self.db.executemany(_INSERT, (to_row(s) for s in states))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction, or a part of the one ``held`` keeps open."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def held(self) -> Iterator[Callable[[Callable[[], object]], None]]:
        """Keep the writes made inside uncommitted; the caller commits them with the
        function it gets, passing what must happen first (the agent's spool taking the
        events these writes go with). A crash before that commit loses the rows, so the
        next scan reports the change again, rather than the report being lost for good."""
        with self.lock:
            began = not self.db.in_transaction
            if began:
                self.db.execute("BEGIN")

        def commit(first: Callable[[], object]) -> None:
            first()
            with self.lock:
                if began and self.db.in_transaction:
                    self.db.execute("COMMIT")

        try:
            yield commit
        finally:
            with self.lock:   # not committed (an error, or no commit called): keep nothing
                if began and self.db.in_transaction:
                    self.db.execute("ROLLBACK")

    def delete(self, paths: Iterable[str]) -> None:
        with self.lock:
            self.db.executemany("DELETE FROM files WHERE path = ?",
                                ((os.fsencode(p),) for p in paths))

    def under(self, prefix: str) -> list[FileState]:
        """Entries strictly below directory ``prefix``, in path order."""
        low, high = _range(prefix)
        with self.lock:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE path >= ? AND path < ?"
                                   " ORDER BY path", (low, high)).fetchall()
        return [from_row(r) for r in rows]

    def paths_under(self, prefix: str) -> Iterator[str]:
        low, high = _range(prefix)
        with self.lock:
            rows = self.db.execute("SELECT path FROM files WHERE path >= ? AND path < ?",
                                   (low, high)).fetchall()
        return (os.fsdecode(r[0]) for r in rows)

    def count(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT count(*) FROM files").fetchone()[0])

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(FILENAME + "*"))

    # roots
    def initialized(self, root: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM roots WHERE root = ?",
                                   (os.fsencode(root),)).fetchone() is not None

    def mark_initialized(self, root: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO roots VALUES (?, ?)",
                            (os.fsencode(root), time.time()))

    # copies for diffs
    def copy_get(self, path: str) -> bytes | None:
        with self.lock:
            row = self.db.execute("SELECT data FROM copies WHERE path = ?",
                                  (os.fsencode(path),)).fetchone()
        return zlib.decompress(row[0]) if row else None

    def copy_put(self, path: str, content: bytes) -> None:
        data = zlib.compress(content, 6)
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?)",
                            (os.fsencode(path), time.time(), len(data), data))
            total = int(self.db.execute("SELECT coalesce(sum(size), 0) FROM copies")
                        .fetchone()[0])
            while total > self.copies_max:
                row = self.db.execute("SELECT path, size FROM copies ORDER BY stored LIMIT 1"
                                      ).fetchone()
                if row is None:
                    break
                self.db.execute("DELETE FROM copies WHERE path = ?", (row[0],))
                total -= int(row[1])

    def copy_delete(self, path: str) -> None:
        with self.lock:
            self.db.execute("DELETE FROM copies WHERE path = ?", (os.fsencode(path),))

    # approved content (protection)
    def approved(self, path: str) -> Approved | None:
        with self.lock:
            row = self.db.execute("SELECT path, type, mode, uid, gid, sha256, target, data "
                                  "FROM approved WHERE path = ?",
                                  (os.fsencode(path),)).fetchone()
        if row is None:
            return None
        return Approved(os.fsdecode(row[0]), row[1], row[2], row[3], row[4], row[5],
                        _os_str(row[6]), row[7])

    def has_approvals(self, root: str) -> bool:
        low, high = _range(root)
        with self.lock:
            row = self.db.execute("SELECT 1 FROM approved WHERE path = ? OR "
                                  "(path >= ? AND path < ?) LIMIT 1",
                                  (os.fsencode(root), low, high)).fetchone()
        return row is not None

    def approve(self, root: str, entries: Iterable[tuple[FileState, bytes | None]]) -> int:
        """Replace the approved content of ``root`` with ``entries`` (state, content
        compressed with zlib; consumed one at a time, in one transaction)."""
        low, high = _range(root)
        n = 0
        with self.lock, self._transaction():
            self.db.execute("DELETE FROM approved WHERE path = ? OR (path >= ? AND path < ?)",
                            (os.fsencode(root), low, high))
            for s, content in entries:
                self.db.execute("INSERT OR REPLACE INTO approved VALUES (?,?,?,?,?,?,?,?)",
                                (os.fsencode(s.path), s.type, s.mode, s.uid, s.gid,
                                 s.hashes.get("sha256"), _os_blob(s.target_path),
                                 content))
                n += 1
        return n
