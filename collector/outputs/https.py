"""Export to a SOC over HTTPS: batched POSTs of NDJSON (one ECS document per line).

NDJSON rather than a JSON array: a receiver (Logstash ``http`` input with the
``json_lines`` codec, Vector, Fluent Bit, a SIEM's HTTP collector) can stream it line by
line, and one bad line does not make the rest unreadable. Each document carries its
``event.id`` (the record's id, set when it is queued) so that the receiver
dedupes a resend; the ``Idempotency-Key`` header is the batch's first and last id.

Statuses (as libbeat's Elasticsearch client treats bulk items):

* 2xx: the whole batch is taken; 409 too (a duplicate is done).
* 408, 425, 429, 5xx, a timeout or a broken connection: retried with backoff.
* 413: the batch is split in two and each half sent on its own; a single record that is
  still too large is refused for good.
* 400, 415, 422 (the content): split likewise down to the one record the receiver
  refuses, which is refused for good (counted as rejected, logged with its id).
* any other 4xx (401, 403, 404, ...: the credentials or the URL, which the SOC can fix):
  retried with backoff and logged, never dropped: a rotated token must not lose alerts.

Authentication: a bearer token read from ``token_file`` (never from the config text, the
command line or a log line; re-read on every connection, so it can be rotated), and/or
a client certificate (mTLS). ``ca`` is the receiver's CA.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from collector.outputs.diskqueue import Item
from collector.outputs.forwarder import (
    Delivery,
    DeliveryFailed,
    FilterConfig,
    QueueConfig,
    QueuedOutput,
    client_tls,
)
from collector.outputs.registry import OutputContext, register
from common.errors import ConfigError
from common.yamlconf import Duration

RETRIED = frozenset({408, 425, 429})
CONTENT_REFUSED = frozenset({400, 413, 415, 422})
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True)
class HttpsConfig:
    url: str = ""                       # https://soc.example.gov.vn/ingest
    ca: Path | None = None              # the receiver's CA (PEM); default: the system's
    cert: Path | None = None            # client certificate (mTLS)
    key: Path | None = None
    token_file: Path | None = None      # a file holding the bearer token (0600)
    timeout: Duration = Duration(30.0)  # of one request
    headers: dict[str, str] = field(default_factory=dict)   # extra, e.g. a tenant name
    filter: FilterConfig = field(default_factory=FilterConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise TypeError(f"url must be https://HOST[:PORT]/PATH, got {self.url!r}")
        if (self.cert is None) != (self.key is None):
            raise TypeError("give both cert and key, or neither")
        for name, value in self.headers.items():
            if name.lower() in ("authorization", "content-type", "content-length", "host"):
                raise TypeError(f"headers: {name} is set by sisguard")
            if any(c in name + value for c in "\r\n"):
                raise TypeError(f"headers: {name}: no line breaks")


def read_token(path: Path) -> str:
    try:
        data = path.read_bytes()[:MAX_TOKEN_BYTES + 1]
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the bearer token: {e.strerror}") from e
    token = data.decode("ascii", "replace").strip()
    if not token or len(data) > MAX_TOKEN_BYTES or any(c in token for c in "\r\n\0"):
        raise ConfigError(f"{path}: not a bearer token (one line of at most "
                          f"{MAX_TOKEN_BYTES} bytes)")
    return token


@register("https", HttpsConfig)
class HttpsOutput(QueuedOutput):
    def __init__(self, name: str, config: HttpsConfig, context: OutputContext) -> None:
        super().__init__(name, queue=config.queue, filter=config.filter, context=context)
        self.config = config
        parts = urllib.parse.urlsplit(config.url)
        self._host = parts.hostname or ""
        self._port = parts.port or 443
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls = client_tls(f"outputs.{name}", ca=config.ca, cert=config.cert,
                               key=config.key)
        self._conn: http.client.HTTPSConnection | None = None
        self._token: str | None = None
        if config.token_file is not None:
            self._token = read_token(config.token_file)   # a bad file fails at start

    def type_name(self) -> str:
        return "https"

    def disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def deliver(self, items: list[Item]) -> Delivery:
        done = Delivery()
        self._send(items, done)
        return done

    # internals
    def _send(self, items: list[Item], done: Delivery) -> None:
        """Post ``items``; split on a content refusal until the refused record is alone
        (at most log2(batch) levels). Raises DeliveryFailed for what must be retried,
        keeping what was taken before in ``done``."""
        status, reason = self._post(items)
        if 200 <= status < 300 or status == 409:
            done.taken.extend(items)
            return
        if status in CONTENT_REFUSED:
            if len(items) == 1:
                done.refused.append((items[0], f"HTTP {status} {reason}"))
                return
            half = len(items) // 2
            for part in (items[:half], items[half:]):
                try:
                    self._send(part, done)
                except DeliveryFailed:
                    if done.taken or done.refused:
                        return       # what was taken leaves the queue; the rest is retried
                    raise
            return
        raise DeliveryFailed(f"{self._where()}: HTTP {status} {reason}"
                             + ("" if status >= 500 or status in RETRIED else
                                " (the URL or the credentials? retried, never dropped)"))

    def _where(self) -> str:
        return f"https://{self._host}:{self._port}{self._path}"

    def _post(self, items: list[Item]) -> tuple[int, str]:
        # each body is one line already: compact JSON, event.id set (forwarder.with_id)
        body = b"".join(i.body + b"\n" for i in items)
        headers = {"Content-Type": "application/x-ndjson", **self.config.headers,
                   "Idempotency-Key": f"{items[0].id}..{items[-1].id}"}
        # a kept-alive connection the receiver closed meanwhile fails at once: try once
        # more on a new one before calling it an outage
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                response.read(64 * 1024)        # a bounded read of the answer
                status, reason = response.status, str(response.reason)[:200]
                if response.will_close or not response.isclosed():
                    self.disconnect()
                return status, reason
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as e:
                self.disconnect()
                if reused and attempt == 1:
                    continue
                raise DeliveryFailed(f"{self._where()}: {type(e).__name__}: {e}") from e
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                self.disconnect()
                raise DeliveryFailed(f"{self._where()}: {type(e).__name__}: {e}") from e
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            if self.config.token_file is not None:
                try:
                    self._token = read_token(self.config.token_file)
                except ConfigError as e:    # keep the last good one; say so
                    self.last_error = str(e)
            self._conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=float(self.config.timeout),
                context=self._tls)
        return self._conn
