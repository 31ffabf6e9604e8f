"""Revocation that revokes, everywhere: open streams end, every collector of the CA refuses.

The rogue agent is a raw gRPC client on the committed stubs holding a real agent's key.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from collector.crl import Revocations, sign_crl
from collector.pki import CertificateAuthority
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import Agent, Collector, cli, wait_for
from tests.search import engine_urls, need_engine

AgentFactory = Callable[..., Agent]
CollectorFactory = Callable[..., Collector]
REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.CANCELLED)


def _creds(state: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=(state / "ca.crt").read_bytes(),
                                        private_key=(state / "agent.key").read_bytes(),
                                        certificate_chain=(state / "agent.crt").read_bytes())


def _doc(n: int) -> bytes:
    return json.dumps({"@timestamp": "2026-11-29T10:00:00.000000Z",
                       "event": {"kind": "event", "dataset": "sisguard.fim"},
                       "file": {"path": f"/var/www/html/{n}.html"}}).encode()


class RogueStream:
    """One open stream; ``send()`` pushes a batch, acks and the final status are kept."""

    def __init__(self, collector: Collector, state: Path) -> None:
        self.channel = grpc.secure_channel(collector.address, _creds(state))
        self.outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.acks: list[pb.Ack] = []
        self.renewed: list[pb.RenewResponse] = []
        self.welcomed = threading.Event()
        self.ended = threading.Event()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.seq = 0
        self.call = pb_grpc.IngestStub(self.channel).Stream(self._requests(), timeout=60)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[pb.AgentMessage]:
        yield pb.AgentMessage(hello=pb.Hello(agent_version="rogue"))
        while (message := self.outbox.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for message in self.call:
                kind = message.WhichOneof("kind")
                if kind == "welcome":
                    self.welcomed.set()
                elif kind == "ack":
                    self.acks.append(message.ack)
                elif kind == "renewed":
                    self.renewed.append(message.renewed)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.code, self.details = e.code(), str(e.details())
        finally:
            self.ended.set()

    def send(self) -> None:
        self.seq += 1
        self.outbox.put(pb.AgentMessage(batch=pb.EventBatch(batch_id=self.seq, events=[
            pb.Envelope(seq=self.seq, dataset="sisguard.fim", document=_doc(self.seq))])))

    def renew(self, csr_pem: bytes) -> None:
        self.outbox.put(pb.AgentMessage(renew=pb.RenewRequest(csr_pem=csr_pem)))

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()
        self.thread.join(timeout=10)
        self.channel.close()


def _connect_code(collector: Collector, state: Path) -> grpc.StatusCode:
    stream = RogueStream(collector, state)
    try:
        stream.send()
        wait_for(lambda: stream.acks or stream.ended.is_set(), timeout=15,
                 message="an ack or the end of the stream")
        return stream.code if stream.ended.is_set() and stream.code else grpc.StatusCode.OK
    finally:
        stream.close()


def _revoke(collector: Collector, *args: str) -> str:
    return cli("collector", "agents", "revoke", "--data-dir", str(collector.data_dir),
               *args).stderr


def _enrolled(collector: Collector, agent_factory: AgentFactory, name: str = "agent") -> Agent:
    agent = agent_factory(collector, name=name, start=False)
    agent.enroll()
    return agent


def test_revoke_ends_the_open_streams_within_seconds_and_refuses_reconnects(
        collector: Collector, agent_factory: AgentFactory) -> None:
    agent = _enrolled(collector, agent_factory)
    busy = RogueStream(collector, agent.state_dir)
    idle = RogueStream(collector, agent.state_dir)   # a second stream that sends nothing
    try:
        busy.send()
        wait_for(lambda: busy.acks, message="the first batch acked")
        assert idle.welcomed.wait(10)
        revoked_at = time.monotonic()
        _revoke(collector, agent.agent_id)
        # the rogue keeps sending; the collector loads the list (pki.revocation_poll, 2 s)
        # and ends both streams: the busy one on its next batch, the idle one at once
        def sent_until_ended() -> bool:
            busy.send()
            return busy.ended.is_set()

        wait_for(sent_until_ended, timeout=10, interval=0.2, message="the busy stream to end")
        wait_for(idle.ended.is_set, timeout=10, message="the idle stream to end")
        print(f"streams ended {time.monotonic() - revoked_at:.2f} s after the revoke began: "
              f"busy {busy.code}, idle {idle.code}")
        assert busy.code in REFUSED, (busy.code, busy.details)
        assert idle.code in REFUSED, (idle.code, idle.details)
        acked = len(busy.acks)
        assert busy.seq > acked      # batches were sent that were never acked
    finally:
        busy.close()
        idle.close()
    assert _connect_code(collector, agent.state_dir) == grpc.StatusCode.PERMISSION_DENIED
    assert collector.proc is not None
    assert "revoked agent" in collector.proc.since(0)


def _second(first: Collector, tmp_path: Path, *, config: str) -> Collector:
    second = Collector(tmp_path / "second")
    cli("collector", "init", "--data-dir", str(second.data_dir), "--listen", second.address,
        "--ca-from", str(first.data_dir / "pki"))
    second.fingerprint = first.fingerprint
    with open(second.data_dir / "collector.yml", "a") as f:
        f.write(config)
    return second


def _shared_crl(first: Collector, path: Path) -> str:
    config = f"pki:\n  crl_path: {path}\n  revocation_poll: 0.5s\n"
    with open(first.data_dir / "collector.yml", "a") as f:
        f.write(config)
    return config


def test_an_id_revoked_on_one_collector_never_seen_there_is_refused_by_another(
        collector_factory: CollectorFactory, agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    first = collector_factory(name="first", start=False)
    config = _shared_crl(first, tmp_path / "shared" / "crl.pem")
    second = _second(first, tmp_path, config=config)
    second.start()
    try:
        agent = _enrolled(second, agent_factory)   # enrolled by the second collector only
        stream = RogueStream(second, agent.state_dir)
        stream.send()
        wait_for(lambda: stream.acks, message="accepted by the second collector")
        out = _revoke(first, agent.agent_id)       # the first one has never seen it
        assert "never seen here" in out
        wait_for(stream.ended.is_set, timeout=10, message="the open stream to end")
        assert stream.code in REFUSED, (stream.code, stream.details)
        stream.close()
        assert _connect_code(second, agent.state_dir) == grpc.StatusCode.PERMISSION_DENIED
        listing = cli("collector", "agents", "list", "--data-dir", str(second.data_dir)).stdout
        assert "revoked" in listing
    finally:
        if second.proc:
            second.proc.kill()


def test_a_serial_revoked_elsewhere_is_refused(
        collector_factory: CollectorFactory, agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    from cryptography import x509

    first = collector_factory(name="first", start=False)
    _shared_crl(first, tmp_path / "shared" / "crl.pem")
    first.start()
    agent = _enrolled(first, agent_factory)
    other = _enrolled(first, agent_factory, name="other")
    cert = x509.load_pem_x509_certificate((agent.state_dir / "agent.crt").read_bytes())
    assert _connect_code(first, agent.state_dir) == grpc.StatusCode.OK
    _revoke(first, "--serial", format(cert.serial_number, "X"))
    wait_for(lambda: _connect_code(first, agent.state_dir) == grpc.StatusCode.PERMISSION_DENIED,
             timeout=10, message="the serial refused")
    assert _connect_code(first, other.state_dir) == grpc.StatusCode.OK   # only that one
    bad = cli("collector", "agents", "revoke", "--data-dir", str(first.data_dir),
              "not-an-id", check=False)
    assert bad.returncode != 0 and "not a UUID" in bad.stderr


def test_a_forged_list_is_ignored_and_logged(
        collector_factory: CollectorFactory, agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "crl.pem"
    first = collector_factory(name="first", start=False)
    _shared_crl(first, shared)
    first.start()
    assert first.proc is not None
    agent = _enrolled(first, agent_factory)
    # the attacker can write the shared file, but holds no key of our CA
    attacker = CertificateAuthority.create("sisguard collector CA")   # same name, other key
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_bytes(sign_crl(attacker, Revocations(agent_ids=frozenset({agent.agent_id})),
                                number=99))
    wait_for(lambda: "revocation list refused" in first.proc.since(0) if first.proc else None,
             timeout=10, message=f"the forged list logged\n{first.proc.tail()}")
    assert "signature does not verify" in first.proc.since(0)
    assert _connect_code(first, agent.state_dir) == grpc.StatusCode.OK
    # an unsigned file is refused too, and a real revoke still works over it
    shared.write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    _revoke(first, agent.agent_id)
    wait_for(lambda: _connect_code(first, agent.state_dir) == grpc.StatusCode.PERMISSION_DENIED,
             timeout=10, message="the real revoke")


def _forge_index_document(es_url: str, prefix: str, agent_id: str) -> None:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from elasticsearch import Elasticsearch

    forged = sign_crl(CertificateAuthority.create("sisguard collector CA"),
                      Revocations(agent_ids=frozenset({agent_id})), number=10**6)
    der = x509.load_pem_x509_crl(forged).public_bytes(Encoding.DER)
    with Elasticsearch(es_url) as client:
        hits = client.search(index=f"{prefix}-pki", query={"match_all": {}})["hits"]["hits"]
        assert len(hits) == 1, hits
        client.index(index=f"{prefix}-pki", id=hits[0]["_id"], refresh=True, document={
            **hits[0]["_source"], "crl_der": base64.b64encode(der).decode()})


@pytest.mark.service
@pytest.mark.parametrize("es_url", engine_urls())
def test_revocation_reaches_a_collector_through_elasticsearch(
        collector_factory: CollectorFactory, agent_factory: AgentFactory,
        tmp_path: Path, es_url: str) -> None:
    if not es_url:
        need_engine("SISGUARD_TEST_ES_URLS is not set")
    import uuid

    prefix = f"sgtest-{uuid.uuid4().hex[:8]}"
    es = (f"elasticsearch:\n  url: [{es_url}]\n  index_prefix: {prefix}\n"
          "archive:\n  enabled: true\npki:\n  revocation_poll: 0.5s\n")
    first = collector_factory(name="first", start=False)
    with open(first.data_dir / "collector.yml", "a") as f:
        f.write(es)       # each collector keeps its own CRL file: only the index is shared
    second = _second(first, tmp_path, config=es)
    second.start()
    try:
        agent = _enrolled(second, agent_factory)
        assert _connect_code(second, agent.state_dir) == grpc.StatusCode.OK
        out = _revoke(first, agent.agent_id)
        assert f"{prefix}-pki" in out
        wait_for(lambda: _connect_code(second, agent.state_dir)
                 == grpc.StatusCode.PERMISSION_DENIED, timeout=15,
                 message="refused through Elasticsearch")
        # whoever may write the index cannot revoke anyone: a forged list is ignored
        good = _enrolled(second, agent_factory, name="good")
        _forge_index_document(es_url, prefix, good.agent_id)
        assert second.proc is not None
        wait_for(lambda: "revocation list refused" in second.proc.since(0)
                 if second.proc else None, timeout=15, message="the forged document logged")
        assert _connect_code(second, good.state_dir) == grpc.StatusCode.OK
    finally:
        if second.proc:
            second.proc.kill()
        from elasticsearch import Elasticsearch

        with Elasticsearch(es_url) as client:
            client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True,
                                  expand_wildcards="all")
