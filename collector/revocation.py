"""Revocations reach every collector of the CA, and end the streams they refuse.

Each collector keeps what it knows in its store (it only grows) and publishes it as a
CA-signed CRL (``collector.crl``) to every configured place: a file (``pki.crl_path``,
which may be a shared mount) and, when Elasticsearch is configured, one document in
``<prefix>-pki``. A ``RevocationWatcher`` polls those places: a list that verifies is
merged into the store; one that does not (another CA, unsigned, tampered) is ignored and
logged once per distinct content. When the store holds something a place lacks (a
revoke here, two collectors that revoked at once), the watcher republishes the union,
so concurrent writers converge. The in-memory set it keeps is what ingest checks on
every stream start and every message; on a change it cancels the open streams it now
refuses.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509

from collector.config import CollectorConfig
from collector.crl import (
    MAX_CRL_BYTES,
    CrlRefused,
    Revocations,
    SignedList,
    read_crl,
    sign_crl,
)
from collector.pki import CertificateAuthority, fingerprint
from collector.store import Store
from common.logs import get_logger

log = get_logger("sisguard.collector.revocation")

REPUBLISH_BEFORE = 2 * 24 * 3600.0   # seconds before the list's next_update


class CrlPlace(Protocol):
    name: str

    def read(self) -> bytes | None: ...      # None: nothing published there yet
    def write(self, data: bytes) -> None: ...


class PlaceUnavailable(Exception):
    """The place cannot be read or written now (retried at the next poll)."""


@dataclass
class CrlFile:
    path: Path
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"file {self.path}"

    def read(self) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PlaceUnavailable(f"{self.path}: {e.strerror}") from e
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise PlaceUnavailable(f"{self.path}: not a regular file")
            return f.read(MAX_CRL_BYTES + 1)

    def write(self, data: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise PlaceUnavailable(f"{self.path}: {e.strerror}") from e


@dataclass
class CrlIndex:
    """One document per CA (its id names the CA's fingerprint) in ``<prefix>-pki``."""

    client: Any          # elasticsearch.Elasticsearch
    prefix: str
    ca_fingerprint: str
    name: str = ""

    def __post_init__(self) -> None:
        self.index = f"{self.prefix}-pki"
        self.doc_id = "crl-" + self.ca_fingerprint.removeprefix("sha256:")[:32]
        self.name = self.name or f"Elasticsearch index {self.index}"
        self._index_ready = False

    def read(self) -> bytes | None:
        from elasticsearch import ApiError, NotFoundError, TransportError

        try:
            doc = self.client.get(index=self.index, id=self.doc_id)
        except NotFoundError:
            return None
        except (ApiError, TransportError) as e:
            raise PlaceUnavailable(f"{self.index}: {e}") from e
        source = doc.get("_source") or {}
        value = source.get("crl_der") if isinstance(source, dict) else None
        if not isinstance(value, str) or len(value) > MAX_CRL_BYTES * 4 // 3 + 4:
            return b""    # refused by read_crl as "not a CRL"
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return b""

    def write(self, data: bytes) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509 import load_pem_x509_crl
        from elasticsearch import ApiError, TransportError

        der = load_pem_x509_crl(data).public_bytes(Encoding.DER)
        try:
            if not self._index_ready:
                if not self.client.indices.exists(index=self.index):
                    self.client.indices.create(index=self.index, settings={
                        "number_of_shards": 1, "auto_expand_replicas": "0-1"},
                        mappings={"dynamic": "strict", "properties": {
                            "crl_der": {"type": "binary"},
                            "ca_fingerprint": {"type": "keyword"},
                            "updated": {"type": "date", "format": "epoch_second"}}})
                self._index_ready = True
            self.client.index(index=self.index, id=self.doc_id, refresh="wait_for", document={
                "crl_der": base64.b64encode(der).decode("ascii"),
                "ca_fingerprint": self.ca_fingerprint, "updated": int(time.time())})
        except (ApiError, TransportError) as e:
            if "resource_already_exists" in str(e):
                self._index_ready = True
            raise PlaceUnavailable(f"{self.index}: {e}") from e


@dataclass
class _Stream:
    serial: int
    agent_id: str
    context: grpc.ServicerContext


class ActiveStreams:
    """The open event streams, so that a revocation can end them at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next = 0

    def add(self, serial: int, agent_id: str, context: grpc.ServicerContext) -> int:
        with self._lock:
            self._next += 1
            self._streams[self._next] = _Stream(serial, agent_id, context)
            return self._next

    def remove(self, handle: int) -> None:
        with self._lock:
            self._streams.pop(handle, None)

    def cancel_refused(self, revocations: Revocations) -> int:
        with self._lock:
            refused = [s for s in self._streams.values()
                       if revocations.refuses(serial=s.serial, agent_id=s.agent_id)]
        for stream in refused:
            log.warning("revoked agent's stream cancelled", agent_id=stream.agent_id,
                        serial=format(stream.serial, "x"))
            stream.context.cancel()  # type: ignore[no-untyped-call]
        return len(refused)


@dataclass
class _PlaceState:
    digest: str = ""                  # of the last content read
    verified: SignedList | None = None
    refused_logged: str = ""
    errors: dict[str, str] = field(default_factory=dict)   # last logged, by action

    def failed(self, place: str, action: str, error: str) -> None:
        if error != self.errors.get(action):
            self.errors[action] = error
            log.warning(f"revocation list not {action}; retried at every poll",
                        place=place, error=error)


@dataclass
class RevocationWatcher:
    """Keeps ``current`` (what ingest checks) in step with the store and every place."""

    ca: CertificateAuthority
    store: Store
    places: list[CrlPlace]
    interval: float = 2.0
    on_change: Callable[[Revocations], object] | None = None
    current: Revocations = field(default_factory=Revocations)

    def __post_init__(self) -> None:
        self._state: dict[str, _PlaceState] = {p.name: _PlaceState() for p in self.places}
        self._version: tuple[int, int] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.refused_lists = 0

    def refuses(self, cert: x509.Certificate, agent_id: str) -> bool:
        return self.current.refuses(serial=cert.serial_number, agent_id=agent_id)

    def start(self) -> None:
        try:
            self.refresh()
        except Exception:  # serve anyway: the store's revocations are in force already
            log.exception("revocation refresh failed at start")
            serials, ids = self.store.revocations()
            self.current = Revocations(frozenset(int(s, 16) for s in serials), frozenset(ids))
        self._thread = threading.Thread(target=self._loop, name="revocations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # never let the watcher die: it is what makes revoke work
                log.exception("revocation refresh failed")

    def refresh(self) -> Revocations:
        """One round: read every place, merge, republish where behind. Thread-safe."""
        with self._lock:
            for place in self.places:
                self._read(place)
            if self.store.revocation_version() != self._version or not self.current:
                self._version = self.store.revocation_version()
                serials, ids = self.store.revocations()
                known = Revocations(frozenset(int(s, 16) for s in serials), frozenset(ids))
                if known != self.current:
                    added = len(known) - len(self.current)
                    self.current = known
                    log.info("revocations loaded", serials=len(known.serials),
                             agent_ids=len(known.agent_ids), added=added)
                    if self.on_change is not None:
                        self.on_change(known)
            self._publish_where_behind()
            return self.current

    def _read(self, place: CrlPlace) -> None:
        state = self._state[place.name]
        try:
            data = place.read()
        except PlaceUnavailable as e:
            state.failed(place.name, "read", str(e))
            return
        state.errors.pop("read", None)
        if data is None:
            state.digest, state.verified = "", None
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest == state.digest:
            return
        state.digest = digest
        try:
            signed = read_crl(data, self.ca.cert, source=place.name)
        except Exception as e:  # CrlRefused, or a parser error nobody foresaw: one bad
            # list costs only itself, never the watcher or the other places
            state.verified = None
            self.refused_lists += 1
            if state.refused_logged != digest:
                state.refused_logged = digest
                error = str(e) if isinstance(e, CrlRefused) else f"{type(e).__name__}: {e}"
                log.error("revocation list refused: ignored", place=place.name, error=error)
            return
        state.verified = signed
        added = self.store.add_revocations(
            serials=[format(s, "x") for s in signed.revocations.serials],
            agent_ids=signed.revocations.agent_ids)
        if added:
            log.info("revocations merged from a signed list", place=place.name, added=added,
                     crl_number=signed.number)

    def _publish_where_behind(self) -> None:
        known = self.current
        now = time.time()
        behind = []
        for place in self.places:
            verified = self._state[place.name].verified
            if verified is None and not known and self._state[place.name].digest == "":
                continue          # nothing revoked, nothing published: nothing to say
            if (verified is None or not verified.revocations.covers(known)
                    or (verified.next_update is not None
                        and verified.next_update.timestamp() - now < REPUBLISH_BEFORE)):
                behind.append(place)
        if not behind:
            return
        numbers = [s.verified.number for s in self._state.values() if s.verified]
        number = max(numbers, default=0) + 1
        data = sign_crl(self.ca, known, number=number)
        for place in behind:
            try:
                place.write(data)
            except PlaceUnavailable as e:
                self._state[place.name].failed(place.name, "published", str(e))
                continue
            state = self._state[place.name]
            state.errors.pop("published", None)
            state.digest = hashlib.sha256(data).hexdigest()
            state.verified = read_crl(data, self.ca.cert, source=place.name)
            log.info("revocation list published", place=place.name, crl_number=number,
                     serials=len(known.serials), agent_ids=len(known.agent_ids))


def places_for(*, ca: CertificateAuthority, crl_path: Path, es_client: Any | None,
               index_prefix: str) -> list[CrlPlace]:
    places: list[CrlPlace] = [CrlFile(crl_path)]
    if es_client is not None:
        places.append(CrlIndex(es_client, index_prefix, fingerprint(ca.cert)))
    return places


def watcher_for(config: CollectorConfig, *, ca: CertificateAuthority, store: Store,
                pki_dir: Path) -> RevocationWatcher:
    """The watcher over every place this collector's configuration names."""
    client = None
    if config.elasticsearch.url:
        from collector.outputs.elasticsearch import connect_client

        client = connect_client(config.elasticsearch).options(request_timeout=5)
    places = places_for(ca=ca, crl_path=config.pki.crl_path or pki_dir / "crl.pem",
                        es_client=client, index_prefix=config.elasticsearch.index_prefix)
    return RevocationWatcher(ca, store, places, interval=config.pki.revocation_poll)
