"""The collector's own state: enrollment tokens, agents, revocations, heartbeats.

One SQLite database in the data directory (WAL). Tokens are stored as SHA-256 hashes;
the token itself is shown once, at creation. Thread-safe: one connection, one lock.

Tokens and agents name their organization (collector/tenants.py) by name and id; rows
made before ids existed get the id derived from the name when the database is opened.
An id names one organization: a token for an id already used under another name, or a
name already used under another id, is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.tenants import Organization, derived_id
from common.errors import SisguardError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    uses_left INTEGER NOT NULL,
    organization TEXT NOT NULL,
    organization_id TEXT
);
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    organization TEXT NOT NULL,
    version TEXT NOT NULL,
    os TEXT NOT NULL DEFAULT '',
    serial TEXT NOT NULL,
    enrolled REAL NOT NULL,
    revoked REAL,
    address TEXT NOT NULL DEFAULT '',
    last_seen REAL,
    heartbeat TEXT,
    offline_since REAL,
    cert_expires REAL,
    organization_id TEXT
);
CREATE TABLE IF NOT EXISTS revoked_serials (
    serial TEXT PRIMARY KEY,
    revoked REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_ids (
    agent_id TEXT PRIMARY KEY,
    revoked REAL NOT NULL
);
"""


class TokenRefused(SisguardError):
    """An enrollment token is unknown, expired or used up."""


class OrganizationConflict(SisguardError):
    """An organization id already names another organization, or the reverse."""


@dataclass(frozen=True)
class TokenRecord:
    hash_prefix: str          # the first 12 hex digits of its SHA-256: enough to tell apart
    created: float
    expires: float
    uses_left: int
    organization: Organization


@dataclass(frozen=True)
class AgentRecord:
    agent_id: str
    hostname: str
    organization: str
    version: str
    os: str
    serial: str
    enrolled: float
    revoked: float | None
    address: str
    last_seen: float | None
    heartbeat: dict[str, Any] | None
    offline_since: float | None = None
    cert_expires: float | None = None
    organization_id: str = ""


AGENT_COLUMNS = ("agent_id, hostname, organization, version, os, serial, enrolled, revoked,"
                 " address, last_seen, heartbeat, offline_since, cert_expires, organization_id")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(agents)")}
        if "offline_since" not in columns:  # databases made by 0.1.0 before this column
            self._db.execute("ALTER TABLE agents ADD COLUMN offline_since REAL")
        if "cert_expires" not in columns:  # databases made before certificate renewal
            self._db.execute("ALTER TABLE agents ADD COLUMN cert_expires REAL")
        self._migrate_organizations()
        self._lock = threading.Lock()

    def _migrate_organizations(self) -> None:
        """Databases made before organization ids: add the column, derive the ids."""
        for table in ("tokens", "agents"):
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if "organization_id" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN organization_id TEXT")
            names = [r[0] for r in self._db.execute(
                f"SELECT DISTINCT organization FROM {table} WHERE organization_id IS NULL")]
            for name in names:
                self._db.execute(f"UPDATE {table} SET organization_id=? WHERE organization=?"
                                 " AND organization_id IS NULL", (derived_id(name), name))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction; ``durable=False`` for what a stream tells again (last seen,
        heartbeat, the certificate in use): committed without waiting for the disk
        (synchronous=NORMAL: a power cut may lose the last of them, never corrupts; the
        next durable commit syncs them too). A heartbeat cost an fsync, ~5 ms holding
        this lock: 1,000 agents reconnecting at once queued 3,000 of them."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    # organizations
    def organizations(self) -> list[Organization]:
        """Every organization a token or an agent names, by id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT organization_id, organization FROM tokens UNION"
                " SELECT organization_id, organization FROM agents"
                " ORDER BY 1, 2").fetchall()
        return [Organization(str(i), str(n)) for i, n in rows]

    @staticmethod
    def _check_organization(db: sqlite3.Connection, org: Organization) -> None:
        for table in ("tokens", "agents"):
            row = db.execute(f"SELECT organization, organization_id FROM {table}"
                             " WHERE (organization_id=? AND organization!=?)"
                             " OR (organization=? AND organization_id!=?) LIMIT 1",
                             (org.id, org.name, org.name, org.id)).fetchone()
            if row is not None:
                raise OrganizationConflict(
                    f"organization {org.name!r} with id {org.id!r}: {table} already name "
                    f"organization {row[0]!r} with id {row[1]!r} (an id names one "
                    f"organization, by one name)")

    # tokens
    def create_token(self, *, ttl: float, uses: int, organization: str,
                     organization_id: str | None = None) -> str:
        """A token for the organization (its id derived from the name when not given);
        raises TenancyError for an invalid name or id, OrganizationConflict."""
        org = Organization.of(organization, organization_id)
        token = "sgt_" + secrets.token_urlsafe(24)
        now = time.time()
        with self._tx() as db:
            self._check_organization(db, org)
            db.execute("INSERT INTO tokens (hash, created, expires, uses_left, organization,"
                       " organization_id) VALUES (?,?,?,?,?,?)",
                       (hash_token(token), now, now + ttl, uses, org.name, org.id))
        return token

    def tokens(self, *, organization_id: str | None = None) -> list[TokenRecord]:
        """Tokens, newest first; only one organization's when its id is given."""
        query = "SELECT hash, created, expires, uses_left, organization, organization_id" \
                " FROM tokens"
        params: tuple[str, ...] = ()
        if organization_id is not None:
            query += " WHERE organization_id=?"
            params = (organization_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created DESC", params).fetchall()
        return [TokenRecord(r[0][:12], r[1], r[2], r[3], Organization(r[5], r[4])) for r in rows]

    def redeem_token(self, token: str) -> Organization:
        """Use a token once; returns its organization or raises TokenRefused."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT expires, uses_left, organization, organization_id"
                             " FROM tokens WHERE hash=?", (hash_token(token),)).fetchone()
            if row is None:
                raise TokenRefused("unknown enrollment token")
            expires, uses_left, organization, organization_id = row
            if expires < now:
                raise TokenRefused("enrollment token expired")
            if uses_left <= 0:
                raise TokenRefused("enrollment token used up")
            db.execute("UPDATE tokens SET uses_left = uses_left - 1 WHERE hash=?",
                       (hash_token(token),))
            return Organization(str(organization_id), str(organization))

    # agents
    def add_agent(self, *, hostname: str, organization: str, version: str, os: str,
                  serial: str, organization_id: str | None = None) -> str:
        agent_id = str(uuid.uuid4())
        with self._tx() as db:
            db.execute(
                "INSERT INTO agents (agent_id, hostname, organization, version, os, serial,"
                " enrolled, organization_id) VALUES (?,?,?,?,?,?,?,?)",
                (agent_id, hostname, organization, version, os, serial, time.time(),
                 organization_id or derived_id(organization)),
            )
        return agent_id

    def import_agent(self, *, agent_id: str, hostname: str, organization: str,
                     serial: str, organization_id: str | None = None) -> None:
        """An agent enrolled by another collector of the same CA, first seen here."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO agents (agent_id, hostname, organization, version,"
                " os, serial, enrolled, organization_id) VALUES (?,?,?,?,?,?,?,?)",
                (agent_id, hostname, organization, "", "", serial, time.time(),
                 organization_id or derived_id(organization)),
            )

    def set_serial(self, agent_id: str, serial: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE agents SET serial=? WHERE agent_id=?", (serial, agent_id))

    def agent(self, agent_id: str) -> AgentRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id=?",
                                   (agent_id,)).fetchone()
        return _record(row) if row else None

    def agents(self, *, organization_id: str | None = None) -> list[AgentRecord]:
        """Agents by host name; only one organization's when its id is given."""
        query = f"SELECT {AGENT_COLUMNS} FROM agents"
        params: tuple[str, ...] = ()
        if organization_id is not None:
            query += " WHERE organization_id=?"
            params = (organization_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY hostname", params).fetchall()
        return [_record(r) for r in rows]

    # revocations: they only ever grow (there is no un-revoke: enroll again instead)
    def revoke(self, agent_id: str) -> bool:
        """Revoke an agent id, known here or not; returns whether it was enrolled here.
        Every certificate naming that id is refused, its known serial listed too."""
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO revoked_ids VALUES (?,?)", (agent_id, now))
            row = db.execute("SELECT serial FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE agents SET revoked=? WHERE agent_id=? AND revoked IS NULL",
                       (now, agent_id))
            if row[0]:
                db.execute("INSERT OR IGNORE INTO revoked_serials VALUES (?,?)", (row[0], now))
        return True

    def revoke_serial(self, serial: str) -> None:
        """Revoke one certificate by its serial (lowercase hex), seen here or not."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO revoked_serials VALUES (?,?)", (serial, time.time()))

    def add_revocations(self, *, serials: Iterable[str], agent_ids: Iterable[str]) -> int:
        """Merge revocations read from a signed list; returns how many were new here."""
        now = time.time()
        with self._tx() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO revoked_serials VALUES (?,?)",
                           [(s, now) for s in serials])
            ids = list(agent_ids)
            db.executemany("INSERT OR IGNORE INTO revoked_ids VALUES (?,?)",
                           [(a, now) for a in ids])
            added = db.total_changes - before
            db.executemany("UPDATE agents SET revoked=? WHERE agent_id=? AND revoked IS NULL",
                           [(now, a) for a in ids])
        return added

    def revocation_version(self) -> tuple[int, int]:
        """Changes whenever a revocation is added (the tables only grow)."""
        with self._lock:
            row = self._db.execute("SELECT (SELECT count(*) FROM revoked_serials),"
                                   " (SELECT count(*) FROM revoked_ids)").fetchone()
        return int(row[0]), int(row[1])

    def revocations(self) -> tuple[list[str], list[str]]:
        """(revoked serials as hex, revoked agent ids)."""
        with self._lock:
            serials = [r[0] for r in self._db.execute("SELECT serial FROM revoked_serials")]
            ids = [r[0] for r in self._db.execute("SELECT agent_id FROM revoked_ids")]
        return serials, ids

    def is_revoked(self, serial: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM revoked_serials WHERE serial=?",
                                   (serial,)).fetchone()
        return row is not None

    def set_certificate(self, agent_id: str, *, serial: str, expires: float) -> None:
        """The agent's latest certificate (seen on its stream, or just renewed): an older
        one still in use (before it expires) does not replace it."""
        with self._tx(durable=False) as db:
            db.execute("UPDATE agents SET serial=?, cert_expires=? WHERE agent_id=?"
                       " AND (cert_expires IS NULL OR cert_expires <= ?)",
                       (serial, expires, agent_id, expires))

    def set_offline(self, agent_id: str, since: float | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE agents SET offline_since=? WHERE agent_id=?", (since, agent_id))

    def seen(self, agent_id: str, *, address: str, version: str | None = None,
             heartbeat: dict[str, Any] | None = None) -> None:
        with self._tx(durable=False) as db:
            db.execute("UPDATE agents SET last_seen=?, address=?, offline_since=NULL"
                       " WHERE agent_id=?", (time.time(), address, agent_id))
            if version:
                db.execute("UPDATE agents SET version=? WHERE agent_id=?", (version, agent_id))
            if heartbeat is not None:
                db.execute("UPDATE agents SET heartbeat=? WHERE agent_id=?",
                           (json.dumps(heartbeat), agent_id))


def _record(row: tuple[Any, ...]) -> AgentRecord:
    return AgentRecord(
        agent_id=row[0], hostname=row[1], organization=row[2], version=row[3], os=row[4],
        serial=row[5], enrolled=row[6], revoked=row[7], address=row[8], last_seen=row[9],
        heartbeat=json.loads(row[10]) if row[10] else None,
        offline_since=row[11], cert_expires=row[12],
        organization_id=row[13] or derived_id(row[2]),
    )
