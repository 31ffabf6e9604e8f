"""The agent's side of renewal: when it is due, what it accepts, what it writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.enrollment import make_key_and_csr
from agent.identity import Credentials
from agent.renewal import Renewal, RenewalError, renew_at
from collector.pki import CertificateAuthority, pem
from sisguard.v1 import sisguard_pb2 as pb

AGENT = "6f1d1f7e-2c0a-4a7e-9a1e-0c5d3b8e4f21"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return dataclasses.replace(CertificateAuthority.create(),
                               agent_validity=dt.timedelta(days=90))


def _enrolled(ca: CertificateAuthority, state: Path) -> Credentials:
    state.mkdir(parents=True, exist_ok=True)
    cert = ca.sign_agent(make_key_and_csr(state / "agent.key"), AGENT, hostname="web1")
    (state / "agent.crt").write_bytes(pem(cert))
    (state / "ca.crt").write_bytes(ca.cert_pem)
    return Credentials.load(state)


def _csr_of(message: pb.AgentMessage) -> bytes:
    assert message.WhichOneof("kind") == "renew"
    return bytes(message.renew.csr_pem)


def test_due_when_a_third_of_the_lifetime_is_left(ca: CertificateAuthority,
                                                  tmp_path: Path) -> None:
    creds = _enrolled(ca, tmp_path)
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    assert renew_at(cert) == pytest.approx(end - (end - start) / 3)
    now = [renew_at(cert) - 1]
    renewal = Renewal(tmp_path, creds, clock=lambda: now[0])
    assert not renewal.due()
    now[0] += 2
    assert renewal.due()
    renewal.request()
    assert not renewal.due()          # one request at a time
    renewal.abandon()
    assert renewal.due()


def test_a_good_reply_replaces_key_and_certificate(ca: CertificateAuthority,
                                                   tmp_path: Path) -> None:
    creds = _enrolled(ca, tmp_path)
    renewal = Renewal(tmp_path, creds)
    csr = _csr_of(renewal.request())
    new = ca.sign_agent(csr, AGENT, hostname="web1")
    got = renewal.complete(pb.RenewResponse(certificate_pem=pem(new)))
    assert got.cert_pem == pem(new) == (tmp_path / "agent.crt").read_bytes()
    assert got.key_pem == (tmp_path / "agent.key").read_bytes() != creds.key_pem
    key = serialization.load_pem_private_key(got.key_pem, None)
    assert key.public_key() == new.public_key()
    assert (tmp_path / "agent.key").stat().st_mode & 0o777 == 0o600
    assert Credentials.load(tmp_path) == got
    assert renewal.due_at == renew_at(new)     # the schedule follows the new certificate


def _refused(renewal: Renewal, reply: pb.RenewResponse, match: str, state: Path,
             before: Credentials) -> None:
    with pytest.raises(RenewalError, match=match):
        renewal.complete(reply)
    assert Credentials.load(state) == before      # nothing replaced
    assert not list(state.glob("*.new"))


def test_a_bad_reply_changes_nothing(ca: CertificateAuthority, tmp_path: Path) -> None:
    creds = _enrolled(ca, tmp_path)
    renewal = Renewal(tmp_path, creds)
    other_ca = CertificateAuthority.create()
    cases: list[tuple[Callable[[bytes], pb.RenewResponse], str]] = [
        (lambda csr: pb.RenewResponse(error="no"), "refused: no"),
        (lambda csr: pb.RenewResponse(certificate_pem=b"junk"), "not signed by our CA"),
        (lambda csr: pb.RenewResponse(certificate_pem=pem(other_ca.sign_agent(csr, AGENT))),
         "not signed by our CA"),
        (lambda csr: pb.RenewResponse(certificate_pem=pem(ca.sign_agent(
            make_key_and_csr(tmp_path / "elsewhere.key"), AGENT))), "not for the key"),
        (lambda csr: pb.RenewResponse(certificate_pem=pem(ca.sign_agent(csr, "someone"))),
         "names 'someone'"),
    ]
    for make, match in cases:
        reply = make(_csr_of(renewal.request()))
        _refused(renewal, reply, match, tmp_path, creds)
    assert not renewal.due()          # retried later, not at once
    with pytest.raises(RenewalError, match="without a request"):
        renewal.complete(pb.RenewResponse(certificate_pem=creds.cert_pem))


def test_an_expired_certificate_is_reported_once(ca: CertificateAuthority, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    creds = _enrolled(ca, tmp_path)
    end = x509.load_pem_x509_certificate(creds.cert_pem).not_valid_after_utc.timestamp()
    now = [end - 1]
    renewal = Renewal(tmp_path, creds, clock=lambda: now[0])
    assert not renewal.report_if_expired()
    now[0] = end + 1
    assert renewal.report_if_expired() and renewal.report_if_expired()
    assert sum("has expired" in r.getMessage() for r in caplog.records) == 1
