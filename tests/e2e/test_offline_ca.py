"""Offline-CA mode: a root kept offline signs the collectors' intermediate CA; agents pin
the root, and enrollment, streaming, renewal and revocation work through the chain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc

from agent.enrollment import make_key_and_csr
from collector.pki import CertificateAuthority
from tests.harness import Agent, Collector, cli, wait_for
from tests.security.test_revocation import RogueStream, _connect_code


def _fingerprint(out: str) -> str:
    return out.split("ca-fingerprint: ", 1)[1].strip()


def test_collectors_with_an_intermediate_of_an_offline_root(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    root_dir, inter_dir = tmp_path / "offline" / "root", tmp_path / "offline" / "collectors"
    root_fp = _fingerprint(cli("collector", "ca", "root", "--out", str(root_dir)).stdout)
    inter = cli("collector", "ca", "intermediate", "--root", str(root_dir), "--out",
                str(inter_dir)).stdout
    assert _fingerprint(inter) == root_fp        # agents pin the root, not the intermediate
    again = cli("collector", "ca", "root", "--out", str(root_dir), check=False)
    assert again.returncode != 0 and "refusing to replace" in again.stderr

    collector = Collector(tmp_path / "collector")
    init = cli("collector", "init", "--data-dir", str(collector.data_dir), "--listen",
               collector.address, "--ca-from", str(inter_dir)).stdout
    collector.fingerprint = _fingerprint(init)
    assert collector.fingerprint == root_fp
    pki = collector.data_dir / "pki"
    root = CertificateAuthority.load(root_dir)
    held = CertificateAuthority.load(pki)
    assert held.chain == (root.cert,) and held.key.private_numbers() != root.key.private_numbers()
    collector.start()
    try:
        www = tmp_path / "www"
        www.mkdir()
        agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
        (www / "index.html").write_text("hello\n")
        wait_for(lambda: any(e.get("file", {}).get("path") == str(www / "index.html")
                             for e in collector.events()), timeout=20,
                 message="an event through the chain")

        stream = RogueStream(collector, agent.state_dir)     # renewal signs with the
        try:                                                 # intermediate
            renewed = tmp_path / "renewed"
            renewed.mkdir()
            stream.renew(make_key_and_csr(renewed / "agent.key"))
            wait_for(lambda: stream.renewed, message="the renewal reply")
            assert not stream.renewed[0].error, stream.renewed[0].error
            (renewed / "agent.crt").write_bytes(stream.renewed[0].certificate_pem)
            (renewed / "ca.crt").write_bytes((agent.state_dir / "ca.crt").read_bytes())
        finally:
            stream.close()
        assert _connect_code(collector, renewed) == grpc.StatusCode.OK

        cli("collector", "agents", "revoke", "--data-dir", str(collector.data_dir),
            agent.agent_id)                                  # a CRL of the intermediate
        wait_for(lambda: _connect_code(collector, renewed) == grpc.StatusCode.PERMISSION_DENIED,
                 timeout=10, message="the revoked agent refused")
    finally:
        if collector.proc:
            collector.proc.kill()
