"""The agent renews its own certificate over its stream, before it expires.

When less than a third of the certificate's lifetime is left, the shipper asks for a
new one: a new key is made here (it never leaves the host), its CSR goes up in a
``RenewRequest``; the reply is checked (our CA signed it, it names our agent id, it is
for our new key) before key and certificate replace the old ones on disk, atomically.
The shipper then ends the session once nothing is in flight and reconnects with them:
no event is lost or sent twice. A refused or failed renewal is tried again later (the
old certificate keeps working until it expires).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.identity import Credentials
from common.errors import SisguardError
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.agent.renewal")

RENEW_WHEN_LEFT = 1 / 3          # of the certificate's lifetime
RETRY_MIN = 10.0                 # seconds; and at most a hundredth of the lifetime


class RenewalError(SisguardError):
    """A renewed certificate was refused by the collector or by us."""


def _utc(cert: x509.Certificate, name: str) -> dt.datetime:
    value = getattr(cert, name + "_utc", None)   # cryptography >= 42
    if isinstance(value, dt.datetime):
        return value
    naive: dt.datetime = getattr(cert, name)
    return naive.replace(tzinfo=dt.timezone.utc)


def renew_at(cert: x509.Certificate) -> float:
    """Unix time from which the certificate should be renewed."""
    start = _utc(cert, "not_valid_before").timestamp()
    end = _utc(cert, "not_valid_after").timestamp()
    return end - (end - start) * RENEW_WHEN_LEFT


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode()


class Renewal:
    """What the shipper asks: is a renewal due, the request, and the reply's outcome."""

    def __init__(self, state_dir: Path, credentials: Credentials, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.credentials = credentials
        self._clock = clock
        self._pending: ec.EllipticCurvePrivateKey | None = None
        self._expiry_reported = False
        self._load(credentials)

    def _load(self, credentials: Credentials) -> None:
        cert = x509.load_pem_x509_certificate(credentials.cert_pem)
        self.cert = cert
        self.agent_id = _common_name(cert)
        self.due_at = renew_at(cert)
        lifetime = (_utc(cert, "not_valid_after") - _utc(cert, "not_valid_before"))
        self.retry_after = max(RETRY_MIN, lifetime.total_seconds() / 100)

    def _now(self) -> float:
        return self._clock()

    def due(self) -> bool:
        return self._pending is None and self._now() >= self.due_at

    def report_if_expired(self) -> bool:
        """Say once, clearly, why no collector will take us any more."""
        not_after = _utc(self.cert, "not_valid_after")
        if self._now() < not_after.timestamp():
            return False
        if not self._expiry_reported:
            self._expiry_reported = True
            log.error("the agent certificate has expired: no collector accepts it; enroll "
                      "the agent again (sisguard-agent enroll)", agent_id=self.agent_id,
                      not_after=not_after.isoformat())
        return True

    def request(self) -> pb.AgentMessage:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                           self.agent_id)]))
               .sign(key, hashes.SHA256()))
        self._pending = key
        log.info("certificate renewal requested", agent_id=self.agent_id,
                 not_after=_utc(self.cert, "not_valid_after").isoformat())
        return pb.AgentMessage(renew=pb.RenewRequest(
            csr_pem=csr.public_bytes(serialization.Encoding.PEM)))

    def abandon(self) -> None:
        """The session ended before the reply: ask again on the next one."""
        self._pending = None

    def complete(self, reply: pb.RenewResponse) -> Credentials:
        """Check the reply and put the new key and certificate in place."""
        key, self._pending = self._pending, None
        try:
            if key is None:
                raise RenewalError("a renewal reply without a request")
            if reply.error or not reply.certificate_pem:
                raise RenewalError(f"the collector refused: {reply.error[:300] or 'no cert'}")
            credentials = self._accept(key, reply.certificate_pem)
        except RenewalError as e:
            self.due_at = self._now() + self.retry_after
            log.warning("certificate renewal failed; the current one stays",
                        agent_id=self.agent_id, error=str(e), retry_in=self.retry_after)
            raise
        self.credentials = credentials
        self._load(credentials)
        # never renew again at once, even if the collector's lifetime is short
        self.due_at = max(self.due_at, self._now() + self.retry_after)
        log.info("certificate renewed", agent_id=self.agent_id,
                 serial=format(self.cert.serial_number, "x"),
                 not_after=_utc(self.cert, "not_valid_after").isoformat())
        return credentials

    def _accept(self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes) -> Credentials:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            ca = x509.load_pem_x509_certificate(self.credentials.ca_pem)
            cert.verify_directly_issued_by(ca)
            for_our_key = cert.public_key() == key.public_key()
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm,
                x509.InvalidVersion) as e:
            raise RenewalError(f"the renewed certificate is not signed by our CA: "
                               f"{e or type(e).__name__}") from e
        if not for_our_key:
            raise RenewalError("the renewed certificate is not for the key we sent")
        if _common_name(cert) != self.agent_id:
            raise RenewalError(f"the renewed certificate names {_common_name(cert)[:80]!r}, "
                               f"not {self.agent_id}")
        if _utc(cert, "not_valid_after").timestamp() <= self._now():
            raise RenewalError("the renewed certificate has expired already")
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        try:
            return self.credentials.replace(self.state_dir, key_pem=key_pem,
                                            cert_pem=cert_pem)
        except OSError as e:
            raise RenewalError(f"{self.state_dir}: cannot store the renewed certificate: "
                               f"{e.strerror}") from e
