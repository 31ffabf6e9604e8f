"""The revocation list: a CRL signed by the collectors' CA, read back only if it verifies.

A CRL lists certificate serials. An operator may also revoke an agent id (every
certificate of that agent, renewed ones included, and any serial it has never shown to
this collector): those ids ride in a private, non-critical CRL extension, covered by the
same signature. A list that does not verify against our CA, is too big or malformed is
refused as a whole (``CrlRefused``); an expired list is still honoured (ignoring it would
un-revoke), its age is only reported.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID

from collector.pki import CertificateAuthority
from common.errors import SisguardError

# An OID of our own without registration: 2.25.<UUID as an integer> (ITU-T X.667).
REVOKED_IDS_OID = x509.ObjectIdentifier(
    "2.25." + str(uuid.UUID("5d0c9a3e-7f0b-4c39-9a36-0b1f6a1f4e21").int))
MAX_CRL_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 200_000           # serials, and agent ids, each
MAX_SERIAL_BITS = 159           # RFC 5280: 20 octets, positive
CRL_VALIDITY = dt.timedelta(days=7)   # republished well before (see RevocationWatcher)


class CrlRefused(SisguardError):
    """A revocation list is unsigned, signed by another CA, too big or malformed."""


@dataclass(frozen=True)
class Revocations:
    serials: frozenset[int] = frozenset()
    agent_ids: frozenset[str] = frozenset()

    def refuses(self, *, serial: int, agent_id: str) -> bool:
        return serial in self.serials or agent_id in self.agent_ids

    def union(self, other: Revocations) -> Revocations:
        return Revocations(self.serials | other.serials, self.agent_ids | other.agent_ids)

    def covers(self, other: Revocations) -> bool:
        return other.serials <= self.serials and other.agent_ids <= self.agent_ids

    def __len__(self) -> int:
        return len(self.serials) + len(self.agent_ids)


def canonical_agent_id(value: str) -> str:
    """Agent ids are UUIDs; anything else is refused (a typo must not revoke nothing)."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError as e:
        raise CrlRefused(f"agent id {value[:80]!r} is not a UUID") from e


def parse_serial(value: str) -> int:
    """A certificate serial as ``agents list`` and openssl print it: hex, ':' allowed."""
    text = value.strip().lower().removeprefix("0x").replace(":", "")
    try:
        serial = int(text, 16)
    except ValueError as e:
        raise CrlRefused(f"serial {value[:80]!r} is not hexadecimal") from e
    if serial <= 0 or serial.bit_length() > MAX_SERIAL_BITS:
        raise CrlRefused(f"serial {value[:80]!r} is out of range (1 to 20 octets)")
    return serial


# The ids extension's value is DER: an OCTET STRING holding the ids, newline-separated.
def _der_octet_string(data: bytes) -> bytes:
    n = len(data)
    if n < 0x80:
        return b"\x04" + bytes([n]) + data
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(length)]) + length + data


def _from_der_octet_string(der: bytes) -> bytes:
    if len(der) < 2 or der[0] != 0x04:
        raise CrlRefused("revoked agent ids: not a DER OCTET STRING")
    first = der[1]
    if first < 0x80:
        start, n = 2, first
    else:
        width = first & 0x7F
        if width == 0 or width > 4 or len(der) < 2 + width:
            raise CrlRefused("revoked agent ids: bad DER length")
        start, n = 2 + width, int.from_bytes(der[2:2 + width], "big")
    if start + n != len(der):
        raise CrlRefused("revoked agent ids: DER length does not match the value")
    return der[start:]


def sign_crl(ca: CertificateAuthority, revocations: Revocations, *, number: int,
             now: dt.datetime | None = None) -> bytes:
    """The PEM of a CRL listing every revoked serial and agent id, signed by ``ca``."""
    now = now or dt.datetime.now(dt.UTC)
    # all entries at once: add_revoked_certificate() copies the list each time (O(n^2):
    # 32 s for 100,000 serials, against 1 s this way)
    revoked = [x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
               .build() for serial in sorted(revocations.serials)]
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked)
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(REVOKED_IDS_OID, _der_octet_string(
                "\n".join(sorted(revocations.agent_ids)).encode("ascii"))),
            critical=False)
    )
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class SignedList:
    revocations: Revocations
    number: int
    next_update: dt.datetime | None


# what cryptography raises on malformed input (found by fuzzing: tests/collector/test_crl.py)
_MALFORMED = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension,
              x509.UnsupportedGeneralNameType)


def read_crl(data: bytes, ca_cert: x509.Certificate, *, source: str) -> SignedList:
    """Parse and verify a CRL; raises ``CrlRefused`` naming ``source`` and the reason."""
    if len(data) > MAX_CRL_BYTES:
        raise CrlRefused(f"{source}: revocation list of {len(data)} bytes is over the "
                         f"limit of {MAX_CRL_BYTES}")
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
    except _MALFORMED as e:
        raise CrlRefused(f"{source}: not a CRL: {e}") from e
    try:   # cryptography parses the fields lazily: a malformed one raises on access
        return _verified(crl, ca_cert, source=source)
    except _MALFORMED as e:
        raise CrlRefused(f"{source}: malformed CRL: {e}") from e


def _verified(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate, *,
              source: str) -> SignedList:
    if crl.issuer != ca_cert.subject:
        raise CrlRefused(f"{source}: issued by {crl.issuer.rfc4514_string()[:200]!r}, "
                         f"not by our CA {ca_cert.subject.rfc4514_string()!r}")
    if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise CrlRefused(f"{source}: the signature does not verify against our CA")
    if len(crl) > MAX_ENTRIES:
        raise CrlRefused(f"{source}: {len(crl)} serials, over the limit of {MAX_ENTRIES}")
    serials = frozenset(entry.serial_number for entry in crl)
    try:
        number_ext = crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value
        number = int(getattr(number_ext, "crl_number", 0))
    except x509.ExtensionNotFound:
        number = 0
    ids: frozenset[str] = frozenset()
    try:
        ext = crl.extensions.get_extension_for_oid(REVOKED_IDS_OID).value
    except x509.ExtensionNotFound:
        ext = None
    if isinstance(ext, x509.UnrecognizedExtension):
        raw = _from_der_octet_string(ext.value)
        try:
            lines = raw.decode("ascii").split("\n") if raw else []
        except UnicodeDecodeError as e:
            raise CrlRefused(f"{source}: revoked agent ids are not ASCII") from e
        if len(lines) > MAX_ENTRIES:
            raise CrlRefused(f"{source}: {len(lines)} agent ids, over the limit of "
                             f"{MAX_ENTRIES}")
        try:
            ids = frozenset(canonical_agent_id(line) for line in lines)
        except CrlRefused as e:
            raise CrlRefused(f"{source}: {e}") from e
    return SignedList(Revocations(serials, ids), number, crl.next_update_utc)
