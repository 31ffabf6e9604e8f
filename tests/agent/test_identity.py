"""Credentials on disk: a renewed key and certificate replace the old pair atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.identity import Credentials
from agent.renewal import Renewal
from collector.pki import CertificateAuthority, pem
from sisguard.v1 import sisguard_pb2 as pb
from tests.agent.test_renewal import AGENT, _csr_of, _enrolled


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.mark.parametrize("crash_after", ["written", "key renamed"])
def test_an_interrupted_replacement_is_finished_or_undone(
        ca: CertificateAuthority, tmp_path: Path, crash_after: str) -> None:
    creds = _enrolled(ca, tmp_path)
    renewal = Renewal(tmp_path, creds)
    csr = _csr_of(renewal.request())
    new_cert = pem(ca.sign_agent(csr, AGENT))
    new = renewal.complete(pb.RenewResponse(certificate_pem=new_cert))
    # replay the crash: put the old pair back and leave the .new files as a crash would
    (tmp_path / "agent.key.new").write_bytes(new.key_pem)
    (tmp_path / "agent.crt.new").write_bytes(new.cert_pem)
    (tmp_path / "agent.crt").write_bytes(creds.cert_pem)
    if crash_after == "written":
        (tmp_path / "agent.key").write_bytes(creds.key_pem)
        assert Credentials.load(tmp_path) == creds      # the old pair, intact
    else:
        (tmp_path / "agent.key.new").unlink()           # the key was renamed already
        assert Credentials.load(tmp_path) == new        # its certificate follows
    assert not list(tmp_path.glob("*.new"))
