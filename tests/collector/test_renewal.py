"""Collector-side renewal: agent certificates from the stream's identity, server cert."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from agent.enrollment import make_key_and_csr
from collector.pki import CertificateAuthority, agent_facts, agent_id_of, pem, write_private
from collector.renewal import AgentRenewer, ensure_server_certificate, expiry_warnings
from collector.store import Store
from sisguard.v1 import sisguard_pb2 as pb

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def _server(ca: CertificateAuthority, pki: Path, validity: dt.timedelta) -> x509.Certificate:
    cert, key = dataclasses.replace(ca, server_validity=validity).issue_server(
        ["collector.example", "10.0.0.5"])
    pki.mkdir(parents=True, exist_ok=True)
    (pki / "server.crt").write_bytes(pem(cert))
    write_private(pki / "server.key", key)
    ca.save(pki)
    return cert


def test_a_server_certificate_near_expiry_is_reissued_for_the_same_names(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    old = _server(ca, tmp_path, 10 * DAY)
    assert ensure_server_certificate(tmp_path, ca, renew_before=30 * DAY)
    new = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject
    san = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n) for n in san.get_values_for_type(x509.DNSName)] == ["collector.example"]
    assert [str(n) for n in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert new.not_valid_after_utc - dt.datetime.now(dt.UTC) > 300 * DAY
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600
    assert not ensure_server_certificate(tmp_path, ca, renew_before=30 * DAY)  # fresh now


def test_a_server_certificate_of_another_ca_or_key_is_reissued(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    _server(CertificateAuthority.create("old CA"), tmp_path, 300 * DAY)
    assert ensure_server_certificate(tmp_path, ca, renew_before=30 * DAY)
    write_private(tmp_path / "server.key", (tmp_path / "ca.key").read_bytes())  # a mismatch
    assert ensure_server_certificate(tmp_path, ca, renew_before=30 * DAY)
    assert not ensure_server_certificate(tmp_path, ca, renew_before=30 * DAY)


def test_warnings_name_every_certificate_expiring_within_30_days(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    _server(ca, tmp_path, 10 * DAY)
    store = Store(tmp_path / "collector.db")
    soon = store.add_agent(hostname="web1", organization="o", version="", os="", serial="")
    later = store.add_agent(hostname="web2", organization="o", version="", os="", serial="")
    now = dt.datetime.now(dt.UTC)
    store.set_certificate(soon, serial="1", expires=(now + 3 * DAY).timestamp())
    store.set_certificate(later, serial="2", expires=(now + 80 * DAY).timestamp())
    lines = expiry_warnings(tmp_path, store)
    assert any(line.startswith("server certificate expires in 9 days") for line in lines)
    assert any(f"agent {soon} (web1) certificate expires in 2 days" in line for line in lines)
    assert not any(later in line for line in lines)
    assert not any("CA certificate" in line for line in lines)
    store.revoke(soon)
    assert not any(soon in line for line in expiry_warnings(tmp_path, store))


def test_renewal_keeps_the_streams_identity_whatever_the_csr_says(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    store = Store(tmp_path / "collector.db")
    agent_id = store.add_agent(hostname="web1", organization="agency-a", version="", os="",
                               serial="")
    current = ca.sign_agent(make_key_and_csr(tmp_path / "k1"), agent_id, hostname="web1",
                            organization="agency-a", organization_id="ag-1")
    renewer = AgentRenewer(dataclasses.replace(ca, agent_validity=90 * DAY), store)
    # the CSR names a host, not this agent: its subject is ignored
    reply = renewer.renew(current, pb.RenewRequest(csr_pem=make_key_and_csr(tmp_path / "k2")),
                          peer="ipv4:10.0.0.9:5000")
    assert not reply.error
    new = x509.load_pem_x509_certificate(reply.certificate_pem)
    assert agent_id_of(new) == agent_id and agent_facts(new) == ("web1", "agency-a", "ag-1")
    record = store.agent(agent_id)
    assert record is not None and record.serial == format(new.serial_number, "x")
    assert record.cert_expires == new.not_valid_after_utc.timestamp()
    for bad in (b"not a csr", b"x" * 20_000):
        reply = renewer.renew(current, pb.RenewRequest(csr_pem=bad), peer="p")
        assert reply.error and not reply.certificate_pem
