"""Enrollment secrets off the command line, and the agent keeping the CA it pinned.

Real processes: ``sisguard-agent enroll`` against a real collector, and against a rogue
enrollment server (a real gRPC server in this process, with the collector's own server
certificate: what a stolen server key or a compromised collector could do) that answers
with another CA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from collector.pki import CertificateAuthority, pem
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import REPO, Collector, free_port

WARNING = "visible to every local user"


def _enroll(collector: Collector, state: Path, *args: str, stdin: str = "",
            env: dict[str, str] | None = None,
            enroll_port: int | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "SISGUARD_ENROLL_TOKEN"}
    argv = [sys.executable, "-m", "agent.cli", "enroll", "--collector", collector.address,
            "--ca-fingerprint", collector.fingerprint, "--state-dir", str(state), *args]
    if enroll_port is not None:
        argv += ["--enroll-port", str(enroll_port)]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**base, **(env or {})})


def _fingerprint(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def test_token_from_file_env_and_stdin_enrolls_without_warning(
        collector: Collector, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(collector.token() + "\n")
    token_file.chmod(0o600)
    runs = {
        "file": _enroll(collector, tmp_path / "a", "--token-file", str(token_file)),
        "env": _enroll(collector, tmp_path / "b",
                       env={"SISGUARD_ENROLL_TOKEN": collector.token()}),
        "stdin": _enroll(collector, tmp_path / "c", "--token", "-",
                         stdin=collector.token() + "\n"),
    }
    for source, run in runs.items():
        assert run.returncode == 0, (source, run.stderr)
        assert "enrolled: agent id" in run.stdout, source
        assert WARNING not in run.stderr, source
    # the CA the agent keeps is the one whose fingerprint the operator gave
    for state in ("a", "b", "c"):
        assert _fingerprint(tmp_path / state / "ca.crt") == collector.fingerprint


def test_token_on_the_command_line_works_and_warns(collector: Collector, tmp_path: Path) -> None:
    run = _enroll(collector, tmp_path / "a", "--token", collector.token())
    assert run.returncode == 0, run.stderr
    assert WARNING in run.stderr and "--token-file" in run.stderr


def test_no_token_or_two_tokens_is_a_clear_error(collector: Collector, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(collector.token())
    none = _enroll(collector, tmp_path / "a")
    assert none.returncode != 0 and "no enrollment token" in none.stderr
    both = _enroll(collector, tmp_path / "b", "--token", "x", "--token-file", str(token_file))
    assert both.returncode != 0 and "not both" in both.stderr
    assert not (tmp_path / "a" / "agent.key").exists()


class _RogueEnrollment(pb_grpc.EnrollmentServicer):
    """Signs the agent's CSR with another CA and says that CA is the one to trust."""

    def __init__(self) -> None:
        self.other = CertificateAuthority.create("attacker CA")

    def Enroll(self, request: pb.EnrollRequest,
               context: grpc.ServicerContext) -> pb.EnrollResponse:
        cert = self.other.sign_agent(request.csr_pem, "rogue-agent", hostname="h")
        return pb.EnrollResponse(agent_id="rogue-agent", certificate_pem=pem(cert),
                                 ca_pem=self.other.cert_pem, organization="rogue")


class _ForeignCert(_RogueEnrollment):
    """Names the pinned CA; the certificate is signed by a look-alike CA (same name)."""

    def __init__(self, pinned_ca_pem: bytes) -> None:
        super().__init__()
        self.other = CertificateAuthority.create()
        self.pinned = pinned_ca_pem

    def Enroll(self, request: pb.EnrollRequest,
               context: grpc.ServicerContext) -> pb.EnrollResponse:
        reply = super().Enroll(request, context)
        reply.ca_pem = self.pinned
        return reply


def _rogue_server(collector: Collector, servicer: pb_grpc.EnrollmentServicer
                  ) -> tuple[grpc.Server, int]:
    pki = collector.data_dir / "pki"
    creds = grpc.ssl_server_credentials([(
        (pki / "server.key").read_bytes(),
        (pki / "server.crt").read_bytes() + (pki / "ca.crt").read_bytes())])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_EnrollmentServicer_to_server(servicer, server)
    port = server.add_secure_port(f"127.0.0.1:{free_port()}", creds)
    server.start()
    return server, port


def test_a_reply_naming_another_ca_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "collector")
    collector.init()   # its PKI only: the rogue server below answers in its place
    pinned = (collector.data_dir / "pki" / "ca.crt").read_bytes()
    token_file = tmp_path / "token"
    token_file.write_text("sgt_whatever")
    for name, servicer in (("other-ca", _RogueEnrollment()),
                           ("foreign-cert", _ForeignCert(pinned))):
        server, port = _rogue_server(collector, servicer)
        try:
            state = tmp_path / name
            run = _enroll(collector, state, "--token-file", str(token_file), enroll_port=port)
        finally:
            server.stop(0).wait()
        assert run.returncode != 0, (name, run.stdout)
        expected = "another CA than the pinned one" if name == "other-ca" \
            else "not signed by the pinned CA"
        assert expected in run.stderr, (name, run.stderr)
        for leftover in ("agent.key", "agent.crt", "ca.crt", "identity.json"):
            assert not (state / leftover).exists(), (name, leftover)
