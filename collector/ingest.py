"""The Ingest service: one bidirectional stream per agent.

The agent id comes from the verified client certificate (TLS has checked it against our
CA); a revoked or unknown certificate is refused at the start of the stream. Each batch
goes through the sequence checks (``collector/sequence.py``), the pipeline's stages
(``collector/pipeline.py``) and the publisher (``collector/publisher.py``), which keeps
the dead letters and has every output store the records, retrying while one is
unavailable; only then is the batch acked, so the agent keeps its events until then.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
from cryptography import x509

from collector.admission import StreamGate
from collector.pipeline import AgentIdentity, Pipeline
from collector.pki import agent_facts, agent_id_of
from collector.publisher import Publisher
from collector.records import Kind, Record
from collector.renewal import AgentRenewer
from collector.revocation import ActiveStreams, RevocationWatcher
from collector.sequence import SequenceMarks, SequencePolicy
from collector.store import Store
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc

log = get_logger("sisguard.collector.ingest")
# Batches worked on at once, all streams together: a stream's thread waits (not runnable)
# for a place, so a thousand streams do not take turns with the interpreter lock
# (bench/fleet: 1,000 agents at once gave a third of 300 agents' rate).
BUSY_BATCHES = max(8, 4 * (os.cpu_count() or 1))


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch_events: int = 1000
    window: int = 4
    max_seq_gap: int = SequencePolicy.max_gap      # see collector/sequence.py
    max_seq_rate: float = SequencePolicy.max_rate

    def sequence_policy(self) -> SequencePolicy:
        return SequencePolicy(max_gap=self.max_seq_gap, max_rate=self.max_seq_rate,
                              resend=self.window * self.max_batch_events)


def peer_certificate(context: grpc.ServicerContext) -> x509.Certificate | None:
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems:
        return None
    pem: Any = pems[0]
    return x509.load_pem_x509_certificate(bytes(pem))


class IngestService(pb_grpc.IngestServicer):
    def __init__(self, *, store: Store, pipeline: Pipeline, publisher: Publisher,
                 limits: Limits, stopping: threading.Event, admission: StreamGate,
                 revocations: RevocationWatcher | None = None,
                 renewer: AgentRenewer | None = None,
                 sequence: SequenceMarks | None = None) -> None:
        self.store = store
        self.admission = admission   # streams per agent, one token bucket per agent
        self.revocations = revocations
        self.renewer = renewer
        self.streams = ActiveStreams()
        self.pipeline = pipeline
        self.publisher = publisher
        self.limits = limits
        self.stopping = stopping
        self.sequence = sequence or SequenceMarks(None, limits.sequence_policy())
        self._busy = threading.BoundedSemaphore(BUSY_BATCHES)
        self._agent_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.batches = 0
        self.events = 0
        self.rejected = 0

    def _identify(self, context: grpc.ServicerContext) -> AgentIdentity:
        cert = peer_certificate(context)
        if cert is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "a client certificate is required: enroll the agent first")
        assert cert is not None
        serial = format(cert.serial_number, "x")
        agent_id = agent_id_of(cert)
        if self._revoked(cert, agent_id):
            log.warning("revoked agent refused", agent_id=agent_id, serial=serial,
                        peer=context.peer())
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "this agent certificate is revoked")
        record = self.store.agent(agent_id)
        if record is None:
            # enrolled by another collector of this CA (scale-out): the certificate,
            # which our CA signed, says who it is
            hostname, organization, organization_id = agent_facts(cert)
            if not hostname:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"agent {agent_id} is not enrolled here")
            self.store.import_agent(agent_id=agent_id, hostname=hostname,
                                    organization=organization,
                                    organization_id=organization_id, serial=serial)
            log.info("agent known from its certificate", agent_id=agent_id,
                     hostname=hostname, organization=organization)
            record = self.store.agent(agent_id)
        if record is None or record.revoked:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"agent {agent_id} is not enrolled")
        assert record is not None
        self.store.set_certificate(agent_id, serial=serial,
                                   expires=cert.not_valid_after_utc.timestamp())
        return AgentIdentity(agent_id, record.hostname, record.organization, record.version,
                             record.organization_id)

    def _revoked(self, cert: x509.Certificate, agent_id: str) -> bool:
        if self.revocations is not None:
            return self.revocations.refuses(cert, agent_id)
        return self.store.is_revoked(format(cert.serial_number, "x"))

    def _agent_lock(self, agent_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._agent_locks.setdefault(agent_id, threading.Lock())

    def Stream(self, request_iterator: Iterator[pb.AgentMessage],
               context: grpc.ServicerContext) -> Iterator[pb.CollectorMessage]:
        agent = self._identify(context)
        cert = peer_certificate(context)
        assert cert is not None
        peer = context.peer()
        renewed = False
        release = self.admission.admit(agent.agent_id, context)   # aborts when over
        handle = None
        try:
            log.info("agent connected", agent_id=agent.agent_id, peer=peer)
            self.store.seen(agent.agent_id, address=peer)
            # a client that leaves here (GeneratorExit) still gives its place back
            yield pb.CollectorMessage(welcome=pb.Welcome(
                agent_id=agent.agent_id,
                max_batch_events=self.limits.max_batch_events,
                max_message_bytes=self.limits.max_message_bytes,
                window=self.limits.window,
            ))
            # a revocation cancels this stream at once (RevocationWatcher.on_change), and
            # every message is checked too
            handle = self.streams.add(cert.serial_number, agent.agent_id, context)
            for message in request_iterator:
                if self._revoked(cert, agent.agent_id):
                    log.warning("revoked agent's stream ended", agent_id=agent.agent_id,
                                peer=peer)
                    context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                  "this agent certificate is revoked")
                kind = message.WhichOneof("kind")
                if kind == "batch":
                    if len(message.batch.events) > self.limits.max_batch_events:
                        log.warning("batch over the limit", agent_id=agent.agent_id,
                                    events=len(message.batch.events),
                                    limit=self.limits.max_batch_events)
                        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      f"batch of {len(message.batch.events)} events is over the "
                                      f"limit of {self.limits.max_batch_events}")
                    if not self.admission.throttle(agent.agent_id, len(message.batch.events),
                                                   context.is_active):
                        return
                    while not self._busy.acquire(timeout=1.0):
                        if not context.is_active() or self.stopping.is_set():
                            return
                    try:
                        ack = self._handle_batch(agent, message.batch, context)
                    finally:
                        self._busy.release()
                    if ack is None:
                        return
                    yield pb.CollectorMessage(ack=ack)
                elif kind == "heartbeat":
                    self._heartbeat(agent, message.heartbeat, peer)
                elif kind == "hello":
                    agent = replace(
                        agent, version=message.hello.agent_version or agent.version)
                    self.store.seen(agent.agent_id, address=peer, version=agent.version)
                elif kind == "renew":
                    if renewed or self.renewer is None:
                        reply = pb.RenewResponse(error="one renewal per stream"
                                                 if renewed else "renewal is not served here")
                    else:
                        renewed = True
                        reply = self.renewer.renew(cert, message.renew, peer=peer)
                    yield pb.CollectorMessage(renewed=reply)
        finally:
            release()
            if handle is not None:
                self.streams.remove(handle)
            log.info("agent disconnected", agent_id=agent.agent_id, peer=peer)

    def _heartbeat(self, agent: AgentIdentity, hb: pb.Heartbeat, peer: str) -> None:
        data: dict[str, Any] = {
            "time_unix_nano": hb.time_unix_nano, "spool_events": hb.spool_events,
            "spool_bytes": hb.spool_bytes, "spool_dropped": hb.spool_dropped,
            "cpu_percent": hb.cpu_percent, "rss_bytes": hb.rss_bytes,
            "interval_seconds": hb.interval_seconds,
            "sensors": [{"name": s.name, "events": s.events, "errors": s.errors,
                         "mode": s.mode, "last_error": s.last_error,
                         "details": dict(s.details)} for s in hb.sensors],
        }
        self.store.seen(agent.agent_id, address=peer, heartbeat=data)

    def _handle_batch(self, agent: AgentIdentity, batch: pb.EventBatch,
                      context: grpc.ServicerContext) -> pb.Ack | None:
        with self._agent_lock(agent.agent_id):
            check = self.sequence.begin(agent.agent_id, floor=self._floor(agent.agent_id))
            outcome = self.pipeline.process_batch(agent, batch.events,
                                                  skip_detection=check.is_resend,
                                                  refuse=check.refusal)
            alert = self.sequence.anomaly_alert(agent, check)
            if alert is not None:
                outcome.records.append(Record(Kind.ALERT, alert["event"]["id"], alert))
            delivery = self.publisher.delivery(outcome.records, outcome.dead_letters)
            if not self.publisher.deliver(delivery, alive=context.is_active):
                return None   # the stream ended (or the collector stops) first: no ack
            duplicates = delivery.duplicates
            self.sequence.commit(check, alerted=alert is not None)
        first = batch.events[0].seq if batch.events else 0
        last = batch.events[-1].seq if batch.events else 0
        self.batches += 1
        self.events += len(batch.events)
        self.rejected += len(outcome.rejected)
        return pb.Ack(
            batch_id=batch.batch_id, first_seq=first, last_seq=last,
            accepted=len(batch.events) - len(outcome.rejected) - duplicates,
            duplicates=duplicates,
            rejected=[pb.Rejected(seq=s, reason=r) for s, r in outcome.rejected],
        )

    def _floor(self, agent_id: str) -> int:
        """The agent's highest stored number known to an output (collector/publisher.py)."""
        return self.publisher.floor(agent_id,
                                    has_mark=self.sequence.mark(agent_id) is not None)
