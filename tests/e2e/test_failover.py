"""Two collectors of one deployment: an agent fails over, and nothing is lost."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from tests.harness import Agent, Collector, cli, wait_for


def test_agent_fails_over_to_a_second_collector_sharing_the_ca(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path) -> None:
    first = collector_factory(name="first")
    second = Collector(tmp_path / "second")
    init = cli("collector", "init", "--data-dir", str(second.data_dir), "--listen",
               second.address, "--ca-from", str(first.data_dir / "pki")).stdout
    second.fingerprint = init.split("ca-fingerprint: ", 1)[1].strip()
    assert second.fingerprint == first.fingerprint  # one CA: one pin for the sysadmins
    second.start()
    try:
        www = tmp_path / "www"
        www.mkdir()
        agent = agent_factory(first, "--sensors", "fim", "--watch", str(www),
                              "--collector", first.address, "--collector", second.address,
                              start=False)
        agent.enroll(org_id="test-org-7")   # not the id derived from the name
        agent.start()
        (www / "a.html").write_text("before\n")
        wait_for(lambda: any(e.get("file", {}).get("path") == str(www / "a.html")
                             for e in first.events()), message="event at the first collector")
        assert first.proc is not None
        first.proc.kill(signal.SIGKILL)
        (www / "b.html").write_text("after\n")

        def at_second() -> list[dict[str, object]]:
            return [e for e in second.events()
                    if e.get("file", {}).get("path") == str(www / "b.html")]

        (event,) = wait_for(at_second, timeout=30, message="event at the second collector")
        # the second collector never saw the enrollment: it knows the agent by its cert,
        # which names the organization and its id
        assert event["agent"]["id"] == agent.agent_id  # type: ignore[index]
        assert event["organization"] == {"id": "test-org-7", "name": "test-org"}
        assert event["host"]["name"]  # type: ignore[index]
    finally:
        if second.proc:
            second.proc.kill()


def test_certificate_from_the_shared_ca_is_refused_once_revoked_there(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path) -> None:
    first = collector_factory(name="first")
    agent = agent_factory(first, start=False)
    agent.enroll()
    second = Collector(tmp_path / "second")
    cli("collector", "init", "--data-dir", str(second.data_dir), "--listen", second.address,
        "--ca-from", str(first.data_dir / "pki"))
    second.fingerprint = first.fingerprint
    second.start()
    try:
        import grpc

        from tests.e2e.test_security import _stream

        state = agent.state_dir
        creds = grpc.ssl_channel_credentials(
            root_certificates=(state / "ca.crt").read_bytes(),
            private_key=(state / "agent.key").read_bytes(),
            certificate_chain=(state / "agent.crt").read_bytes())
        assert _stream(second, creds) == grpc.StatusCode.OK
        cli("collector", "agents", "revoke", "--data-dir", str(second.data_dir), agent.agent_id)
        assert _stream(second, creds) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        if second.proc:
            second.proc.kill()
