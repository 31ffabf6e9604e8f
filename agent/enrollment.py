"""Enrollment: make a key here, send a CSR with the token, pin the collector's CA.

The agent knows only the CA's fingerprint (given by the operator). It reads the chain
the collector presents in the TLS handshake, keeps the certificate whose SHA-256
fingerprint is the pinned one, and talks to the collector only through a channel that
trusts that CA alone: a man in the middle cannot see the token.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import ssl

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import __version__
from agent.identity import Identity
from agent.tlschain import ChainError, presented_chain
from common.errors import SisguardError
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc


class EnrollmentError(SisguardError):
    """Enrollment was refused or could not be done."""


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise EnrollmentError(f"collector address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def fetch_pinned_ca(address: str, fingerprint: str, *, timeout: float = 10.0) -> bytes:
    """The PEM of the CA in the collector's TLS chain whose fingerprint is ``fingerprint``."""
    want = fingerprint.lower().removeprefix("sha256:").replace(":", "")
    host, port = split_address(address)
    try:
        # nothing is trusted yet: the chain is read unverified, and pinned below
        chain = presented_chain(host, port, timeout=timeout)
    except (OSError, ChainError) as e:
        raise EnrollmentError(f"cannot reach the collector at {address}: {e}") from e
    seen = []
    for der in chain:
        digest = hashlib.sha256(der).hexdigest()
        seen.append(digest)
        if digest == want:
            return ssl.DER_cert_to_PEM_cert(der).encode()
    raise EnrollmentError(
        f"CA fingerprint mismatch: the collector at {address} presented "
        f"{', '.join('sha256:' + s[:16] + '...' for s in seen) or 'no certificate'}, "
        f"not sha256:{want}: refusing to enroll")


def make_key_and_csr(key_path: os.PathLike[str]) -> bytes:
    """A new EC P-256 key written 0600 (never sent anywhere) and its CSR."""
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                       socket.gethostname())]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def enrollment_address(events_address: str, enroll_port: int | None) -> str:
    """The collector serves enrollment on its events port + 1 unless told otherwise."""
    host, port = split_address(events_address)
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{enroll_port or port + 1}"


def enroll(*, collectors: list[str], token: str, ca_fingerprint: str,
           state_dir: os.PathLike[str], hostname: str | None = None,
           enroll_port: int | None = None) -> Identity:
    from pathlib import Path

    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    primary = enrollment_address(collectors[0], enroll_port)
    ca_pem = fetch_pinned_ca(primary, ca_fingerprint)
    paths = Identity.paths(state)
    csr = make_key_and_csr(paths["agent.key"])
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(primary, creds) as channel:
        stub = pb_grpc.EnrollmentStub(channel)
        try:
            reply = stub.Enroll(pb.EnrollRequest(
                token=token, csr_pem=csr, hostname=hostname or socket.gethostname(),
                agent_version=__version__, os=f"{platform.system()} {platform.release()}",
            ), timeout=30)
        except grpc.RpcError as e:
            paths["agent.key"].unlink(missing_ok=True)
            detail = e.details() if hasattr(e, "details") else str(e)
            raise EnrollmentError(f"enrollment refused by {primary}: {detail}") from e
    paths["agent.crt"].write_bytes(reply.certificate_pem)
    paths["ca.crt"].write_bytes(reply.ca_pem)
    identity = Identity(agent_id=reply.agent_id, organization=reply.organization,
                        collectors=tuple(collectors), ca_fingerprint=ca_fingerprint)
    identity.save(state)
    return identity
