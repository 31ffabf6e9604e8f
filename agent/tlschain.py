"""The certificate chain a TLS server presents, before trusting it (for CA pinning).

Enrollment must see the collector's whole chain to find the CA whose fingerprint the
operator gave. Python exposes the chain only from 3.10 on (privately until 3.13); on older
Pythons this module reads it off the wire instead: it makes a TLS 1.2 handshake (whose
Certificate message travels in clear, unlike TLS 1.3's) through memory buffers, keeps the
bytes the server sent, and parses the handshake records. Nothing here verifies anything:
the caller compares fingerprints and then makes a verified connection.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

MAX_HANDSHAKE_BYTES = 256 * 1024   # a server's first flight; far more than any chain
_HANDSHAKE = 22
_CERTIFICATE = 11


class ChainError(Exception):
    """The server's chain could not be read."""


def presented_chain(host: str, port: int, *, timeout: float = 10.0,
                    connect: Callable[..., socket.socket] = socket.create_connection
                    ) -> list[bytes]:
    """The DER certificates ``host:port`` presents, leaf first."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE   # only to read the chain: nothing is sent on it
    context.set_alpn_protocols(["h2"])    # as a gRPC client would
    with connect((host, port), timeout=timeout) as sock:
        if SSL_KEEPS_CHAIN:
            return _chain_from_socket(context, sock, host)
        return _chain_over_tls12(context, sock, host)


# Python 3.10+ keeps the chain (public as SSLSocket.get_unverified_chain from 3.13 on)
SSL_KEEPS_CHAIN = hasattr(getattr(ssl, "_ssl")._SSLSocket,  # noqa: B009
                          "get_unverified_chain")


def _chain_from_socket(context: ssl.SSLContext, sock: socket.socket,
                       host: str) -> list[bytes]:
    with context.wrap_socket(sock, server_hostname=host) as tls:
        chain = getattr(tls, "_sslobj").get_unverified_chain()  # noqa: B009
        return [_der(cert) for cert in chain or []]


def _der(cert: object) -> bytes:
    if isinstance(cert, bytes):
        return cert
    encode = getattr(cert, "public_bytes")   # noqa: B009 - _ssl.Certificate (3.10+)
    return bytes(encode(getattr(ssl, "_ssl").ENCODING_DER))  # noqa: B009


def _chain_over_tls12(context: ssl.SSLContext, sock: socket.socket,
                      host: str) -> list[bytes]:
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    received = bytearray()
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                sock.sendall(pending)
            data = sock.recv(65536)
            if not data:
                raise ChainError("the server closed the connection during the handshake") \
                    from None
            if len(received) < MAX_HANDSHAKE_BYTES:
                received += data[:MAX_HANDSHAKE_BYTES - len(received)]
            incoming.write(data)
        except ssl.SSLError as e:
            raise ChainError(f"TLS 1.2 handshake failed: {e}") from e
    pending = outgoing.read()
    if pending:
        sock.sendall(pending)
    return certificates_in_records(bytes(received))


def certificates_in_records(data: bytes) -> list[bytes]:
    """The certificates of the first Certificate message in a server's TLS 1.2 records."""
    handshake = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        kind, length = data[pos], int.from_bytes(data[pos + 3:pos + 5], "big")
        if kind != _HANDSHAKE:
            break   # ChangeCipherSpec or later: what follows is encrypted
        handshake += data[pos + 5:pos + 5 + length]
        pos += 5 + length
    pos = 0
    while pos + 4 <= len(handshake):
        kind, length = handshake[pos], int.from_bytes(handshake[pos + 1:pos + 4], "big")
        body = handshake[pos + 4:pos + 4 + length]
        if len(body) < length:
            break
        if kind == _CERTIFICATE:
            return _certificate_list(bytes(body))
        pos += 4 + length
    raise ChainError("no Certificate message in the server's handshake")


def _certificate_list(body: bytes) -> list[bytes]:
    if len(body) < 3:
        raise ChainError("truncated Certificate message")
    total = int.from_bytes(body[:3], "big")
    certs, pos, end = [], 3, min(len(body), 3 + total)
    while pos + 3 <= end:
        length = int.from_bytes(body[pos:pos + 3], "big")
        if pos + 3 + length > end:
            raise ChainError("truncated certificate in the Certificate message")
        certs.append(body[pos + 3:pos + 3 + length])
        pos += 3 + length
    return certs
