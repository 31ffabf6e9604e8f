"""An agent whose certificate nears expiry renews it over its stream: nothing is lost.

The collector issues 15-second agent certificates (``pki.test_agent_lifetime``, a
test-only key), so the agent must renew once 10 s have passed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
from cryptography import x509

from agent.renewal import renew_at
from tests.harness import Agent, Collector, cli, wait_for
from tests.security.test_revocation import _connect_code

LIFETIME = 15.0


def _paths(collector: Collector, www: Path) -> Counter[str]:
    return Counter(str(e.get("file", {}).get("path")) for e in collector.events()
                   if str(e.get("file", {}).get("path", "")).startswith(str(www)))


def test_agent_renews_its_certificate_over_the_stream_with_no_event_lost(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path) -> None:
    collector = collector_factory(start=False)
    with open(collector.data_dir / "collector.yml", "a") as f:
        f.write(f"pki:\n  test_agent_lifetime: {LIFETIME}s\n")
    collector.start()
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www), start=False)
    agent.enroll()
    state = agent.state_dir
    old = tmp_path / "old"
    old.mkdir()
    for name in ("agent.key", "agent.crt", "ca.crt"):
        (old / name).write_bytes((state / name).read_bytes())
    old_cert = x509.load_pem_x509_certificate((old / "agent.crt").read_bytes())
    renew_from = renew_at(old_cert) + 0.2   # a third of its lifetime left
    agent.start()
    assert agent.proc is not None

    (www / "before.html").write_text("before\n")
    wait_for(lambda: _paths(collector, www)[str(www / "before.html")], timeout=20,
             message="the marker before renewal")
    # the certificate's own lifetime, not a wait for the system under test
    time.sleep(max(0.0, renew_from - time.time()))
    for i in range(20):     # a burst while it renews: it wakes the shipper, which renews
        (www / f"during-{i}.html").write_text(f"{i}\n")
    wait_for(lambda: "certificate renewed" in agent.proc.since(0) if agent.proc else None,
             timeout=20, message=f"the renewal\n{agent.proc.tail()}")
    (www / "after.html").write_text("after\n")
    expected = {str(www / n) for n in ["before.html", "after.html",
                                        *(f"during-{i}.html" for i in range(20))]}
    wait_for(lambda: expected <= set(_paths(collector, www)), timeout=30,
             message=f"every marker stored\n{agent.proc.tail()}")
    counts = _paths(collector, www)
    assert {p for p in expected if counts[p] != 1} == set(), counts   # none twice

    new_cert = x509.load_pem_x509_certificate((state / "agent.crt").read_bytes())
    assert new_cert.serial_number != old_cert.serial_number
    assert new_cert.subject == old_cert.subject          # same agent id and organization
    assert new_cert.not_valid_after_utc > old_cert.not_valid_after_utc
    assert (state / "agent.key").read_bytes() != (old / "agent.key").read_bytes()
    assert (state / "agent.key").stat().st_mode & 0o777 == 0o600
    assert (state / "agent.crt").stat().st_mode & 0o777 == 0o600
    assert not list(state.glob("*.new"))
    log = collector.proc.since(0) if collector.proc else ""
    assert "agent certificate renewed" in log
    # the stream was re-opened with the new certificate
    connects = agent.proc.since(0).count('"connected to collector"')
    assert connects >= 2, agent.proc.tail()

    # the old certificate keeps working until it expires (as documented), then TLS
    # refuses it; revoking the agent id would refuse it (and the new one) at once
    assert time.time() < old_cert.not_valid_after_utc.timestamp() - 1, "too slow to tell"
    assert _connect_code(collector, old) == grpc.StatusCode.OK
    time.sleep(max(0.0, old_cert.not_valid_after_utc.timestamp() + 0.5 - time.time()))
    assert _connect_code(collector, old) == grpc.StatusCode.UNAVAILABLE
    listing = cli("collector", "agents", "list", "--data-dir", str(collector.data_dir))
    # 15-second certificates: well within the 30 days that warrant a warning
    assert f"warning: agent {agent.agent_id}" in listing.stderr, listing.stderr
    wait_for(lambda: (collector.data_dir / "health.json").exists(), message="health file")
    status = cli("collector", "status", "--data-dir", str(collector.data_dir))
    assert f"warning: agent {agent.agent_id}" in status.stderr, status.stderr


def _served_certificate(collector: Collector) -> x509.Certificate:
    import ssl

    der = ssl.get_server_certificate(("127.0.0.1", collector.port + 1))   # enrollment port
    return x509.load_pem_x509_certificate(der.encode())


def test_collector_reissues_its_server_certificate_near_expiry_at_start(
        collector_factory: Callable[..., Collector]) -> None:
    import dataclasses
    import datetime as dt

    from collector.pki import CertificateAuthority, pem, write_private

    collector = collector_factory(start=False)
    pki = collector.data_dir / "pki"
    ca = dataclasses.replace(CertificateAuthority.load(pki),
                             server_validity=dt.timedelta(days=10))
    old, key = ca.issue_server(["localhost", "127.0.0.1"])
    (pki / "server.crt").write_bytes(pem(old))
    write_private(pki / "server.key", key)
    status = cli("collector", "agents", "list", "--data-dir", str(collector.data_dir))
    assert "warning: server certificate expires in 9 days" in status.stderr, status.stderr
    collector.start()
    served = _served_certificate(collector)
    assert served.serial_number != old.serial_number
    assert served.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=390)
    assert served.subject == old.subject
    assert collector.proc is not None and "server certificate re-issued" in collector.proc.since(0)
    assert "server certificate" not in cli("collector", "agents", "list", "--data-dir",
                                           str(collector.data_dir)).stderr
    wait_for(lambda: (collector.data_dir / "health.json").exists(), message="health file")
    assert cli("collector", "status", "--data-dir", str(collector.data_dir)).stderr == ""


def test_a_running_collector_serves_a_replaced_and_reissues_an_expiring_certificate(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent]) -> None:
    import dataclasses
    import datetime as dt

    from collector.pki import CertificateAuthority, pem, write_private

    collector = collector_factory()
    agent = agent_factory(collector, start=False)
    agent.enroll()
    first = _served_certificate(collector)
    pki = collector.data_dir / "pki"
    ca = dataclasses.replace(CertificateAuthority.load(pki),
                             server_validity=dt.timedelta(days=10))
    expiring, key = ca.issue_server(["localhost", "127.0.0.1"])
    write_private(pki / "server.key", key)      # as an operator (or a crash) might leave it
    # key and certificate do not match yet: the old certificate is still served
    assert _served_certificate(collector).serial_number == first.serial_number
    (pki / "server.crt").write_bytes(pem(expiring))
    # the next handshake loads the pair, finds it within 30 days of expiry, re-issues it
    served = _served_certificate(collector)
    assert served.serial_number not in (first.serial_number, expiring.serial_number)
    assert served.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=390)
    on_disk = x509.load_pem_x509_certificate((pki / "server.crt").read_bytes())
    assert on_disk.serial_number == served.serial_number
    assert collector.proc is not None
    log = collector.proc.since(0)
    assert "server certificate re-issued" in log and "server certificate reloaded" in log
    # mutual TLS goes on with the new certificate
    assert _connect_code(collector, agent.state_dir) == grpc.StatusCode.OK
