"""Elasticsearch credentials from a file or the environment reach Elasticsearch, and
nothing else: not the log, not /proc/PID/cmdline, not the health file.

A real collector ships to a real engine through a small forwarding proxy (in this
process) that records the Authorization headers it sees.
"""

from __future__ import annotations

import base64
import http.client
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from elasticsearch import Elasticsearch

from tests.harness import Collector, wait_for
from tests.search import engine_urls, need_engine

pytestmark = pytest.mark.service
Factory = Callable[..., Collector]
HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream)
        self.authorizations: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: Recorder

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "Authorization" in self.headers:
            self.server.authorizations.append(self.headers["Authorization"])
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers={
                k: v for k, v in self.headers.items()
                if k.lower() not in HOP and k.lower() != "authorization"})
            reply = conn.getresponse()
            data = reply.read()
        finally:
            conn.close()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    urls = [u for u in engine_urls() if u]
    if not urls:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    server = Recorder(urls[0])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    client = Elasticsearch(urls[0], request_timeout=30)
    client.indices.delete(index="tsec*", ignore_unavailable=True, allow_no_indices=True)
    # a pattern that matches no template answers 404 (a test may have made none)
    found = client.options(ignore_status=404).indices.get_index_template(name="tsec*")
    for name in found.get("index_templates", []):
        client.options(ignore_status=404).indices.delete_index_template(name=name["name"])
    client.close()


def _secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def _run(collector_factory: Factory, tmp_path: Path, recorder: Recorder,
         *flags: str, es_extra: str = "") -> Collector:
    config = tmp_path / "collector-test.yml"
    config.write_text(f"elasticsearch:\n  url: [{recorder.url}]\n"
                      f"  index_prefix: tsec{uuid.uuid4().hex[:8]}\n{es_extra}"
                      "archive:\n  enabled: false\n")
    return collector_factory("--config", str(config), *flags)


def _nowhere_but_the_wire(collector: Collector, secret: str) -> None:
    assert collector.proc is not None and collector.proc.popen is not None
    cmdline = Path(f"/proc/{collector.proc.popen.pid}/cmdline").read_bytes()
    assert secret.encode() not in cmdline
    wait_for(lambda: (collector.data_dir / "health.json").exists(), timeout=10,
             message="the health file")
    assert secret not in (collector.data_dir / "health.json").read_text()
    assert secret not in collector.proc.since(0)


def test_api_key_from_a_file_is_sent_and_shown_nowhere(
        collector_factory: Factory, recorder: Recorder, tmp_path: Path) -> None:
    secret = "c2lzZ3VhcmQtdGVzdC1rZXktZmlsZQ=="
    key_file = _secret_file(tmp_path, "es-api-key", secret)
    collector = _run(collector_factory, tmp_path, recorder, "--es-api-key-file", str(key_file))
    wait_for(lambda: f"ApiKey {secret}" in recorder.authorizations, timeout=30,
             message="the API key on the wire to Elasticsearch")
    _nowhere_but_the_wire(collector, secret)


def test_password_from_the_environment_is_sent_and_shown_nowhere(
        collector_factory: Factory, recorder: Recorder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("SISGUARD_ES_PASSWORD", secret)   # inherited by the collector
    collector = _run(collector_factory, tmp_path, recorder, es_extra="  username: sisguard\n")
    basic = "Basic " + base64.b64encode(f"sisguard:{secret}".encode()).decode()
    wait_for(lambda: basic in recorder.authorizations, timeout=30,
             message="the password on the wire to Elasticsearch")
    _nowhere_but_the_wire(collector, secret)
