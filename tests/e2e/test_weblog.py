"""A real nginx (Debian's) on loopback, a real agent following its access and error logs,
a real collector with SigmaHQ's web rules: attacks give their alerts once each, and a
rotation (mv + ``nginx -s reopen``) and a truncation mid-test lose and repeat nothing."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.text import unescape
from tests.ecs import problems
from tests.harness import SHARED, Agent, Collector, free_port, in_ci, port_open, wait_for
from tests.search import engine_urls, need_engine, searchable_count, when_searchable

pytestmark = pytest.mark.service

SIGMA_WEB = SHARED / "data" / "sigma" / "web"


def require(ok: object, reason: str) -> None:
    """A missing service fails in CI and skips elsewhere."""
    if not ok:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


class WebServer:
    port: int

    def get(self, target: str, *, agent: str = "Mozilla/5.0 (test)") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest("GET", target, skip_accept_encoding=True)
            conn.putheader("User-Agent", agent)
            conn.endheaders()
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def raw(self, data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass


class Nginx(WebServer):
    def __init__(self, root: Path, binary: str) -> None:
        self.dir = root
        self.binary = binary
        self.port = free_port()
        self.access = root / "logs" / "access.log"
        self.error = root / "logs" / "error.log"
        self.conf = root / "nginx.conf"
        (root / "logs").mkdir(parents=True)
        (root / "www").mkdir()
        (root / "www" / "index.html").write_text("<h1>portal</h1>\n")
        temp = root / "tmp"
        temp.mkdir()
        self.conf.write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {self.error} info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    access_log {self.access} combined;
    server {{
        listen 127.0.0.1:{self.port};
        server_name portal.test;
        root {root}/www;
        location / {{ try_files $uri $uri/ /index.html; }}
        location /static/ {{ }}
    }}
}}
""")
        self.out = open(root / "nginx.out", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([binary, "-c", str(self.conf), "-p", str(root)],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port), timeout=10,
                 message=f"nginx on {self.port}: {(root / 'nginx.out').read_text()}")

    def reopen(self) -> None:
        subprocess.run([self.binary, "-c", str(self.conf), "-p", str(self.dir), "-s",
                        "reopen"], check=True, capture_output=True, timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.out.close()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                       else None)
    require(binary, "nginx missing: apt-get install nginx-light")
    assert binary is not None
    server = Nginx(tmp_path / "nginx", binary)
    try:
        yield server
    finally:
        server.stop()


class Apache(WebServer):
    """Debian's apache2 with a minimal config of its own (workers as nobody: Apache
    refuses to serve as root), combined access log and an error log at info."""

    def __init__(self, root: Path, binary: str) -> None:
        self.port = free_port()
        self.access = root / "logs" / "access.log"
        self.error = root / "logs" / "error.log"
        (root / "logs").mkdir(parents=True)
        (root / "www").mkdir()
        (root / "www" / "index.html").write_text("<h1>portal</h1>\n")
        modules = "/usr/lib/apache2/modules"
        conf = root / "httpd.conf"
        conf.write_text(f"""ServerRoot {root}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule dir_module {modules}/mod_dir.so
User nobody
Group nogroup
Listen 127.0.0.1:{self.port}
ServerName portal.test
PidFile {root}/httpd.pid
Mutex file:{root}
DefaultRuntimeDir {root}
ErrorLog {self.error}
LogLevel info
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
CustomLog {self.access} combined
DocumentRoot {root}/www
DirectoryIndex index.html
<Directory {root}/www>
  Require all granted
</Directory>
""")
        self.out = open(root / "apache.out", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([binary, "-f", str(conf), "-DFOREGROUND"],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port), timeout=10,
                 message=f"apache2 on {self.port}: {(root / 'apache.out').read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.out.close()


@pytest.fixture
def apache() -> Iterator[Apache]:
    binary = shutil.which("apache2") or ("/usr/sbin/apache2"
                                         if os.path.exists("/usr/sbin/apache2") else None)
    require(binary, "apache2 missing: apt-get install apache2")
    assert binary is not None
    public = Path(tempfile.mkdtemp(prefix="sisguard-apache-"))  # its workers run as nobody
    public.chmod(0o755)
    server = Apache(public, binary)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(public, ignore_errors=True)


def web_events(collector: Collector) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["event"]["dataset"] == "sisguard.web"]


def numbered(collector: Collector) -> list[int]:
    """The n of every access-log request ``/seq?n=N`` the collector has."""
    out = []
    for e in web_events(collector):
        query = e.get("url", {}).get("query", "")
        if e["event"]["type"] == ["access"] and query.startswith("n="):
            out.append(int(query[2:]))
    return out


def test_real_nginx_attacks_alert_once_and_rotation_loses_nothing(
        nginx: Nginx, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    require(SIGMA_WEB.is_dir(), f"SigmaHQ web rules missing at {SIGMA_WEB}")
    collector = collector_factory("--rules", str(SIGMA_WEB))
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"""sensor:
  weblog:
    poll_interval: 0.1
    rotate_grace: 2s
    paths:
      - {{path: '{nginx.access}', format: combined, vhost: portal.test, server: nginx}}
      - {{path: '{nginx.error}', format: nginx_error}}
""")
    agent_factory(collector, "--sensors", "weblog", "--config", str(cfg))
    sent: list[int] = []

    def burst(k: int) -> None:
        for _ in range(k):
            n = len(sent)
            assert nginx.get(f"/seq?n={n}") == 200
            sent.append(n)

    # the attacks, as a scanner sends them
    assert nginx.get("/news?id=1'%20or%20'1'='1") == 200
    assert nginx.get("/download?file=../../../etc/passwd") == 200
    assert nginx.get("/", agent="sqlmap/1.7.2#stable (https://sqlmap.org)") == 200
    nginx.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\r\n\r\n")  # TLS on plain
    assert nginx.get("/static/missing.php") == 404  # and an error-log line ("open() failed")
    burst(10)
    wanted = {"SQL Injection Strings In URI", "Path Traversal Exploitation Attempts",
              "Suspicious User-Agents Related To Recon Tools"}

    def names() -> list[str]:
        return [a["rule"]["name"] for a in collector.alerts()]

    wait_for(lambda: wanted <= set(names()) or None, timeout=30,
             message=f"SigmaHQ web alerts (have {names()})")
    wait_for(lambda: len(numbered(collector)) >= 10 or None, timeout=30,
             message="the first burst")

    # logrotate without copytruncate: mv, lines still go to the old file, then reopen
    os.rename(nginx.access, nginx.access.with_name("access.log.1"))
    burst(5)
    nginx.reopen()
    wait_for(lambda: nginx.access.exists() or None, timeout=10, message="reopened log")
    burst(5)
    wait_for(lambda: len(numbered(collector)) >= 20 or None, timeout=30,
             message=f"after rotation: {sorted(numbered(collector))}")
    # copytruncate: emptied in place while nginx keeps writing (O_APPEND)
    os.truncate(nginx.access, 0)
    burst(10)
    wait_for(lambda: len(numbered(collector)) >= 30 or None, timeout=30,
             message=f"after truncation: {sorted(numbered(collector))}")

    seen = numbered(collector)
    assert sorted(seen) == sent, "a request was lost or repeated"
    counts = {name: names().count(name) for name in wanted}
    assert counts == dict.fromkeys(wanted, 1), counts

    events = web_events(collector)
    sqli = next(e for e in events if "'1'='1" in e.get("url", {}).get("query", ""))
    assert sqli["source"]["ip"] == "127.0.0.1"
    assert sqli["http"]["request"]["method"] == "GET"
    assert sqli["http"]["response"]["status_code"] == 200
    assert sqli["destination"]["domain"] == "portal.test"
    assert sqli["sisguard"]["web"]["server"] == "nginx"
    junk = [e for e in events if e["sisguard"]["web"].get("bad_request_line")]
    assert junk and junk[0]["http"]["response"]["status_code"] == 400
    # nginx wrote the bytes as the text \x16\x03 ...; our escaping keeps that reversible
    assert b"\\x16\\x03\\x01" in unescape(junk[0]["event"]["original"])
    errors = [e for e in events if e["event"]["type"] == ["error"]]
    assert any(e.get("url", {}).get("path") == "/static/missing.php" for e in errors), errors


@pytest.mark.parametrize("engine", engine_urls(), ids=lambda url: url.rsplit(":", 1)[-1])
def test_web_documents_index_into_elasticsearch_mapped_and_valid_ecs(
        engine: str, nginx: Nginx, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    if not engine:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    from elasticsearch import Elasticsearch, helpers

    from tests.e2e.test_elasticsearch import unmapped
    prefix = f"tweb{os.getpid()}{nginx.port}"
    config = tmp_path / "collector.yml"
    config.write_text(f"elasticsearch:\n  url: [{engine}]\n  index_prefix: {prefix}\n"
                      "archive:\n  enabled: false\n")
    collector = collector_factory("--config", str(config))
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"sensor:\n  weblog:\n    poll_interval: 0.1\n    paths:\n"
                   f"      - {{path: '{nginx.access}', server: nginx}}\n"
                   f"      - {{path: '{nginx.error}', format: nginx_error}}\n")
    agent_factory(collector, "--sensors", "weblog", "--config", str(cfg))
    long_query = "q=" + "%27union%20select" * 200  # a 3.6 KB URL: longer than ignore_above
    assert nginx.get(f"/search?{long_query}", agent="sqlmap/1.7") == 200
    assert nginx.get("/static/none.php") == 404
    nginx.raw(b"\x16\x03\x01\xff\r\n\r\n")
    es = Elasticsearch(engine, request_timeout=30)
    index = f"{prefix}-events-*"
    try:
        def count(query: dict[str, Any]) -> int:
            return searchable_count(es, index, query)

        wait_for(lambda: count({"term": {"event.dataset": "sisguard.web"}}) >= 4 or None,
                 timeout=30, message="web documents indexed")
        assert count({"term": {"url.original": f"/search?{long_query}"}}) == 1
        assert count({"term": {"user_agent.original": "sqlmap/1.7"}}) == 1
        assert count({"term": {"http.response.status_code": 404}}) == 1
        assert count({"term": {"event.type": "error"}}) >= 1
        docs = [h["_source"] for h in when_searchable(
                    es, index, lambda: list(helpers.scan(es, index=index)))
                if h["_source"]["event"]["dataset"] == "sisguard.web"]
        assert {p for d in docs for p in problems(d)} == set()
        assert {f for d in docs for f in unmapped(d)} == set(), "fields missing from template"
    finally:
        es.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
        for kind in ("events", "alerts", "deadletter"):
            es.options(ignore_status=404).indices.delete_index_template(
                name=f"{prefix}-{kind}")
        es.close()


def test_real_apache_attacks_alert_and_its_error_log_is_read(
        apache: Apache, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    require(SIGMA_WEB.is_dir(), f"SigmaHQ web rules missing at {SIGMA_WEB}")
    collector = collector_factory("--rules", str(SIGMA_WEB))
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"""sensor:
  weblog:
    poll_interval: 0.1
    paths:
      - {{path: '{apache.access}', format: combined, server: apache}}
      - {{path: '{apache.error}', format: apache_error}}
""")
    agent_factory(collector, "--sensors", "weblog", "--config", str(cfg))
    assert apache.get("/?page=../../../etc/passwd") == 200
    # Apache writes a quote in a header as \" : the quoted field must not end there
    assert apache.get("/", agent='Nikto/2.5.0 "evil" 200 1') == 200
    assert apache.get("/nothere.php") == 404
    wanted = {"Path Traversal Exploitation Attempts",
              "Suspicious User-Agents Related To Recon Tools"}

    def names() -> list[str]:
        return [a["rule"]["name"] for a in collector.alerts()]

    wait_for(lambda: wanted <= set(names()) or None, timeout=30,
             message=f"SigmaHQ web alerts (have {names()})")

    def missing_file() -> list[dict[str, Any]]:
        return [e for e in web_events(collector) if e["event"]["type"] == ["error"]
                and "nothere.php" in e.get("message", "")]

    (error,) = wait_for(missing_file, timeout=30, message="the error-log line")
    assert error["source"]["ip"] == "127.0.0.1" and error["log"]["level"] == "info"
    assert error["sisguard"]["web"]["server"] == "apache"
    nikto = next(e for e in web_events(collector)
                 if e.get("user_agent", {}).get("original", "").startswith("Nikto"))
    assert nikto["user_agent"]["original"] == 'Nikto/2.5.0 \\"evil\\" 200 1'
    assert nikto["http"]["response"]["status_code"] == 200
    assert {n: names().count(n) for n in wanted} == dict.fromkeys(wanted, 1)
