"""The Enrollment service behind a real gRPC server (in this process, on loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from agent.enrollment import make_key_and_csr
from collector.admission import DeadlineWatch, EnrollGate
from collector.enroll import EnrollmentService
from collector.pki import CertificateAuthority
from collector.store import Store
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import wait_for

METHOD = "/sisguard.v1.Enrollment/Enroll"


@dataclass(frozen=True)
class CountingCA(CertificateAuthority):
    """The real CA, remembering every certificate it signs."""

    signed: list[str] = field(default_factory=list)

    def sign_agent(self, csr_pem: bytes, agent_id: str, *, hostname: str = "",
                   organization: str = "", organization_id: str = "") -> x509.Certificate:
        self.signed.append(agent_id)
        return super().sign_agent(csr_pem, agent_id, hostname=hostname,
                                  organization=organization, organization_id=organization_id)


@dataclass
class Served:
    service: EnrollmentService
    store: Store
    ca: CountingCA
    channel: grpc.Channel

    def enroll(self, token: str, csr: bytes) -> pb.EnrollResponse:
        stub = pb_grpc.EnrollmentStub(self.channel)
        reply: pb.EnrollResponse = stub.Enroll(
            pb.EnrollRequest(token=token, csr_pem=csr, hostname="web1"), timeout=10)
        return reply


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    base = CertificateAuthority.create()
    ca = CountingCA(base.cert, base.key)
    store = Store(tmp_path / "collector.db")
    watch = DeadlineWatch()
    watch.start()
    gate = EnrollGate(per_address_concurrent=2, per_minute=600, burst=50, log_window=60)
    service = EnrollmentService(store=store, ca=ca, gate=gate, watch=watch, deadline=0.5)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         handlers=[service.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(service, store, ca, channel)
    finally:
        channel.close()
        server.stop(0).wait()
        watch.stop()
        store.close()


def test_a_bad_token_signs_nothing(served: Served, tmp_path: Path) -> None:
    csr = make_key_and_csr(tmp_path / "k.pem")
    with pytest.raises(grpc.RpcError) as e:
        served.enroll("sgt_guessed", csr)
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert served.ca.signed == [] and served.service.signed == 0
    assert served.store.agents() == []


def test_a_bad_csr_signs_nothing_and_keeps_the_token(served: Served, tmp_path: Path) -> None:
    token = served.store.create_token(ttl=60, uses=1, organization="org")
    for bad in (b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                              b"-----END CERTIFICATE REQUEST-----\n", b"x" * 20_000):
        with pytest.raises(grpc.RpcError) as e:
            served.enroll(token, bad)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert served.ca.signed == []
    reply = served.enroll(token, make_key_and_csr(tmp_path / "k.pem"))   # still usable
    assert served.ca.signed == [reply.agent_id] and reply.organization == "org"


def _hanging_call(channel: grpc.Channel,
                  release: threading.Event) -> grpc.Future[pb.EnrollResponse]:
    def never() -> Iterator[bytes]:
        release.wait(30)
        return
        yield b""   # pragma: no cover

    call = channel.stream_unary(METHOD, request_serializer=lambda b: b,
                                response_deserializer=pb.EnrollResponse.FromString)
    return call.future(never())


def test_a_call_that_never_sends_its_request_is_cancelled_at_the_deadline(
        served: Served) -> None:
    release = threading.Event()
    try:
        future = _hanging_call(served.channel, release)
        with pytest.raises(grpc.RpcError) as e:
            future.result(timeout=10)   # the server's 0.5 s deadline, not this timeout
        assert e.value.code() is grpc.StatusCode.CANCELLED
        assert served.service.watch.cancelled == 1
    finally:
        release.set()


def test_calls_over_the_per_address_budget_are_refused_at_once(
        served: Served, tmp_path: Path) -> None:
    served.service.deadline = 60.0   # the held calls end when released, not by the deadline
    release = threading.Event()
    try:
        held = [_hanging_call(served.channel, release) for _ in range(2)]
        wait_for(lambda: served.service.gate.in_progress() == 2, timeout=5,
                 message="two calls admitted")
        third = _hanging_call(served.channel, release)
        with pytest.raises(grpc.RpcError) as e:
            third.result(timeout=10)
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "in progress from 127.0.0.1" in (e.value.details() or "")
        release.set()   # they half-close without a request: refused, and their places freed
        for call in held:
            with pytest.raises(grpc.RpcError) as ended:
                call.result(timeout=10)
            assert ended.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # the places are given back: a real enrollment goes through
        token = served.store.create_token(ttl=60, uses=1, organization="org")
        assert served.enroll(token, make_key_and_csr(tmp_path / "k.pem")).agent_id
    finally:
        release.set()


def test_under_pressure_a_waiting_call_gets_the_short_deadline(served: Served) -> None:
    service = served.service
    service.gate.per_address_concurrent = 10
    service.deadline, service.pressure_deadline, service.pressure_at = 60.0, 0.2, 2
    release = threading.Event()
    try:
        held = [_hanging_call(served.channel, release) for _ in range(2)]
        wait_for(lambda: service.gate.in_progress() == 2, timeout=5,
                 message="two calls waiting for their request")
        third = _hanging_call(served.channel, release)
        with pytest.raises(grpc.RpcError) as e:
            third.result(timeout=10)
        assert e.value.code() is grpc.StatusCode.CANCELLED
        assert service.under_pressure == 1
        assert not any(call.done() for call in held)   # they still have their 60 s
    finally:
        release.set()


def test_the_token_s_organization_and_its_id_go_into_the_store_and_the_certificate(
        served: Served, tmp_path: Path) -> None:
    from collector.pki import agent_facts

    token = served.store.create_token(ttl=60, uses=1, organization="Sở Y tế",
                                      organization_id="syt")
    reply = served.enroll(token, make_key_and_csr(tmp_path / "k.pem"))
    record = served.store.agent(reply.agent_id)
    assert record is not None and (record.organization, record.organization_id) == \
        ("Sở Y tế", "syt")
    cert = x509.load_pem_x509_certificate(reply.certificate_pem)
    assert agent_facts(cert).organization_id == "syt" and reply.organization == "Sở Y tế"
