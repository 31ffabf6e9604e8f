"""A rogue agent renewing: it gets only its own identity, once per stream, and a
revoked id stays revoked through every renewed certificate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from cryptography import x509

from agent.enrollment import make_key_and_csr
from collector.pki import agent_facts, agent_id_of
from tests.harness import Agent, Collector, cli, wait_for
from tests.security.test_revocation import RogueStream, _connect_code

AgentFactory = Callable[..., Agent]


def _renewed_state(agent: Agent, tmp_path: Path, stream: RogueStream) -> Path:
    """A state directory holding the renewed certificate and its key."""
    new = tmp_path / "renewed"
    new.mkdir()
    csr = make_key_and_csr(new / "agent.key")
    stream.renew(csr)
    wait_for(lambda: stream.renewed, message="the renewal reply")
    (reply,) = stream.renewed
    assert not reply.error, reply.error
    (new / "agent.crt").write_bytes(reply.certificate_pem)
    (new / "ca.crt").write_bytes((agent.state_dir / "ca.crt").read_bytes())
    return new


def test_a_rogue_renewal_names_only_the_streams_own_agent_once_per_stream(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    victim = agent_factory(collector, name="victim", start=False)
    victim.enroll(org="agency-b")
    rogue = agent_factory(collector, name="rogue", start=False)
    rogue.enroll(org="agency-a")
    stream = RogueStream(collector, rogue.state_dir)
    try:
        assert stream.welcomed.wait(10)
        new = _renewed_state(rogue, tmp_path, stream)
        cert = x509.load_pem_x509_certificate((new / "agent.crt").read_bytes())
        # whatever the CSR says (here: the host name), the certificate is the rogue's own
        assert agent_id_of(cert) == rogue.agent_id != victim.agent_id
        assert agent_facts(cert)[1] == "agency-a"
        stream.renew(make_key_and_csr(tmp_path / "second.key"))
        wait_for(lambda: len(stream.renewed) == 2, message="the second reply")
        assert stream.renewed[1].error == "one renewal per stream"
        assert not stream.renewed[1].certificate_pem
        stream.renew(b"x" * 100_000)            # refused, and the stream lives on
        wait_for(lambda: len(stream.renewed) == 3, message="the third reply")
        assert stream.renewed[2].error
        stream.send()
        wait_for(lambda: stream.acks, message="a batch acked after the refusals")
    finally:
        stream.close()
    assert _connect_code(collector, new) == grpc.StatusCode.OK


def test_revoking_the_id_refuses_the_renewed_certificate_too(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    stream = RogueStream(collector, agent.state_dir)
    try:
        assert stream.welcomed.wait(10)
        new = _renewed_state(agent, tmp_path, stream)
    finally:
        stream.close()
    cli("collector", "agents", "revoke", "--data-dir", str(collector.data_dir),
        agent.agent_id)
    def refused(state: Path) -> Callable[[], bool]:
        return lambda: _connect_code(collector, state) == grpc.StatusCode.PERMISSION_DENIED

    wait_for(refused(agent.state_dir), timeout=10, message="the enrolled certificate refused")
    assert refused(new)(), "the renewed certificate is refused as well"
