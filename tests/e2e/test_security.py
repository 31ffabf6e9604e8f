"""Who may talk to the collector: certificates, revocation, tokens, pinning."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from agent.enrollment import make_key_and_csr
from collector.pki import CertificateAuthority, pem
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import Agent, Collector, cli

AgentFactory = Callable[..., Agent]


def _stream(collector: Collector, creds: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(collector.address, creds,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        stub = pb_grpc.IngestStub(ch)
        try:
            for _ in stub.Stream(iter([pb.AgentMessage(hello=pb.Hello())]), timeout=5):
                pass
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def _ca_pem(collector: Collector) -> bytes:
    return (collector.data_dir / "pki" / "ca.crt").read_bytes()


def test_client_without_certificate_is_refused(collector: Collector) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=_ca_pem(collector))
    assert _stream(collector, creds) == grpc.StatusCode.UNAVAILABLE  # TLS handshake refused


def test_client_with_certificate_from_another_ca_is_refused(
        collector: Collector, tmp_path: Path) -> None:
    other = CertificateAuthority.create("attacker CA")
    key_path = tmp_path / "k.pem"
    csr = make_key_and_csr(key_path)
    cert = other.sign_agent(csr, "00000000-0000-0000-0000-000000000000")
    creds = grpc.ssl_channel_credentials(root_certificates=_ca_pem(collector),
                                         private_key=key_path.read_bytes(),
                                         certificate_chain=pem(cert))
    assert _stream(collector, creds) == grpc.StatusCode.UNAVAILABLE


def test_enrolled_client_is_accepted_and_revoked_one_refused(
        collector: Collector, agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    state = agent.state_dir
    creds = grpc.ssl_channel_credentials(root_certificates=(state / "ca.crt").read_bytes(),
                                         private_key=(state / "agent.key").read_bytes(),
                                         certificate_chain=(state / "agent.crt").read_bytes())
    assert _stream(collector, creds) == grpc.StatusCode.OK
    cli("collector", "agents", "revoke", "--data-dir", str(collector.data_dir), agent.agent_id)
    assert _stream(collector, creds) == grpc.StatusCode.PERMISSION_DENIED
    listing = cli("collector", "agents", "list", "--data-dir", str(collector.data_dir)).stdout
    assert "revoked" in listing


def test_agent_key_is_private(collector: Collector, agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    assert (agent.state_dir / "agent.key").stat().st_mode & 0o777 == 0o600
    assert (collector.data_dir / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600


def _enroll(collector: Collector, token: str, state: Path,
            fingerprint: str | None = None) -> tuple[int, str]:
    r = cli("agent", "enroll", "--collector", collector.address, "--token", token,
            "--ca-fingerprint", fingerprint or collector.fingerprint, "--state-dir", str(state),
            check=False)
    return r.returncode, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""


def test_token_past_its_use_count_is_refused(collector: Collector, tmp_path: Path) -> None:
    token = collector.token("--uses", "2")
    assert _enroll(collector, token, tmp_path / "a1")[0] == 0
    assert _enroll(collector, token, tmp_path / "a2")[0] == 0
    code, reason = _enroll(collector, token, tmp_path / "a3")
    assert code != 0
    assert "used up" in reason and "\n" not in reason


def test_expired_token_is_refused(collector: Collector, tmp_path: Path) -> None:
    token = collector.token("--ttl", "1s")
    time.sleep(1.5)  # the token's own lifetime, not a wait for the system under test
    code, reason = _enroll(collector, token, tmp_path / "a")
    assert code != 0 and "expired" in reason


def test_unknown_token_is_refused(collector: Collector, tmp_path: Path) -> None:
    code, reason = _enroll(collector, "sgt_not-a-token", tmp_path / "a")
    assert code != 0 and "unknown enrollment token" in reason


def test_wrong_fingerprint_refuses_to_enroll_and_keeps_token(
        collector: Collector, tmp_path: Path) -> None:
    token = collector.token()
    wrong = "sha256:" + "ab" * 32
    code, reason = _enroll(collector, token, tmp_path / "a", fingerprint=wrong)
    assert code != 0 and "fingerprint mismatch" in reason
    assert not (tmp_path / "a" / "agent.crt").exists()
    # the token was never sent, so it still works with the right pin
    assert _enroll(collector, token, tmp_path / "b")[0] == 0


def test_tokens_are_stored_hashed(collector: Collector) -> None:
    token = collector.token("--ttl", "10m")
    raw = (collector.data_dir / "collector.db").read_bytes()
    wal = collector.data_dir / "collector.db-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert token.encode() not in raw
