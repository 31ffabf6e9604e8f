"""The CA: lifetimes, and the offline root with its intermediate."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.enrollment import make_key_and_csr
from collector.pki import AGENT_VALIDITY, CertificateAuthority, PkiError


def test_agent_certificates_last_90_days_and_short_ones_are_barely_backdated(
        tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    cert = ca.sign_agent(make_key_and_csr(tmp_path / "k"), "a")
    assert dt.timedelta(days=90) == AGENT_VALIDITY
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == AGENT_VALIDITY + \
        dt.timedelta(minutes=5)
    short = dataclasses.replace(ca, agent_validity=dt.timedelta(seconds=20)).sign_agent(
        make_key_and_csr(tmp_path / "k2"), "a")
    assert short.not_valid_after_utc - short.not_valid_before_utc == dt.timedelta(seconds=22)


def test_an_intermediate_loads_with_its_root_and_signs(tmp_path: Path) -> None:
    root = CertificateAuthority.create_root()
    inter = root.issue_intermediate()
    inter.save(tmp_path)
    loaded = CertificateAuthority.load(tmp_path)
    assert loaded.cert == inter.cert and loaded.chain == (root.cert,)
    assert loaded.anchor == root.cert
    cert = loaded.sign_agent(make_key_and_csr(tmp_path / "k"), "a")
    cert.verify_directly_issued_by(inter.cert)
    with pytest.raises(PkiError, match="cannot sign another intermediate"):
        inter.issue_intermediate()


def test_a_broken_chain_or_a_foreign_key_is_refused(tmp_path: Path) -> None:
    inter = CertificateAuthority.create_root().issue_intermediate()
    other_root = CertificateAuthority.create_root()
    inter.save(tmp_path)
    (tmp_path / "ca.crt").write_bytes(dataclasses.replace(inter, chain=(other_root.cert,))
                                      .cert_pem)
    with pytest.raises(PkiError, match="certificate 1 is not issued by certificate 2"):
        CertificateAuthority.load(tmp_path)
    other_root.save(tmp_path)
    (tmp_path / "ca.crt").write_bytes(inter.cert_pem)         # the key is the other root's
    with pytest.raises(PkiError, match="not the key of the first certificate"):
        CertificateAuthority.load(tmp_path)


_CA = CertificateAuthority.create()
_KEY = ec.generate_private_key(ec.SECP256R1())


def _csr(key: ec.EllipticCurvePrivateKey = _KEY) -> bytes:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h")]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


_GOOD_CSR = _csr()
_GOOD_DER = x509.load_pem_x509_csr(_GOOD_CSR).public_bytes(serialization.Encoding.DER)


def test_a_csr_for_another_curve_is_refused() -> None:
    with pytest.raises(PkiError, match="P-256"):
        _CA.sign_agent(_csr(ec.generate_private_key(ec.SECP384R1())), "a")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_GOOD_DER) - 1), st.integers(0, 255)),
                min_size=1, max_size=3))
def test_a_mangled_csr_is_signed_or_refused_never_crashes(edits: list[tuple[int, int]]) -> None:
    der = bytearray(_GOOD_DER)
    for index, value in edits:
        der[index] = value
    body = base64.encodebytes(bytes(der))
    with contextlib.suppress(PkiError):
        _CA.sign_agent(b"-----BEGIN CERTIFICATE REQUEST-----\n" + body
                       + b"-----END CERTIFICATE REQUEST-----\n", "a")


def test_the_certificate_names_the_organization_id_for_every_collector(tmp_path: Path) -> None:
    from collector.pki import agent_facts

    ca = CertificateAuthority.create()
    cert = ca.sign_agent(make_key_and_csr(tmp_path / "k"), "a", hostname="web1",
                         organization="Sở Y tế", organization_id="syt")
    assert agent_facts(cert) == ("web1", "Sở Y tế", "syt")
    # made before organization ids: the id derived from the name, as the store does
    old = ca.sign_agent(make_key_and_csr(tmp_path / "k2"), "a", hostname="web1",
                        organization="Sở TT&TT")
    assert agent_facts(old) == ("web1", "Sở TT&TT", "so-tt-tt")
    with pytest.raises(PkiError, match="organization id"):
        ca.sign_agent(make_key_and_csr(tmp_path / "k3"), "a", organization="x",
                      organization_id="../x")
