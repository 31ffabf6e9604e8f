"""The signed revocation list: what we sign we read back; anything else is refused."""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.crl import (
    MAX_CRL_BYTES,
    CrlRefused,
    Revocations,
    canonical_agent_id,
    parse_serial,
    read_crl,
    sign_crl,
)
from collector.pki import CertificateAuthority


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def test_serials_and_agent_ids_survive_signing(ca: CertificateAuthority) -> None:
    ids = frozenset(str(uuid.uuid4()) for _ in range(3))
    revs = Revocations(serials=frozenset({1, 2**158 + 7}), agent_ids=ids)
    signed = read_crl(sign_crl(ca, revs, number=5), ca.cert, source="t")
    assert signed.revocations == revs
    assert signed.number == 5
    assert signed.next_update is not None
    assert signed.revocations.refuses(serial=1, agent_id="x")
    assert signed.revocations.refuses(serial=3, agent_id=next(iter(ids)))
    assert not signed.revocations.refuses(serial=3, agent_id="x")


def test_an_empty_list_and_a_der_list_read_back(ca: CertificateAuthority) -> None:
    data = sign_crl(ca, Revocations(), number=1)
    der = x509.load_pem_x509_crl(data).public_bytes(serialization.Encoding.DER)
    assert read_crl(der, ca.cert, source="t").revocations == Revocations()


def test_many_ids_need_a_long_der_length(ca: CertificateAuthority) -> None:
    ids = frozenset(str(uuid.uuid4()) for _ in range(2000))   # ~74 kB: 3-octet length
    assert read_crl(sign_crl(ca, Revocations(agent_ids=ids), number=1), ca.cert,
                    source="t").revocations.agent_ids == ids


def test_a_list_of_another_ca_with_our_name_is_refused(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create()    # same subject, other key
    assert other.cert.subject == ca.cert.subject
    with pytest.raises(CrlRefused, match="signature does not verify"):
        read_crl(sign_crl(other, Revocations(serials=frozenset({9})), number=1), ca.cert,
                 source="shared file")


def test_a_list_of_another_named_ca_is_refused(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("attacker CA")
    with pytest.raises(CrlRefused, match="not by our CA"):
        read_crl(sign_crl(other, Revocations(), number=1), ca.cert, source="f")


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAA==\n"
                                  b"-----END X509 CRL-----\n", b"\x30\x82\xff\xff"])
def test_garbage_is_refused_with_its_source(ca: CertificateAuthority, data: bytes) -> None:
    with pytest.raises(CrlRefused, match=r"^/shared/crl\.pem: "):
        read_crl(data, ca.cert, source="/shared/crl.pem")


def test_a_huge_list_is_refused_unread(ca: CertificateAuthority) -> None:
    with pytest.raises(CrlRefused, match="over the limit"):
        read_crl(b"0" * (MAX_CRL_BYTES + 1), ca.cert, source="f")


def test_a_tampered_list_is_refused(ca: CertificateAuthority) -> None:
    der = bytearray(x509.load_pem_x509_crl(
        sign_crl(ca, Revocations(serials=frozenset({0x1234567})), number=1))
        .public_bytes(serialization.Encoding.DER))
    i = der.index(bytes.fromhex("01234567"))
    der[i + 3] ^= 1                       # another serial: the signature no longer holds
    with pytest.raises(CrlRefused):
        read_crl(bytes(der), ca.cert, source="f")


def test_ids_and_serials_are_checked() -> None:
    uid = uuid.uuid4()
    assert canonical_agent_id(str(uid).upper()) == str(uid)
    with pytest.raises(CrlRefused, match="not a UUID"):
        canonical_agent_id("hostA")
    assert parse_serial("0A:FF") == 0xAFF
    assert parse_serial("0x10") == 16
    for bad in ("zz", "0", "f" * 41, ""):
        with pytest.raises(CrlRefused):
            parse_serial(bad)


_CA = CertificateAuthority.create()
_GOOD_DER = x509.load_pem_x509_crl(sign_crl(
    _CA, Revocations(serials=frozenset({5, 77}), agent_ids=frozenset({str(uuid.uuid4())})),
    number=3)).public_bytes(serialization.Encoding.DER)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2048),
    # the real list with a few bytes changed: parses often, verifies never
    st.lists(st.tuples(st.integers(0, len(_GOOD_DER) - 1), st.integers(0, 255)),
             min_size=1, max_size=4).map(lambda edits: _edit(_GOOD_DER, edits)),
))
def test_any_bytes_are_read_or_refused_never_crash(data: bytes) -> None:
    try:
        signed = read_crl(data, _CA.cert, source="fuzz")
    except CrlRefused:
        return
    assert data == _GOOD_DER or signed.revocations.serials == {5, 77}


def _edit(der: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(der)
    for index, value in edits:
        out[index] = value
    return bytes(out)
