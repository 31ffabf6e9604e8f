"""The shipper: one bidirectional stream to a collector, several batches in flight.

It reads the spool in sequence order and sends batches while fewer than ``window`` are
unacked. An ack deletes its batch from the spool. When the stream breaks, it reconnects
with exponential backoff (full jitter, capped), failing over to the next configured collector,
and resends everything still in the spool: the collector makes resends harmless.
"""

from __future__ import annotations

import importlib
import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from agent import __version__
from agent.identity import Credentials
from agent.renewal import Renewal, RenewalError
from agent.serialize import DocumentError, encode_document, error_document
from agent.spool import Spool, SpooledEvent
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc

log = get_logger("sisguard.agent.shipper")

# grpc's blocking calls re-check their condition every 0.1 s, so that Ctrl-C reaches a
# main thread blocked in one. Ours block in worker threads and are woken by a notify
# when a message arrives or the call ends, so once a second is plenty: an idle agent
# wakes 9 times a second less (a wakeup costs 20-190 us of CPU on the machines we
# measured). Guarded: a grpc without the setting keeps its own.
_grpc_common = importlib.import_module("grpc._common")
if isinstance(getattr(_grpc_common, "MAXIMUM_WAIT_TIMEOUT", None), float):
    setattr(_grpc_common, "MAXIMUM_WAIT_TIMEOUT", 1.0)  # noqa: B010 - untyped, private


@dataclass(frozen=True)
class ShipperSettings:
    batch_events: int = 500
    batch_bytes: int = 2 * 1024 * 1024
    window: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    heartbeat_interval: float = 30.0
    linger: float = 0.1   # wait this long for a small batch to fill (fewer, larger batches)


@dataclass
class ShipperStats:
    connected_to: str = ""
    connects: int = 0
    batches_sent: int = 0
    events_acked: int = 0
    events_rejected: int = 0
    events_truncated: int = 0  # too large for the collector: long fields cut
    events_replaced: int = 0   # ... and still too large: sent as a sensor_error
    last_error: str = ""
    last_ack_unix: float = 0.0   # time.time() of the last ack (0: none yet)


def reconnect_delay(attempt: int, *, initial: float, cap: float,
                    rng: random.Random | None = None) -> float:
    """Seconds before the next connection attempt: "full jitter", uniform in
    [0, min(cap, initial * 2**attempt)]. When a collector restarts, all its agents lose
    their stream at once; a delay that only varied by +-20 % would bring them back
    together, each window of the backoff spreads them over its whole length."""
    window = min(cap, initial * 2.0 ** min(attempt, 64))
    return (rng or _jitter).uniform(0.0, max(0.0, window))


_jitter = random.Random()


class Shipper(threading.Thread):
    def __init__(self, *, spool: Spool, collectors: list[str], credentials: Credentials,
                 hostname: str, settings: ShipperSettings,
                 heartbeat: Callable[[], pb.Heartbeat],
                 renewal: Renewal | None = None) -> None:
        super().__init__(name="shipper", daemon=True)
        self.spool = spool
        self.collectors = collectors
        self.credentials = credentials
        self.hostname = hostname
        self.settings = settings
        self.heartbeat = heartbeat
        self.stats = ShipperStats()
        self._stopping = threading.Event()
        self._call: grpc.Future | None = None  # type: ignore[type-arg]
        self._inflight: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._welcomed = False
        self._cond = spool.changed
        self.renewal = renewal
        self._reconnect = False   # renewed: end the session once nothing is in flight

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        """Stick to one collector while it is up; when a connection attempt fails, fail
        over to the next one. Backoff grows while nothing answers, and starts again
        after a session that was welcomed."""
        attempt = 0   # connection attempts that failed in a row
        index = 0
        while not self._stopping.is_set():
            address = self.collectors[index % len(self.collectors)]
            self._welcomed = False
            try:
                self._session(address)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                detail = e.details() if hasattr(e, "details") else str(e)
                if self._stopping.is_set():
                    break
                self.stats.last_error = f"{code}: {detail}"
                log.warning("stream to collector failed", collector=address,
                            code=str(code), error=detail, attempt=attempt)
                if self.renewal is not None:
                    self.renewal.report_if_expired()
            except Exception as e:  # never let the shipper thread die
                self.stats.last_error = f"{type(e).__name__}: {e}"
                log.exception("shipper error", collector=address)
            self.stats.connected_to = ""
            if self._welcomed:
                attempt = 0  # it was up: try it again first
            else:
                index += 1  # it did not answer: fail over to the next collector
            if self._stopping.wait(reconnect_delay(attempt, initial=self.settings.backoff_initial,
                                                   cap=self.settings.backoff_max)):
                break
            if not self._welcomed:
                attempt += 1

    def _channel(self, address: str) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.credentials.ca_pem,
            private_key=self.credentials.key_pem,
            certificate_chain=self.credentials.cert_pem,
        )
        # keepalive finds a dead link in 30 s (then the shipper fails over); no
        # transparent retries: the shipper resends from the spool itself, so grpc's retry
        # buffer (a copy of each message sent, up to 256 KiB a call) is only a cost. The
        # channel is never idle (one stream, always open): client_idle_timeout_ms does not
        # apply.
        return grpc.secure_channel(address, creds, options=[
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 0),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ])

    def _session(self, address: str) -> None:
        self._inflight.clear()
        self._reconnect = False
        limits = {"events": self.settings.batch_events, "bytes": self.settings.batch_bytes,
                  "window": self.settings.window}
        welcomed = threading.Event()
        session_over = threading.Event()
        with self._channel(address) as channel:
            stub = pb_grpc.IngestStub(channel)
            requests = self._requests(limits, welcomed, session_over)
            call = stub.Stream(requests)
            self._call = call
            try:
                for message in call:
                    kind = message.WhichOneof("kind")
                    if kind == "welcome":
                        w = message.welcome
                        limits["events"] = min(limits["events"], w.max_batch_events or 10**9)
                        # leave room for the envelope framing
                        limits["bytes"] = min(limits["bytes"],
                                              int((w.max_message_bytes or 2**31) * 0.9))
                        limits["window"] = min(limits["window"], w.window or 10**9)
                        self.stats.connected_to = address
                        self.stats.connects += 1
                        log.info("connected to collector", collector=address,
                                 agent_id=w.agent_id, window=limits["window"],
                                 batch_events=limits["events"])
                        welcomed.set()
                        self._welcomed = True
                    elif kind == "ack":
                        self._on_ack(message.ack)
                    elif kind == "renewed" and self.renewal is not None:
                        self._on_renewed(message.renewed)
            finally:
                if self.renewal is not None:
                    self.renewal.abandon()
                session_over.set()
                with self._cond:
                    self._cond.notify_all()
                self._call = None

    def _on_ack(self, ack: pb.Ack) -> None:
        span = self._inflight.pop(ack.batch_id, None)
        if span is None:
            return
        self.spool.ack(*span)
        self.stats.last_ack_unix = time.time()
        self.stats.events_acked += ack.accepted + ack.duplicates
        if ack.rejected:
            self.stats.events_rejected += len(ack.rejected)
            for r in ack.rejected[:5]:
                log.warning("collector rejected an event", seq=r.seq, reason=r.reason)
        with self._cond:
            self._cond.notify_all()

    def _on_renewed(self, reply: pb.RenewResponse) -> None:
        assert self.renewal is not None
        try:
            self.credentials = self.renewal.complete(reply)
        except RenewalError:
            return   # logged; the current certificate stays, tried again later
        self._reconnect = True
        with self._cond:
            self._cond.notify_all()

    def _envelope(self, event: SpooledEvent, max_bytes: int) -> pb.Envelope:
        """The event as sent. One the collector would refuse for its size (its limit
        may be below the spool's) goes with its long fields cut, or else as a
        sensor_error under the same sequence number: a batch re-sent forever on its
        account would stop everything behind it."""
        document, dataset = event.document, event.dataset
        if len(document) > max_bytes:
            try:
                original: Any = json.loads(document)
            except ValueError:
                original = {"event": {"dataset": dataset}}
            try:
                document = encode_document(original, max_bytes=max_bytes)   # cut to fit
                self.stats.events_truncated += 1
            except DocumentError as e:
                replacement = error_document(original, stage="shipper", field=e.field,
                                             reason=f"{e.reason} (the collector's limit)")
                replacement["event"]["id"] = f"{self.spool.agent_id}-{event.seq}"
                replacement["event"]["sequence"] = event.seq
                document, dataset = encode_document(replacement), "sisguard.agent"
                self.stats.events_replaced += 1
            log.warning("document too large for the collector; cut or replaced",
                        seq=event.seq, bytes=len(event.document), limit=max_bytes,
                        sent_bytes=len(document))
        return pb.Envelope(seq=event.seq, time_unix_nano=event.time_ns, dataset=dataset,
                           document=document)

    def _requests(self, limits: dict[str, int], welcomed: threading.Event,
                  session_over: threading.Event) -> Iterator[pb.AgentMessage]:
        yield pb.AgentMessage(hello=pb.Hello(agent_version=__version__, hostname=self.hostname))
        while not welcomed.wait(0.1):
            if session_over.is_set() or self._stopping.is_set():
                return
        yield pb.AgentMessage(heartbeat=self.heartbeat())
        next_heartbeat = time.monotonic() + self.settings.heartbeat_interval
        last_sent = 0
        batch_id = 0
        asked_renewal = False
        while not session_over.is_set() and not self._stopping.is_set():
            if self._reconnect and not self._inflight:
                return   # everything acked: end the stream, reconnect with the new cert
            if self.renewal is not None and not asked_renewal and self.renewal.due():
                asked_renewal = True
                yield self.renewal.request()
            if time.monotonic() >= next_heartbeat:
                yield pb.AgentMessage(heartbeat=self.heartbeat())
                next_heartbeat = time.monotonic() + self.settings.heartbeat_interval
            batch = None
            if len(self._inflight) < limits["window"] and not self._reconnect:
                events = self.spool.read_after(last_sent, limit=limits["events"],
                                               max_bytes=limits["bytes"])
                if 0 < len(events) < limits["events"] and self.settings.linger > 0:
                    self._stopping.wait(self.settings.linger)
                    events = self.spool.read_after(last_sent, limit=limits["events"],
                                                   max_bytes=limits["bytes"])
                if events:
                    batch_id += 1
                    batch = pb.EventBatch(batch_id=batch_id, events=[
                        self._envelope(e, limits["bytes"]) for e in events])
                    self._inflight[batch_id] = (events[0].seq, events[-1].seq)
                    last_sent = events[-1].seq
            if batch is not None:
                self.stats.batches_sent += 1
                yield pb.AgentMessage(batch=batch)
                continue
            # new events, an ack and stop all notify: sleep until then or the heartbeat
            with self._cond:
                self._cond.wait(timeout=min(5.0, max(0.0, next_heartbeat - time.monotonic())))
