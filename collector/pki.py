"""The collector's certificate authority.

At ``init`` the collector makes a CA (EC P-256) and a server certificate for the names it
is reached by. Agents send a CSR with an enrollment token and get back a certificate
whose subject common name is their agent id. Keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from collector.tenants import ORG_ID, derived_id
from common.errors import SisguardError

HOST_URN = "urn:sisguard:host:"
ORG_URN = "urn:sisguard:org:"
CA_VALIDITY = dt.timedelta(days=3650)
# Agents renew themselves over their stream once less than a third is left (30 days of
# a 90-day certificate): a stolen agent key is good for at most 90 days even if nobody
# revokes it, while an agent may stay off for two months and still renew on its own.
# Server certificates are re-issued by the collector 30 days before they expire.
SERVER_VALIDITY = dt.timedelta(days=397)
AGENT_VALIDITY = dt.timedelta(days=90)


class PkiError(SisguardError):
    """A certificate or key is missing, invalid or refused."""


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 from the start (no window with wider rights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def fingerprint(cert: x509.Certificate) -> str:
    """'sha256:<hex>' of the DER certificate: what agents pin."""
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca_certificate(subject: x509.Name, public_key: ec.EllipticCurvePublicKey, *,
                    issuer: x509.Name, signing_key: ec.EllipticCurvePrivateKey,
                    path_length: int, validity: dt.timedelta) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer != subject:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sisguard"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA that signs agents and servers; ``chain`` holds its issuers when it is an
    intermediate of an offline root (offline-CA mode), the root last."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    agent_validity: dt.timedelta = AGENT_VALIDITY
    server_validity: dt.timedelta = SERVER_VALIDITY
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        """This CA's certificate, then its issuers: what ca.crt holds and agents trust."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM)
                        for c in (self.cert, *self.chain))

    @property
    def anchor(self) -> x509.Certificate:
        """The self-signed root: its fingerprint is what agents pin."""
        return self.chain[-1] if self.chain else self.cert

    @classmethod
    def create(cls, common_name: str = "sisguard collector CA", *,
               path_length: int = 0) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _ca_name(common_name)
        cert = _ca_certificate(name, key.public_key(), issuer=name, signing_key=key,
                               path_length=path_length, validity=CA_VALIDITY)
        return cls(cert, key)

    @classmethod
    def create_root(cls, common_name: str = "sisguard root CA") -> CertificateAuthority:
        """An offline root: it signs only intermediates (one per deployment)."""
        return cls.create(common_name, path_length=1)

    def issue_intermediate(self, common_name: str = "sisguard collector CA", *,
                           validity: dt.timedelta = CA_VALIDITY / 2) -> CertificateAuthority:
        """A collectors' CA signed by this (offline) root."""
        if self.chain:
            raise PkiError("an intermediate cannot sign another intermediate")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_certificate(_ca_name(common_name), key.public_key(),
                               issuer=self.cert.subject, signing_key=self.key,
                               path_length=0, validity=min(validity, CA_VALIDITY))
        return CertificateAuthority(cert, key, chain=(self.cert,))

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        try:
            certs = x509.load_pem_x509_certificates((directory / "ca.crt").read_bytes())
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        except (OSError, ValueError) as e:
            raise PkiError(f"cannot load the CA from {directory}: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{directory / 'ca.key'}: not an EC private key")
        if key.public_key() != certs[0].public_key():
            raise PkiError(f"{directory / 'ca.key'}: not the key of the first certificate "
                           f"in {directory / 'ca.crt'}")
        for n, (child, parent) in enumerate(itertools.pairwise(certs), 1):
            try:
                child.verify_directly_issued_by(parent)
            except (ValueError, TypeError, InvalidSignature) as e:
                raise PkiError(f"{directory / 'ca.crt'}: certificate {n} is not issued by "
                               f"certificate {n + 1}: {e or type(e).__name__}") from e
        return cls(certs[0], key, chain=tuple(certs[1:]))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(self.cert_pem)
        write_private(directory / "ca.key", _key_pem(self.key))

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        *,
        validity: dt.timedelta,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName],
    ) -> x509.Certificate:
        now = _now()
        # back-dated for clock skew, but by little of a short (test) lifetime, so that
        # "a third of the lifetime left" means what it says
        backdate = min(dt.timedelta(minutes=5), validity / 10)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(self, names: list[str]) -> tuple[x509.Certificate, bytes]:
        """A server certificate (and its PEM key) for the given DNS names and IPs."""
        key = ec.generate_private_key(ec.SECP256R1())
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = self._issue(subject, key.public_key(), validity=self.server_validity,
                           usage=ExtendedKeyUsageOID.SERVER_AUTH, names=general)
        return cert, _key_pem(key)

    def sign_agent(self, csr_pem: bytes, agent_id: str, *, hostname: str = "",
                   organization: str = "", organization_id: str = "") -> x509.Certificate:
        """Sign an agent's CSR. The subject is ours (CN=<agent id>, O=<organization>),
        the CSR's is ignored; the host name and the organization id ride in URI SANs. So
        any collector that shares this CA knows the agent from its certificate alone
        (scale-out)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except (ValueError, x509.InvalidVersion) as e:
            raise PkiError(f"the CSR is not valid PEM: {e}") from e
        try:   # parsed lazily: a malformed field raises on access
            valid = csr.is_signature_valid
            public_key = csr.public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as e:
            raise PkiError(f"the CSR is malformed: {e or type(e).__name__}") from e
        if not valid:
            raise PkiError("the CSR's signature does not verify")
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or \
                not isinstance(public_key.curve, ec.SECP256R1):
            raise PkiError("the CSR's key must be an EC P-256 key")
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:64] or "sisguard agents"),
            x509.NameAttribute(NameOID.COMMON_NAME, agent_id),
        ])
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(f"urn:sisguard:agent:{agent_id}")]
        if hostname:
            names.append(x509.UniformResourceIdentifier(f"{HOST_URN}{quote(hostname, safe='')}"))
        if organization_id:
            if not ORG_ID.fullmatch(organization_id):
                raise PkiError(f"organization id {organization_id!r} is not [a-z0-9-]{{1,64}}")
            names.append(x509.UniformResourceIdentifier(f"{ORG_URN}{organization_id}"))
        return self._issue(subject, public_key, validity=self.agent_validity,
                           usage=ExtendedKeyUsageOID.CLIENT_AUTH, names=names)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class AgentFacts(NamedTuple):
    hostname: str
    organization: str
    organization_id: str


def agent_facts(cert: x509.Certificate) -> AgentFacts:
    """Host name, organization and its id as the enrolling collector wrote them in the
    certificate; a certificate made before organization ids gets the id derived from the
    name, the same on every collector."""
    hostname = organization_id = ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(HOST_URN):
                hostname = unquote(uri[len(HOST_URN):])
            elif uri.startswith(ORG_URN) and ORG_ID.fullmatch(uri[len(ORG_URN):]):
                organization_id = uri[len(ORG_URN):]
    except x509.ExtensionNotFound:
        pass
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = orgs[0].value if orgs else ""
    organization = value if isinstance(value, str) else value.decode()
    return AgentFacts(hostname, organization, organization_id or derived_id(organization))


def agent_id_of(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise PkiError("certificate has no common name")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()
