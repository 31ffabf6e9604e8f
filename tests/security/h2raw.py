"""Raw HTTP/2 clients that play attackers against the collector's gRPC ports.

``RawH2`` is one TLS connection (ALPN h2) from a chosen loopback source address, with an
optional client certificate; it answers the server's SETTINGS (and, if told, its PINGs)
like a well-behaved peer, and records what the server does: streams it ends, GOAWAYs
and their error codes, the connection's close. ``SlowLoris`` opens many of them, each
with many gRPC calls that send their HEADERS and never the request message. No gRPC
library is involved: the attack is the bytes on the wire.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ENHANCE_YOUR_CALM = 0xB


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def grpc_headers(path: str, authority: str) -> bytes:
    return b"".join(_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "https"), (":path", path),
        (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")))


def client_context(cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE   # the attacker needs no trust, only the port
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


@dataclass
class RawH2:
    host: str
    port: int
    source: str = "127.0.0.1"
    context: ssl.SSLContext = field(default_factory=client_context)
    answer_pings: bool = True
    ended: set[int] = field(default_factory=set)     # streams the server ended
    goaway_codes: list[int] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)   # by the server
    _stop: threading.Event = field(default_factory=threading.Event)
    _tls: ssl.SSLSocket | None = None
    _thread: threading.Thread | None = None

    def connect(self, *, calls: int = 0, path: str = "", pings: int = 0) -> RawH2:
        """Connect and send, in one write: the preface, ``calls`` gRPC calls to ``path``
        (HEADERS only: never a message, never END_STREAM) and ``pings`` PINGs. Then only
        the reader thread uses the socket (an SSL socket is not for two threads)."""
        raw = socket.create_connection((self.host, self.port), timeout=10,
                                       source_address=(self.source, 0))
        self._tls = self.context.wrap_socket(raw, server_hostname="localhost")
        block = grpc_headers(path, f"localhost:{self.port}")
        frames = [PREFACE, frame(SETTINGS, 0, 0)]
        frames += [frame(HEADERS, END_HEADERS, 2 * i + 1, block) for i in range(calls)]
        frames += [frame(PING, 0, 0, i.to_bytes(8, "big")) for i in range(pings)]
        self._tls.sendall(b"".join(frames))
        self._tls.settimeout(0.5)
        self._thread = threading.Thread(target=self._read, daemon=True, name="rawh2")
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._tls is not None
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._tls.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload = buffer[9:9 + length]
                buffer = buffer[9 + length:]
                self._on_frame(kind, flags, stream, payload)
        if not self._stop.is_set():
            self.closed.set()

    def _on_frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        assert self._tls is not None
        with contextlib.suppress(OSError):
            if kind == SETTINGS and not flags & ACK:
                self._tls.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK and self.answer_pings:
                self._tls.sendall(frame(PING, ACK, 0, payload))
        if kind == GOAWAY and len(payload) >= 8:
            self.goaway_codes.append(int.from_bytes(payload[4:8], "big"))
        if stream and (kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM)):
            self.ended.add(stream)

    def close(self) -> None:
        self._stop.set()
        if self._tls is not None:
            with contextlib.suppress(OSError):
                self._tls.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class SlowLoris:
    host: str
    port: int
    source: str                   # e.g. "127.0.0.2": the attacker's own address
    connections: int = 33
    streams_per_connection: int = 16
    path: str = "/sisguard.v1.Enrollment/Enroll"
    _conns: list[RawH2] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(self.connections):
            self._conns.append(RawH2(self.host, self.port, self.source).connect(
                calls=self.streams_per_connection, path=self.path))

    @property
    def opened(self) -> int:
        return len(self._conns) * self.streams_per_connection

    @property
    def closed(self) -> int:
        return sum(len(c.ended) for c in self._conns)

    def stop(self) -> None:
        for conn in self._conns:
            conn.close()
