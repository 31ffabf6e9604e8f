"""The chain a TLS server presents, read both ways (the ssl module's, and off the wire)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import tlschain


def _cert(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
          signer: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, list[bytes]]]:
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = _cert("test CA", "test CA", ca_key, ca_key, ca=True)
    leaf = _cert("localhost", "test CA", leaf_key, ca_key, ca=False)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                      + ca.public_bytes(serialization.Encoding.PEM))
    key = tmp_path / "key.pem"
    key.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], [leaf.public_bytes(serialization.Encoding.DER),
                                      ca.public_bytes(serialization.Encoding.DER)]
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_presented_chain_is_leaf_then_ca(server: tuple[int, list[bytes]]) -> None:
    port, expected = server
    assert tlschain.presented_chain("127.0.0.1", port) == expected


def test_the_tls12_wire_reading_gives_the_same_chain(server: tuple[int, list[bytes]]) -> None:
    port, expected = server
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert tlschain._chain_over_tls12(context, sock, "127.0.0.1") == expected


def test_records_without_a_certificate_or_truncated_say_so() -> None:
    with pytest.raises(tlschain.ChainError):
        tlschain.certificates_in_records(b"")
    hello_only = bytes([22, 3, 3, 0, 8, 2, 0, 0, 4, 0, 0, 0, 0])
    with pytest.raises(tlschain.ChainError):
        tlschain.certificates_in_records(hello_only)
    truncated = bytes([22, 3, 3, 0, 10, 11, 0, 0, 6, 0, 0, 9, 0, 0, 200])
    with pytest.raises(tlschain.ChainError):
        tlschain.certificates_in_records(truncated)
