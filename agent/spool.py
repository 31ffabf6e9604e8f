"""The agent's durable spool: every event is here before it is sent, until it is acked.

On-disk format (SQLite, WAL mode, ``STATE_DIR/spool.db``)::

    events(seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the per-agent sequence number
           time_ns INTEGER,                        -- when the sensor saw it
           dataset TEXT,
           document BLOB,                          -- the ECS document, UTF-8 JSON
           size INTEGER)                           -- len(document)
    meta(key TEXT PRIMARY KEY, value INTEGER)      -- 'dropped': events dropped in total

AUTOINCREMENT keeps sequence numbers strictly increasing across restarts and deletes
(SQLite's ``sqlite_sequence`` remembers the highest ever used). Rows are deleted only
when the collector acks them. The spool is bounded in bytes: when full, the oldest
events go and a ``spool_dropped`` event with the count takes their place: loss is
never silent. ``synchronous=FULL`` makes each committed append survive a power cut;
``NORMAL`` survives a crash of the agent but not of the host.

A document larger than ``max_document_bytes`` is stored with its long texts and lists
cut (named in ``sisguard.truncated``). One that cannot be stored at all (it does not
encode as UTF-8 JSON, or is still too large) costs only itself: a ``sensor_error`` event
naming the sensor, the reason and the offending field is stored under its sequence
number instead (``agent/serialize.py``), and the rest of the append goes on. ``dataset`` is always
valid text; it is read back as bytes and escaped, so that no row can stop a read.

A full file system (``SQLITE_FULL``) is overflow too: the spool frees its disk reserve
(``spool.db.reserve``, see ``agent/spool_reserve.py``), lowers its bound to 90 % of what
fitted, and drops its oldest events, counted, as above. Events it could not store even
then are counted (in the heartbeat's ``spool_dropped`` at once) and reported by the next
``spool_dropped`` event that fits. An ack whose delete finds no room even then is kept
in memory: those events are not sent again, and are deleted once there is room.

Startup recovery: SQLite replays its WAL; a database that cannot be opened is fatal
(the agent says which file and why) rather than silently replaced.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.ecs import Document, new_event
from agent.serialize import MAX_DOCUMENT_BYTES, DocumentError, encode_document, error_document
from agent.spool_reserve import DiskReserve, disk_full
from common.errors import SisguardError
from common.logs import get_logger
from common.text import escape_bytes, os_text

log = get_logger("sisguard.agent.spool")


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    document BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SpoolError(SisguardError):
    """The spool database cannot be used."""


@dataclass(frozen=True)
class SpooledEvent:
    seq: int
    time_ns: int
    dataset: str
    document: bytes


@dataclass(frozen=True)
class SpoolDepth:
    events: int
    bytes: int
    dropped: int
    last_seq: int


class Spool:
    def __init__(self, path: Path, *, agent_id: str, max_bytes: int = 512 * 1024 * 1024,
                 synchronous: str = "FULL", max_document_bytes: int = MAX_DOCUMENT_BYTES,
                 on_replaced: Callable[[Document], None] | None = None,
                 reserve_bytes: int = 1024 * 1024) -> None:
        self.path = path
        self.max_document_bytes = max_document_bytes
        self.on_replaced = on_replaced   # told of each sensor_error put in a document's place
        self.replaced = 0
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA cache_size=-512")   # KiB: appends and deletes at the ends
            self._db.executescript(SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(size),0), COUNT(*) FROM events").fetchone()
        except sqlite3.Error as e:
            raise SpoolError(f"{path}: cannot open the spool: {e}") from e
        self._bytes, self._count = int(row[0]), int(row[1])
        self._dropped = self._meta("dropped")
        self._unsaved = 0   # events that found no room even after dropping: reported later
        self._undeleted: list[tuple[int, int]] = []   # acked, not yet deleted (disk full)
        self._lock = threading.Lock()
        self.changed = threading.Condition()
        self._reserve = DiskReserve(path.with_name(path.name + ".reserve"), reserve_bytes)
        self._reserve.ensure()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def append(self, documents: Sequence[Document], *, now_ns: int | None = None) -> int:
        """Store documents in one transaction; each gets its seq and event.id. Returns
        the last seq given."""
        if not documents:
            return 0
        with self._lock:
            try:
                last = self._append(documents, now_ns)
            except sqlite3.OperationalError as e:
                if not disk_full(e):
                    raise
                last = self._append_on_full_disk(documents, now_ns)
        with self.changed:
            self.changed.notify_all()
        return last

    def _append(self, documents: Sequence[Document], now_ns: int | None) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._unsaved:
                documents = [*documents, self._unsaved_notice()]
            if not documents:
                self._db.execute("ROLLBACK")
                return 0
            rows, added = self._encode(documents, self._next_seq(), now_ns)
            self._db.executemany(
                "INSERT INTO events (seq, time_ns, dataset, document, size)"
                " VALUES (?,?,?,?,?)", rows)
            self._bytes += added
            self._count += len(rows)
            last = int(rows[-1][0])
            if self._bytes > self.max_bytes:
                last = self._make_room(now_ns)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:   # SQLite may have rolled back already (SQLITE_FULL)
                self._db.execute("ROLLBACK")
            self._reload_counts()
            raise
        self._unsaved = 0
        return last

    def _append_on_full_disk(self, documents: Sequence[Document], now_ns: int | None) -> int:
        """The file system is full. The disk reserve is kept for acks (a spool that cannot
        delete can never drain). Here: truncate the WAL, lower the bound to 90 % of what
        fitted, drop the oldest events to it, counted, and try once more; what still finds
        no room is counted, and reported by the next append that fits."""
        cap = max(1, int(self._bytes * 0.9))
        if cap < self.max_bytes:
            log.warning("spool file system full: spool bound lowered", path=str(self.path),
                        max_bytes=cap, configured=self.max_bytes)
            self.max_bytes = cap
        try:
            if self._count:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._make_room(now_ns)   # oldest first, counted, before anything new
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    self._reload_counts()
                    raise
            return self._append(documents, now_ns)
        except sqlite3.OperationalError as e:
            if not disk_full(e):
                raise
        self._unsaved += len(documents)
        log.error("spool file system full: events dropped", path=str(self.path),
                  events=len(documents), unreported=self._unsaved)
        return 0

    def _unsaved_notice(self) -> Document:
        """Inside the append's transaction: the count joins the persisted total."""
        self._dropped += self._unsaved
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self._dropped,))
        notice = new_event("sisguard.agent", category=["host"], type=["info"],
                           action="spool_dropped")
        notice["message"] = (f"spool file system full: dropped {self._unsaved} events "
                             "that found no room")
        notice["sisguard"] = {"spool": {"dropped": self._unsaved, "where": "disk",
                                        "dropped_total": self._dropped,
                                        "max_bytes": self.max_bytes}}
        return notice

    def _encode(self, documents: Sequence[Document], seq: int,
                now_ns: int | None) -> tuple[list[tuple[int, int, str, bytes, int]], int]:
        rows: list[tuple[int, int, str, bytes, int]] = []
        added = 0
        for doc in documents:
            blob, dataset = self._encode_one(doc, seq)
            rows.append((seq, now_ns or time.time_ns(), dataset, blob, len(blob)))
            added += len(blob)
            seq += 1
        return rows, added

    def _encode_one(self, doc: Any, seq: int) -> tuple[bytes, str]:
        """One document's row; a document that cannot be stored is replaced by a
        ``sensor_error`` with the same sequence number (it costs only itself)."""
        try:
            if not isinstance(doc, dict):
                raise DocumentError(f"a {type(doc).__name__}, not an object", "")
            event = doc.setdefault("event", {})
            if not isinstance(event, dict):
                raise DocumentError(f"a {type(event).__name__}, not an object", "event")
            event["id"] = f"{self.agent_id}-{seq}"
            event["sequence"] = seq
            blob = encode_document(doc, max_bytes=self.max_document_bytes)
            dataset = event.get("dataset", "")
            return blob, os_text(dataset) if isinstance(dataset, str) else ""
        except DocumentError as e:
            replacement = error_document(doc, reason=e.reason, field=e.field, stage="spool")
        self.replaced += 1
        if self.on_replaced is not None:
            self.on_replaced(replacement)
        replacement["event"]["id"] = f"{self.agent_id}-{seq}"
        replacement["event"]["sequence"] = seq
        return encode_document(replacement), "sisguard.agent"

    def _make_room(self, now_ns: int | None) -> int:
        """Drop the oldest events until the spool fits, then say so in an event."""
        dropped = 0
        while self._bytes > self.max_bytes * 0.9 and self._count > 0:
            rows = self._db.execute(
                "SELECT seq, size FROM events ORDER BY seq LIMIT 1000").fetchall()
            cut_seq, freed = 0, 0
            for seq, size in rows:
                cut_seq, freed = seq, freed + size
                dropped += 1
                if self._bytes - freed <= self.max_bytes * 0.9:
                    break
            n = self._db.execute("DELETE FROM events WHERE seq <= ?", (cut_seq,)).rowcount
            self._bytes -= freed
            self._count -= n
        self._dropped += dropped
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self._dropped,))
        notice = new_event("sisguard.agent", category=["host"], type=["info"],
                           action="spool_dropped")
        notice["message"] = f"spool full: dropped the {dropped} oldest events"
        notice["sisguard"] = {"spool": {"dropped": dropped, "dropped_total": self._dropped,
                                        "max_bytes": self.max_bytes}}
        rows, added = self._encode([notice], self._next_seq(), now_ns)
        self._db.executemany("INSERT INTO events (seq, time_ns, dataset, document, size)"
                             " VALUES (?,?,?,?,?)", rows)
        self._bytes += added
        self._count += 1
        return int(rows[0][0])

    def _reload_counts(self) -> None:
        row = self._db.execute("SELECT COALESCE(SUM(size),0), COUNT(*) FROM events").fetchone()
        self._bytes, self._count = int(row[0]), int(row[1])
        self._dropped = self._meta("dropped")

    def read_after(self, seq: int, *, limit: int, max_bytes: int) -> list[SpooledEvent]:
        """Events with a sequence number above ``seq``, oldest first, within the limits
        (at least one event is returned if any is there, whatever its size)."""
        with self._lock:
            for lo, hi in sorted(self._undeleted):   # acked but not deleted: start after
                if lo <= seq + 1 <= hi:
                    seq = hi
            cursor = self._db.execute(
                "SELECT seq, time_ns, CAST(dataset AS BLOB), document, size FROM events"
                " WHERE seq > ?"
                " ORDER BY seq LIMIT ?", (seq, limit))
            out: list[SpooledEvent] = []
            total = 0
            for s, t, d, doc, size in cursor:
                if any(lo <= s <= hi for lo, hi in self._undeleted):
                    continue   # acked: the collector has it
                if out and total + size > max_bytes:
                    break
                out.append(SpooledEvent(int(s), int(t), escape_bytes(bytes(d or b"")),
                                        bytes(doc)))
                total += size
            return out

    def ack(self, first: int, last: int) -> int:
        """Forget events first..last: the collector has them.

        Not fsynced: a delete lost in a power cut only means a resend, which the
        collector recognises as a duplicate. Appends stay as durable as configured.
        On a full disk a delete may fail even after the reserve is freed: the range is
        then kept in memory, skipped by ``read_after`` (the shipper goes on instead of
        resending it for ever) and deleted with the next ack that finds room.
        """
        with self._lock:
            if self._undeleted and self._undeleted[-1][1] + 1 == first:   # acks come in order
                self._undeleted[-1] = (self._undeleted[-1][0], last)
            else:
                self._undeleted.append((first, last))
            deleted = 0
            self._db.execute("PRAGMA synchronous=OFF")
            try:
                while self._undeleted:
                    lo, hi = self._undeleted[0]
                    try:
                        deleted += self._delete(lo, hi)
                    except sqlite3.OperationalError as e:
                        if not disk_full(e):
                            raise
                        if self._reserve.release():
                            continue   # room for the delete now
                        log.error("spool file system full: acked events kept until there "
                                  "is room to delete them", path=str(self.path),
                                  ranges=len(self._undeleted))
                        break
                    self._undeleted.pop(0)
            finally:
                self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            if deleted and not self._undeleted:
                self._reserve.ensure()   # after a full disk: take the reserve back
            if self._unsaved and deleted:   # room again: say what found none, now
                try:
                    self._append([], None)
                except sqlite3.OperationalError as e:
                    if not disk_full(e):
                        raise
        return deleted

    def _delete(self, first: int, last: int) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT COALESCE(SUM(size),0), COUNT(*) FROM events WHERE seq BETWEEN ? AND ?",
                (first, last)).fetchone()
            self._db.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (first, last))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._bytes -= int(row[0])
        self._count -= int(row[1])
        return int(row[1])

    def depth(self) -> SpoolDepth:
        with self._lock:
            # dropped: also those not yet reported by an event (no room for it yet): the
            # heartbeat carries them to the collector meanwhile
            return SpoolDepth(self._count, self._bytes, self._dropped + self._unsaved,
                              self._next_seq() - 1)


def read_depth(path: Path) -> dict[str, Any]:
    """For ``sisguard-agent status``: read the spool without taking part in it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size),0) FROM events").fetchone()
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        dropped = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
    finally:
        db.close()
    return {"events": count, "bytes": size, "last_seq": row[0] if row else 0,
            "dropped": dropped[0] if dropped else 0}
