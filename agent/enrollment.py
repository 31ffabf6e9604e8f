"""Enrollment: make a key here, send a CSR with the token, pin the collector's CA.

The agent knows only the CA's fingerprint (given by the operator). It reads the chain
the collector presents in the TLS handshake, keeps the certificate whose SHA-256
fingerprint is the pinned one, and talks to the collector only through a channel that
trusts that CA alone: a man in the middle cannot see the token. The CA it stores is the
pinned one; the reply must name that CA and carry a certificate it signed for our key,
or nothing is stored.

The token is a secret: it is read from a file, the environment or stdin
(``enrollment_token``); on the command line it is visible to every local user.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import ssl
import stat
import sys
from collections.abc import Mapping
from typing import IO

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
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


TOKEN_ENV = "SISGUARD_ENROLL_TOKEN"
MAX_TOKEN_BYTES = 4096
CMDLINE_WARNING = (
    "warning: a token given as '--token VALUE' is visible to every local user "
    "(/proc/PID/cmdline, ps) while enrollment runs; use --token-file FILE, "
    f"{TOKEN_ENV}=... or '--token -' (stdin)")


def _clean_token(raw: bytes, where: str) -> str:
    if len(raw) > MAX_TOKEN_BYTES:
        raise EnrollmentError(f"{where}: more than {MAX_TOKEN_BYTES} bytes: not a token")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise EnrollmentError(f"{where}: the token is not ASCII text") from e
    if not token or any(c.isspace() for c in token):
        raise EnrollmentError(f"{where}: expected one token on one line")
    return token


def enrollment_token(*, flag: str | None, file: str | None, environ: Mapping[str, str],
                     stdin: IO[bytes], warn: IO[str] = sys.stderr) -> str:
    """The enrollment token from exactly one source: --token-file FILE, '--token -'
    (stdin), --token VALUE (works, with a warning), or the environment variable."""
    if flag is not None and file is not None:
        raise EnrollmentError("give the token once: --token or --token-file, not both")
    if file is not None:
        try:
            fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise EnrollmentError(f"--token-file {file}: {e.strerror}") from e
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise EnrollmentError(f"--token-file {file}: not a regular file")
            if info.st_mode & 0o077:
                print(f"warning: --token-file {file} is readable by others "
                      f"(mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it", file=warn)
            raw = f.read(MAX_TOKEN_BYTES + 1)
        return _clean_token(raw, f"--token-file {file}")
    if flag == "-":
        return _clean_token(stdin.read(MAX_TOKEN_BYTES + 1), "--token - (stdin)")
    if flag is not None:
        print(CMDLINE_WARNING, file=warn)
        return _clean_token(flag.encode("utf-8", "surrogateescape"), "--token")
    value = environ.get(TOKEN_ENV)
    if value is not None:
        return _clean_token(value.encode("utf-8", "surrogateescape"), TOKEN_ENV)
    raise EnrollmentError(f"no enrollment token: give --token-file FILE, '--token -' "
                          f"(stdin) or set {TOKEN_ENV}")


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


def check_reply(reply: pb.EnrollResponse, *, pinned_ca_pem: bytes,
                key_pem_path: os.PathLike[str]) -> None:
    """Refuse a reply whose CA chain does not lead to the pinned CA, or whose certificate
    that chain did not sign for our key: we store only what we pinned and what it vouches
    for. The chain is the collector's CA, or (offline-CA mode) its intermediate then the
    root; the pinned one must be in it and every link signed by the next."""
    pinned = x509.load_pem_x509_certificate(pinned_ca_pem)
    pinned_der = pinned.public_bytes(serialization.Encoding.DER)
    try:
        offered = x509.load_pem_x509_certificates(reply.ca_pem)
    except ValueError as e:
        raise EnrollmentError(f"the enrollment reply's CA is not valid PEM: {e}") from e
    ders = [c.public_bytes(serialization.Encoding.DER) for c in offered]
    if pinned_der not in ders[:MAX_CHAIN]:
        got = [hashlib.sha256(d).hexdigest()[:16] for d in ders]
        raise EnrollmentError(
            "the enrollment reply names another CA than the pinned one "
            f"({', '.join('sha256:' + g + '...' for g in got) or 'none'}): refusing it")
    path = offered[:ders.index(pinned_der) + 1]   # from the issuing CA up to the pinned one
    try:
        cert = x509.load_pem_x509_certificate(reply.certificate_pem)
    except ValueError as e:
        raise EnrollmentError(f"the enrollment reply's certificate is not valid PEM: {e}") from e
    for child, issuer in zip([cert, *path[:-1]], path):
        _check_signed_by(child, issuer)
    with open(key_pem_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(serialization.Encoding.DER, spki)
            != key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise EnrollmentError("the enrollment reply's certificate is not for our key")


MAX_CHAIN = 4   # CA certificates in a reply: the CA, or an intermediate and its root


def _check_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """``child`` is signed by ``issuer``, a CA (EC keys: what sisguard's PKI makes)."""
    key = issuer.public_key()
    try:
        is_ca = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if child.issuer != issuer.subject or not is_ca or not isinstance(
            key, ec.EllipticCurvePublicKey):
        raise EnrollmentError("the enrollment reply's certificate is not issued by the "
                              "pinned CA")
    hash_algorithm = child.signature_hash_algorithm
    if hash_algorithm is None:
        raise EnrollmentError("the enrollment reply's certificate has no signature hash")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    except InvalidSignature as e:
        raise EnrollmentError("the enrollment reply's certificate is not signed by the "
                              "pinned CA") from e


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
    try:
        check_reply(reply, pinned_ca_pem=ca_pem, key_pem_path=paths["agent.key"])
    except EnrollmentError as e:
        paths["agent.key"].unlink(missing_ok=True)
        raise EnrollmentError(f"{primary}: {e}") from e
    paths["agent.crt"].write_bytes(reply.certificate_pem)
    paths["ca.crt"].write_bytes(ca_pem)   # the CA we pinned, not what the reply says
    identity = Identity(agent_id=reply.agent_id, organization=reply.organization,
                        collectors=tuple(collectors), ca_fingerprint=ca_fingerprint)
    identity.save(state)
    return identity
