"""The metrics HTTP server: ``GET /metrics`` only, from a registry of ours.

Not prometheus_client's ``start_http_server``: its threading server starts one thread per
connection without a bound. Here at most ``max_connections`` requests are served at once
(one more is closed at once, never queued); a socket is let go when silent for
``timeout`` seconds and every connection ends within twice that, so a slow or flooding
client costs at most those few threads (and timers), never the collector's gRPC budgets.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from common.logs import get_logger

log = get_logger("sisguard.collector.metrics")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 5.0          # a socket timeout: a silent client is let go
    protocol_version = "HTTP/1.0"   # one request per connection

    def setup(self) -> None:
        super().setup()
        # and a deadline for the whole connection: a client that trickles a byte now
        # and then never meets the socket timeout, it meets this
        self._deadline = threading.Timer(2 * self.timeout, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        try:
            body = generate_latest(self.server.registry)
        except Exception:
            log.exception("metrics not rendered")
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass   # one line per scrape would be noise; errors are logged where they happen


class MetricsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """``GET /metrics`` with at most ``max_connections`` requests served at once."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, *,
                 max_connections: int, timeout: float) -> None:
        self.registry = registry
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        handler = type("Handler", (_Handler,), {"timeout": timeout})
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self._thread: threading.Thread | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)   # over the budget: closed, never queued
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="metrics",
                                        kwargs={"poll_interval": 0.5}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
