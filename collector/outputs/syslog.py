"""Export to a SOC's syslog receiver: RFC 5424 messages, octet-counted (RFC 6587 3.4.1)
over TCP, or over TLS (RFC 5425: the same framing), payload JSON or CEF (cef.py).

Each message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID - PAYLOAD`` where PRI is
``facility * 8 + level`` (level from ``event.severity``), TIMESTAMP the time it is sent,
HOSTNAME the record's ``host.name`` (printable ASCII only, else ``-``), MSGID ``alert``
or ``event``. The payload never holds a line break (JSON escapes it, CEF escapes it), so
even a receiver that splits on newlines instead of counting octets sees one message.

Syslog has no acknowledgement. A batch leaves the queue only when the receiver's TCP
has acknowledged every byte of it (``TIOCOUTQ`` reaches 0 on Linux) and the connection
is still open (a receiver that closes or resets it is readable): anything sent into a
dying connection is sent again on the next one, so a record may arrive twice (the
receiver dedupes by ``event.id`` / CEF ``externalId``), never zero times, except when
the receiver itself crashes after its TCP acknowledged the bytes (only RELP closes that
gap; see docs/export.md).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import select
import socket
import ssl
import struct
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.outputs.cef import CefConfig, format_cef
from collector.outputs.diskqueue import Item
from collector.outputs.forwarder import (
    Delivery,
    DeliveryFailed,
    FilterConfig,
    QueueConfig,
    QueuedOutput,
    client_tls,
    dumps,
)
from collector.outputs.registry import OutputContext, register
from common.yamlconf import Duration, Size

_PRINTABLE = frozenset(range(33, 127))


class Payload(enum.Enum):
    JSON = "json"
    CEF = "cef"


@dataclass(frozen=True)
class SyslogTls:
    ca: Path | None = None            # the receiver's CA (PEM); default: the system's
    cert: Path | None = None          # a client certificate, when the receiver asks
    key: Path | None = None           # its key (0600)
    server_name: str | None = None    # the name its certificate must carry (default: host)

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TypeError("tls: give both cert and key, or neither")


@dataclass(frozen=True)
class SyslogConfig:
    host: str = ""
    port: int = 6514
    tls: SyslogTls | None = None      # absent: plain TCP (a private link only)
    payload: Payload = Payload.JSON
    cef: CefConfig = field(default_factory=CefConfig)
    facility: int = 13                # log audit (RFC 5424 table 1)
    app_name: str = "sisguard"
    max_message_bytes: Size = Size(64 * 1024)   # the receiver's limit (rsyslog: maxMessageSize)
    connect_timeout: Duration = Duration(10.0)
    send_timeout: Duration = Duration(30.0)     # to write a batch and have it acknowledged
    filter: FilterConfig = field(default_factory=FilterConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)

    def __post_init__(self) -> None:
        if not self.host:
            raise TypeError("host is required")
        if not 0 < self.port < 65536:
            raise TypeError(f"port must be 1 to 65535, got {self.port}")
        if not 0 <= self.facility <= 23:
            raise TypeError(f"facility must be 0 to 23, got {self.facility}")
        if not self.app_name or len(self.app_name) > 48 or not all(
                ord(c) in _PRINTABLE for c in self.app_name):
            raise TypeError("app_name: 1 to 48 printable ASCII characters, no space")
        if self.max_message_bytes < 480:   # every receiver must take 480 (RFC 5424 6.1)
            raise TypeError("max_message_bytes must be at least 480")


def syslog_level(severity: Any) -> int:
    """ECS ``event.severity`` -> syslog level: 99 crit, 73 err, 47 warning, 21 notice,
    else info."""
    if not isinstance(severity, int) or isinstance(severity, bool):
        return 6
    for floor, level in ((90, 2), (70, 3), (40, 4), (20, 5)):
        if severity >= floor:
            return level
    return 6


def header_token(value: Any, limit: int) -> str:
    """A header field of RFC 5424: printable US-ASCII, no space, or NILVALUE."""
    if not isinstance(value, str) or not value:
        return "-"
    data = value.encode("ascii", "replace")
    token = bytes(b if b in _PRINTABLE else 0x3F for b in data[:limit]).decode()
    return token or "-"


def format_message(config: SyslogConfig, *, doc: dict[str, Any], doc_id: str, kind: str,
                   now: float, encoded: bytes | None = None) -> bytes:
    """One RFC 5424 message; ``encoded``: ``doc`` as compact JSON already (the queue's)."""
    event = doc.get("event") if isinstance(doc.get("event"), dict) else {}
    host = doc.get("host") if isinstance(doc.get("host"), dict) else {}
    pri = config.facility * 8 + syslog_level(event.get("severity"))   # type: ignore[union-attr]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    msgid = "alert" if kind == "alerts" else "event"
    head = (f"<{pri}>1 {stamp} {header_token(host.get('name'), 255)} "  # type: ignore[union-attr]
            f"{config.app_name} - {msgid} - ").encode()
    if config.payload is Payload.CEF:
        body = format_cef(doc, doc_id=doc_id, kind=kind,
                          config=config.cef).encode("utf-8", "backslashreplace")
    else:
        body = encoded if encoded is not None else dumps(doc)
    if len(head) + len(body) > config.max_message_bytes and config.payload is Payload.JSON:
        body = dumps(summary(doc, len(body)))
    message = head + body
    if len(message) > config.max_message_bytes:
        # CEF values are capped, so this is a JSON summary still too large or a tiny
        # limit: cut at a character boundary (the receiver would cut it anyway)
        message = message[:config.max_message_bytes].decode(errors="ignore").encode()
    return message


def summary(doc: dict[str, Any], size: int) -> dict[str, Any]:
    """What a record too large for one syslog message still says (its id, rule, host)."""
    keep = ("@timestamp", "message", "event", "rule", "host", "agent", "organization")
    out = {k: doc[k] for k in keep if k in doc}
    out["sisguard"] = {"export": {"truncated": True, "bytes": size}}
    return out


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG`` (RFC 5425 4.3 for TLS)."""
    return str(len(message)).encode() + b" " + message


def unsent_bytes(sock: socket.socket) -> int | None:
    """Bytes written that the peer's TCP has not acknowledged (Linux), else None."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("i", raw)[0])


@register("syslog", SyslogConfig)
class SyslogOutput(QueuedOutput):
    def __init__(self, name: str, config: SyslogConfig, context: OutputContext) -> None:
        super().__init__(name, queue=config.queue, filter=config.filter, context=context)
        self.config = config
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLContext | None = None
        if config.tls is not None:
            self._tls = client_tls(f"outputs.{name}.tls", ca=config.tls.ca,
                                   cert=config.tls.cert, key=config.tls.key)

    def type_name(self) -> str:
        return "syslog"

    def deliver(self, items: list[Item]) -> Delivery:
        sock = self._connected()
        now = time.time()
        data = bytearray()
        sent: list[Item] = []
        refused: list[tuple[Item, str]] = []
        for item in items:
            try:
                message = format_message(self.config, doc=json.loads(item.body),
                                         doc_id=item.id, kind=item.kind, now=now,
                                         encoded=item.body)
            except (ValueError, TypeError, RecursionError) as e:  # one record: only itself
                refused.append((item, f"cannot be formatted: {e!r}"[:300]))
                continue
            data += frame(message)
            sent.append(item)
        deadline = time.monotonic() + float(self.config.send_timeout)
        try:
            sock.settimeout(float(self.config.send_timeout))
            sock.sendall(bytes(data))
            self._await_acknowledged(sock, deadline)
        except (OSError, ssl.SSLError) as e:
            raise DeliveryFailed(f"{self._where()}: {e}") from e
        return Delivery(taken=sent, refused=refused)

    def disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    # internals
    def _where(self) -> str:
        scheme = "tls" if self._tls else "tcp"
        return f"syslog {scheme}://{self.config.host}:{self.config.port}"

    def _connected(self) -> socket.socket:
        if self._sock is not None and self._closing(self._sock):
            self.disconnect()       # the receiver closed it: never write into that one
        if self._sock is None:
            try:
                raw = socket.create_connection((self.config.host, self.config.port),
                                               timeout=float(self.config.connect_timeout))
            except OSError as e:
                raise DeliveryFailed(f"{self._where()}: {e}") from e
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if self._tls is not None:
                    server_name = (self.config.tls.server_name if self.config.tls else None)
                    raw = self._tls.wrap_socket(
                        raw, server_hostname=server_name or self.config.host)
            except (OSError, ssl.SSLError) as e:
                raw.close()
                raise DeliveryFailed(f"{self._where()}: TLS: {e}") from e
            self._sock = raw
        return self._sock

    @staticmethod
    def _closing(sock: socket.socket) -> bool:
        """The receiver closed or reset the connection. A syslog receiver sends nothing
        but that (and, over TLS 1.3, session tickets, which reading consumes)."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            return sock.recv(4096) == b""       # bytes a receiver sent: ignored
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def _await_acknowledged(self, sock: socket.socket, deadline: float) -> None:
        delay = 0.0005
        while True:
            left = unsent_bytes(sock)
            if left is None or left == 0:
                break
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"{self._where()}: {left} bytes not acknowledged "
                                     f"within send_timeout")
            time.sleep(delay)      # the peer's TCP: milliseconds on a live link
            delay = min(delay * 2, 0.05)
        if self._closing(sock):
            raise DeliveryFailed(f"{self._where()}: the receiver closed the connection")
