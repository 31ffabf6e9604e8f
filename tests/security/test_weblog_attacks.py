"""www-data (here: uid 65534) owns a vhost's log directory and attacks the weblog sensor:
a symlink to a root-only file, a FIFO in place of the log, a flood of junk and a giant
line. The agent reads none of the secret, never hangs, reports what it refused, and goes
on following the log once it is a regular file again."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.weblog import WebLogConfig, WebLogPath, WebLogSensor
from common.yamlconf import Duration
from tests.harness import in_ci, wait_for

NOBODY = 65534


def as_nobody(script: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    "sh", "-c", script], check=True, timeout=30)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the attack tests run as root (to drop to uid 65534)")
        pytest.skip("needs root")
    public = Path(tempfile.mkdtemp(prefix="sisguard-weblog-"))  # /tmp: others may enter
    public.chmod(0o755)
    d = public / "vhost-logs"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(public, ignore_errors=True)


class Sink:
    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def emit(self, doc: dict[str, Any]) -> None:
        with self.lock:
            self.docs.append(doc)

    def originals(self) -> str:
        with self.lock:
            return "\n".join(d["event"]["original"] for d in self.docs)


def test_unprivileged_owner_of_the_log_directory_cannot_make_it_read_secrets_or_hang(
        logs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    token = secrets.token_hex(8)
    secret.write_text(f"root:{token}:19000:0:99999:7:::\n" * 3)
    os.chmod(secret, 0o600)
    log = logs / "access.log"
    as_nobody(f"touch {log}")
    sink = Sink()
    context = SensorContext(emit=sink.emit, health=SensorHealth("weblog"),
                            state_dir=tmp_path, report_error=lambda m, f: sink.errors.append(m))
    sensor = WebLogSensor(WebLogConfig(paths=(WebLogPath(log),), poll_interval=Duration(0.02),
                                       rotate_grace=Duration(0.2)), context)
    sensor.start()
    try:
        line = '192.0.2.1 - - [01/Dec/2026:10:00:00 +0000] "GET /?n={n} HTTP/1.1" 200 1 "-" "x"'
        as_nobody(f"echo '{line.format(n=1)}' >> {log}")
        wait_for(lambda: "n=1" in sink.originals() or None, timeout=10, message="line 1")

        # 1. the log becomes a symlink to a file only root can read
        as_nobody(f"mv {log} {logs}/old.log && ln -s {secret} {log}")
        wait_for(lambda: any("symlink" in e for e in sink.errors) or None, timeout=10,
                 message=f"the symlink reported: {sink.errors}")
        # 2. ... then a FIFO nobody writes to (an open() without O_NONBLOCK would hang)
        as_nobody(f"rm {log} && mkfifo {log}")
        wait_for(lambda: any("fifo" in e for e in sink.errors) or None, timeout=10,
                 message=f"the FIFO reported: {sink.errors}")
        # 3. a regular file again: a flood of junk, a 1 MiB line, then a good line
        as_nobody(f"rm {log} && head -c 300000 /dev/urandom | tr '\\n' x | fold -w 300 "
                  f"> {log} && head -c 1048576 /dev/zero | tr '\\0' A >> {log} && "
                  f"echo >> {log} && echo '{line.format(n=2)}' >> {log}")
        wait_for(lambda: "n=2" in sink.originals() or None, timeout=20,
                 message="the sensor follows the new regular file")
        assert sensor._thread is not None and sensor._thread.is_alive()
    finally:
        sensor.stop()
        sensor.join(10)
    assert token not in sink.originals()
    assert all(len(d["event"]["original"]) <= 4 * 64 * 1024 for d in sink.docs)
    assert any(d["sisguard"]["web"].get("truncated") for d in sink.docs)
    assert len(sink.errors) == 2, sink.errors  # the symlink and the FIFO, each said once
