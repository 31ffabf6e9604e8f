"""Certificates that renew themselves: agents over their stream, the collector at start.

An agent sends a ``RenewRequest`` (a CSR for a key it has just made) on its mutually
authenticated stream. The identity is the stream's verified certificate, never the CSR:
the new certificate names the same agent id, host and organization as the one that
opened the stream, and our CA signs it with the configured lifetime. One renewal per
stream. The old certificate stays valid until it expires, unless revoked (revoking the
agent id refuses every certificate of that agent).

The collector's own server certificate is re-issued from the CA, for the same names,
when it expires within ``pki.renew_server_before`` (checked at start).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from collector.config import PkiConfig
from collector.pki import (
    CertificateAuthority,
    PkiError,
    agent_facts,
    agent_id_of,
    pem,
    write_private,
)
from collector.store import Store
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.collector.renewal")

MAX_CSR_BYTES = 16 * 1024
WARN_BEFORE = dt.timedelta(days=30)


@dataclass
class AgentRenewer:
    ca: CertificateAuthority
    store: Store

    def renew(self, cert: x509.Certificate, request: pb.RenewRequest, *,
              peer: str) -> pb.RenewResponse:
        """Sign a new certificate for the agent that ``cert`` (the stream's) names."""
        agent_id = agent_id_of(cert)
        if len(request.csr_pem) > MAX_CSR_BYTES:
            return pb.RenewResponse(error=f"CSR of {len(request.csr_pem)} bytes is over the "
                                          f"limit of {MAX_CSR_BYTES}")
        facts = agent_facts(cert)
        try:
            new = self.ca.sign_agent(request.csr_pem, agent_id, hostname=facts.hostname,
                                     organization=facts.organization,
                                     organization_id=facts.organization_id)
        except PkiError as e:
            log.warning("certificate renewal refused", agent_id=agent_id, peer=peer,
                        error=str(e))
            return pb.RenewResponse(error=str(e))
        serial = format(new.serial_number, "x")
        self.store.set_certificate(agent_id, serial=serial,
                                   expires=new.not_valid_after_utc.timestamp())
        log.info("agent certificate renewed", agent_id=agent_id, peer=peer,
                 old_serial=format(cert.serial_number, "x"), serial=serial,
                 not_after=new.not_valid_after_utc.isoformat())
        return pb.RenewResponse(certificate_pem=pem(new))


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def _matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    try:
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        return False
    return bool(key.public_key() == cert.public_key())


def ensure_server_certificate(pki_dir: Path, ca: CertificateAuthority, *,
                              renew_before: dt.timedelta,
                              now: dt.datetime | None = None) -> bool:
    """Re-issue server.crt/server.key when the certificate expires within
    ``renew_before``, was not signed by ``ca``, or does not match its key. Returns
    whether it did. The key is replaced first, then the certificate (each atomically);
    a crash between the two leaves a mismatch that the next start repairs."""
    now = now or dt.datetime.now(dt.UTC)
    crt_path, key_path = pki_dir / "server.crt", pki_dir / "server.key"
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        key_pem = key_path.read_bytes()
    except (OSError, ValueError) as e:
        raise PkiError(f"{crt_path}: cannot load the server certificate: {e}") from e
    reason = ""
    if cert.not_valid_after_utc - now < renew_before:
        reason = f"expires {cert.not_valid_after_utc.isoformat()}"
    elif cert.issuer != ca.cert.subject:
        reason = "not issued by this collector's CA"
    elif not _matches(cert, key_pem):
        reason = "does not match server.key"
    if not reason:
        return False
    names = _names(cert) or ["localhost", "127.0.0.1"]
    # the common name first, as init wrote it
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    first = str(cn[0].value) if cn else ""
    if first in names:
        names.remove(first)
        names.insert(0, first)
    new, new_key = ca.issue_server(names)
    for path, data, private in ((key_path, new_key, True), (crt_path, pem(new), False)):
        tmp = path.with_name(path.name + ".new")
        if private:
            write_private(tmp, data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    log.info("server certificate re-issued", reason=reason, names=names,
             not_after=new.not_valid_after_utc.isoformat())
    return True


def expiry_warnings(pki_dir: Path, store: Store | None, *,
                    now: dt.datetime | None = None,
                    within: dt.timedelta = WARN_BEFORE) -> list[str]:
    """One line per certificate (CA, server, agents) that expires within ``within``."""
    now = now or dt.datetime.now(dt.UTC)
    warnings: list[str] = []

    def check(what: str, not_after: dt.datetime) -> None:
        left = not_after - now
        if left < within:
            when = ("expired" if left.total_seconds() <= 0
                    else f"expires in {left.days} days" if left.days else "expires today")
            warnings.append(f"{what} {when} ({not_after.strftime('%Y-%m-%d %H:%M:%SZ')})")

    for name, what in (("ca.crt", "CA certificate"), ("server.crt", "server certificate")):
        try:
            cert = x509.load_pem_x509_certificate((pki_dir / name).read_bytes())
        except (OSError, ValueError) as e:
            warnings.append(f"{what} unreadable: {pki_dir / name}: {e}")
            continue
        check(what, cert.not_valid_after_utc)
    if store is not None:
        for agent in store.agents():
            if agent.cert_expires is not None and not agent.revoked:
                check(f"agent {agent.agent_id} ({agent.hostname}) certificate",
                      dt.datetime.fromtimestamp(agent.cert_expires, dt.UTC))
    return warnings



def configured_ca(ca: CertificateAuthority, config: PkiConfig) -> CertificateAuthority:
    """The CA with the configured certificate lifetimes."""
    agent = dt.timedelta(seconds=config.agent_lifetime)
    if config.test_agent_lifetime is not None:
        log.warning("pki.test_agent_lifetime is set: for tests only",
                    seconds=config.test_agent_lifetime)
        agent = dt.timedelta(seconds=max(1.0, config.test_agent_lifetime))
    return dataclasses.replace(ca, agent_validity=agent,
                               server_validity=dt.timedelta(seconds=config.server_lifetime))
