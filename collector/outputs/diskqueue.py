"""A durable queue of records on their way upstream: one SQLite file per export output.

Why SQLite (WAL, ``synchronous=FULL``) rather than fsync'd segment files: a batch is put
in one transaction, so after a crash it is either wholly there or wholly absent; a
record delivered out of order (a split HTTPS batch, one rejected record) is deleted by
its position without rewriting a segment; and the recovery code is SQLite's, tested far
beyond anything we would write. ``store.py`` already depends on it.

On disk (``DATA_DIR/outputs/<name>/queue.sqlite``)::

    queue(pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, kind TEXT,
          body BLOB, at REAL)   -- waiting, oldest first; body: the document's JSON
    sent(n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE)
                                -- the ids last delivered (``remember_sent`` of them)

Bounds: ``max_bytes`` of bodies waiting (SQLite's pages and WAL add about a third
more on disk). When full, the *newest* records are dropped and counted: the records
waiting are the oldest an outage kept from the SOC, the first signs of an intrusion,
and an attacker who floods the collector afterwards must not be able to push them out
(every record is still in Elasticsearch or the archive; the drop raises an alert).
A record put with ``reserve=True`` (that very alert) may use ``reserve_bytes`` beyond.

Ids: a record already waiting, or among the last ``remember_sent`` delivered, is a
duplicate and not put again (an agent resends a batch another output did not take).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import SisguardError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE
);
"""
_CHUNK = 400   # ids per IN (...) query: below SQLite's variable limit everywhere


class QueueError(SisguardError):
    """The queue's file cannot be opened or written."""


@dataclass(frozen=True)
class Item:
    pos: int
    id: str
    kind: str
    body: bytes


@dataclass
class PutResult:
    added: int = 0
    duplicates: int = 0
    dropped: int = 0
    dropped_ids: tuple[str, ...] = ()
    duplicate_ids: tuple[str, ...] = ()


class DiskQueue:
    """Thread-safe: ``put`` from the publisher's threads, ``peek``/``ack`` from a sender."""

    def __init__(self, path: Path, *, max_bytes: int, reserve_bytes: int = 0,
                 remember_sent: int = 100_000) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.remember_sent = remember_sent
        self._lock = threading.Lock()
        self.dropped = 0       # since start: refused because the queue was full
        self.delivered = 0
        self.rejected = 0      # the destination refused them for good (dead letters)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM queue").fetchone()
        except sqlite3.Error as e:
            raise QueueError(f"{path}: cannot open the export queue: {e}") from e
        self._depth, self._bytes = int(row[0]), int(row[1])

    # what the publisher does
    def put(self, items: Sequence[tuple[str, str, bytes]], *,
            reserve: bool = False) -> PutResult:
        """Put (id, kind, body) items, oldest first, in one transaction."""
        result = PutResult()
        limit = self.max_bytes + (self.reserve_bytes if reserve else 0)
        dropped: list[str] = []
        duplicates: list[str] = []
        with self._lock, self._tx():
            known = self._known([i for i, _, _ in items])
            now = time.time()
            for doc_id, kind, body in items:
                if doc_id in known:
                    duplicates.append(doc_id)
                    continue
                if self._bytes + len(body) > limit:
                    dropped.append(doc_id)
                    continue
                self._db.execute("INSERT INTO queue (id, kind, body, at) VALUES (?, ?, ?, ?)",
                                 (doc_id, kind, body, now))
                known.add(doc_id)
                self._bytes += len(body)
                self._depth += 1
                result.added += 1
        result.dropped = len(dropped)
        result.dropped_ids = tuple(dropped)
        result.duplicates = len(duplicates)
        result.duplicate_ids = tuple(duplicates)
        self.dropped += len(dropped)
        return result

    # what the sender does
    def peek(self, *, max_items: int, max_bytes: int) -> list[Item]:
        """The oldest waiting items, at least one (however large), at most ``max_items``
        and, beyond the first, ``max_bytes`` of bodies."""
        out: list[Item] = []
        total = 0
        with self._lock:
            rows = self._db.execute("SELECT pos, id, kind, body FROM queue ORDER BY pos "
                                    "LIMIT ?", (max_items,))
            for pos, doc_id, kind, body in rows:
                if out and total + len(body) > max_bytes:
                    break
                out.append(Item(int(pos), str(doc_id), str(kind), bytes(body)))
                total += len(body)
        return out

    def ack(self, items: Sequence[Item]) -> None:
        """The destination took these: delete them, remember their ids."""
        self._remove(items, delivered=True)

    def reject(self, items: Sequence[Item]) -> None:
        """The destination will never take these: delete them, count them."""
        self._remove(items, delivered=False)

    # what health() reports
    def depth(self) -> int:
        return self._depth

    def size(self) -> int:
        return self._bytes

    def oldest_age(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT at FROM queue ORDER BY pos LIMIT 1").fetchone()
        return None if row is None else max(0.0, time.time() - float(row[0]))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # internals
    @contextmanager
    def _tx(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise QueueError(f"{self.path}: {e}") from e

    def _known(self, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for table in ("queue", "sent"):
                rows = self._db.execute(f"SELECT id FROM {table} WHERE id IN ({marks})",
                                        chunk)
                known.update(str(r[0]) for r in rows)
        return known

    def _remove(self, items: Sequence[Item], *, delivered: bool) -> None:
        if not items:
            return
        with self._lock, self._tx():
            for start in range(0, len(items), _CHUNK):
                chunk = items[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                positions = [i.pos for i in chunk]
                gone = self._db.execute(   # no RETURNING: SQLite before 3.35 (EL 8)
                    f"SELECT LENGTH(body) FROM queue WHERE pos IN ({marks})",
                    positions).fetchall()
                self._db.execute(f"DELETE FROM queue WHERE pos IN ({marks})", positions)
                self._depth -= len(gone)
                self._bytes -= sum(int(g[0]) for g in gone)
                if delivered and self.remember_sent:
                    self._db.executemany("INSERT OR IGNORE INTO sent (id) VALUES (?)",
                                         [(i.id,) for i in chunk])
            if delivered and self.remember_sent:
                self._db.execute("DELETE FROM sent WHERE n <= (SELECT MAX(n) FROM sent) - ?",
                                 (self.remember_sent,))
        if delivered:
            self.delivered += len(items)
        else:
            self.rejected += len(items)
