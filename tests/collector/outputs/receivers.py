"""The SOC's side for the export tests: certificates, a real rsyslog, an HTTPS receiver.

``Rsyslog`` runs Debian's ``rsyslogd`` in the foreground with a config of the test's
own: one plain ``imtcp`` input and one ``imtcp`` with the ``gtls`` stream driver (RFC
5425, client certificate required), each writing the message part of what it receives
to its own file. ``HttpsReceiver`` is python's ``http.server`` behind TLS in a thread:
the real protocol (it is not a fake of a sisguard component); it can answer 503 while
``failing`` is set, checks the bearer token, and keeps what it took by ``event.id``.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import in_ci, port_open, wait_for


@dataclass(frozen=True)
class Tls:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path          # a CA that signed nothing here: a client trusting it must fail


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str, *,
          server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else \
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_tls(directory: Path, server_name: str = "soc.test") -> Tls:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("test SOC CA")
    _, other = _ca("another CA")
    paths = Tls(*(directory / n for n in ("ca.pem", "server.pem", "server.key",
                                          "client.pem", "client.key", "other-ca.pem")))
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    for (key_path, cert_path), (cn, server) in zip(
            ((paths.server_key, paths.server_cert), (paths.client_key, paths.client_cert)),
            ((server_name, True), ("sisguard-collector", False)), strict=True):
        key, cert = _leaf(ca_key, ca, cn, server=server)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def need_rsyslog() -> str:
    path = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd"
                                        if Path("/usr/sbin/rsyslogd").exists() else None)
    gtls = list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))
    if path and gtls:
        return path
    reason = "rsyslogd with rsyslog-gnutls is needed (apt-get install rsyslog rsyslog-gnutls)"
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def two_free_ports() -> tuple[int, int]:
    """Two distinct free ports (two free_port() calls may return the same one: it was
    free again when the second asked; a bench once had rsyslog put TCP and TLS on it)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return int(a.getsockname()[1]), int(b.getsockname()[1])


@dataclass
class Rsyslog:
    directory: Path
    tls: Tls
    tcp_port: int = 0
    tls_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not (self.tcp_port and self.tls_port):
            self.tcp_port, self.tls_port = two_free_ports()

    @property
    def tcp_file(self) -> Path:
        return self.directory / "tcp.log"

    @property
    def tls_file(self) -> Path:
        return self.directory / "tls.log"

    def write_config(self) -> Path:
        d, t = self.directory, self.tls
        conf = d / "rsyslog.conf"
        conf.write_text(f"""
global(workDirectory="{d}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{t.ca}"
       defaultNetstreamDriverCertFile="{t.server_cert}"
       defaultNetstreamDriverKeyFile="{t.server_key}")
module(load="imtcp" maxSessions="20")
template(name="msgonly" type="string" string="%msg%\\n")
ruleset(name="tcp") {{ action(type="omfile" file="{self.tcp_file}" template="msgonly") }}
ruleset(name="tls") {{ action(type="omfile" file="{self.tls_file}" template="msgonly") }}
input(type="imtcp" port="{self.tcp_port}" address="127.0.0.1" ruleset="tcp")
input(type="imtcp" port="{self.tls_port}" address="127.0.0.1" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1"
      streamDriver.authMode="x509/certvalid")
""")
        return conf

    def start(self) -> None:
        binary = need_rsyslog()
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.write_config()
        log = open(self.directory / "rsyslogd.out", "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(conf), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        proc = self.proc
        wait_for(lambda: (port_open(self.tcp_port) and port_open(self.tls_port))
                 or proc.poll() is not None, timeout=15, message="rsyslogd listening")
        if proc.poll() is not None:
            raise AssertionError("rsyslogd did not start:\n"
                                 + (self.directory / "rsyslogd.out").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    @staticmethod
    def lines(path: Path) -> list[str]:
        if not path.exists():
            return []
        data = path.read_bytes()
        return data[:data.rfind(b"\n") + 1].decode().splitlines()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with receiver.lock:
            receiver.requests += 1
            if self.headers.get("Authorization") != f"Bearer {receiver.token}":
                status = 401
            elif receiver.failing.is_set():
                status = 503
            else:
                status = 200
                for line in body.decode().splitlines():
                    doc = json.loads(line)
                    if doc.get("poison"):
                        status = 400
                        break
                if status == 200:
                    for line in body.decode().splitlines():
                        doc = json.loads(line)
                        receiver.taken[doc["event"]["id"]] += 1
                        receiver.documents[doc["event"]["id"]] = doc
            receiver.statuses[status] += 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: HttpsReceiver


class HttpsReceiver:
    """A SOC's HTTPS collector on loopback, with a client certificate required."""

    def __init__(self, tls: Tls, token: str) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.failing = threading.Event()
        self.requests = 0
        self.taken: Counter[str] = Counter()        # event.id -> times received
        self.documents: dict[str, dict[str, Any]] = {}
        self.statuses: Counter[int] = Counter()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
        context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
        context.verify_mode = ssl.CERT_REQUIRED
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="https-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/ingest"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
