"""A local user against the FIM: real agent and collector, the attacker a real
unprivileged user (``setpriv --reuid=65534``) writing in a watched directory it owns.

Each test ends with a marker the attacker writes after the attack: its event must
arrive, so the agent was neither stalled nor blinded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, Agent, Collector, wait_for

Doc = dict[str, Any]
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
RSS_BOUND_KIB = 400 * 1024   # the agent's peak RSS with a 100 GiB file to look at


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the unprivileged attacker can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="sisguard-fimsafe-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def web_root(public: Path, name: str = "www") -> Path:
    www = public / name
    www.mkdir()
    os.chown(www, NOBODY, NOBODY)
    return www


def as_nobody(script: str, cwd: Path, **env: str) -> None:
    result = subprocess.run([*AS_NOBODY, "sh", "-ec", script], cwd=cwd, capture_output=True,
                            text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, f"attacker script failed: {result.stderr}"


def write_config(path: Path, fim: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"sensor": {"fim": fim}}))
    path.chmod(0o600)
    return path


def fim_docs(collector: Collector) -> list[Doc]:
    return [e for e in collector.events() if e.get("event", {}).get("dataset") == "sisguard.fim"]


def wait_fim(collector: Collector, agent: Agent, action: str, path: Path,
             timeout: float = 30) -> Doc:
    def found() -> Doc | None:
        return next((e for e in fim_docs(collector) if e["event"]["action"] == action
                     and e["file"]["path"] == str(path)), None)
    return wait_for(found, timeout=timeout,
                    message=f"{action} {path}\n{agent.proc.tail() if agent.proc else ''}")


def marker(collector: Collector, agent: Agent, www: Path) -> None:
    """The attacker writes one more file: its event arrives (nothing is stuck)."""
    name = f"marker-{uuid.uuid4().hex}.html"
    as_nobody(f"echo after > {name}", www)
    wait_fim(collector, agent, "created", www / name)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def stored_bytes(collector: Collector, agent: Agent) -> bytes:
    """Every event and alert the collector stored, and the agent's baseline files."""
    data = [json.dumps(d, ensure_ascii=False).encode() for d in
            (*collector.events(), *collector.alerts())]
    for f in (agent.state_dir / "sensors" / "fim").glob("baseline.db*"):
        data.append(f.read_bytes())
    return b"\n".join(data)


def test_directory_swapped_for_a_link_never_ships_a_root_only_file(
        tmp_path: Path, public_dir: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    """``mv d d_old; ln -s /root-only d`` inside the settle window (120 times), against
    created files (content check, new-directory listing) and changed files (diff): the
    canary's content, excerpt and hash appear in no stored document."""
    secret = uuid.uuid4().hex
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    canary = private / "secret.php"
    canary_text = f"<?php eval(base64_decode($_POST['{secret}'])); // {secret}\n"
    canary.write_text(canary_text)
    canary.chmod(0o600)
    canary_sha = hashlib.sha256(canary_text.encode()).hexdigest()
    www = web_root(public_dir)
    cfg = write_config(tmp_path / "agent.yml", {"paths": [
        {"path": str(www), "report_changes": True, "content_checks": True}]})
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))

    # changed files: recorded first (a copy is kept for the diff), then changed and swapped
    as_nobody("for i in $(seq 1 20); do mkdir e$i; echo '<p>old</p>' > e$i/secret.php; done",
              www)
    for i in range(1, 21):
        wait_fim(collector, agent, "created", www / f"e{i}" / "secret.php")
    as_nobody("""
        for i in $(seq 1 20); do
          echo "<?php eval(base64_decode(\\$_GET['x'])); ?>" > e$i/secret.php
          sleep 0.0$((i % 10))
          mv e$i e${i}_old
          ln -s "$PRIVATE" e$i
        done""", www, PRIVATE=str(private))
    # created files and new directories, swapped before the agent looks
    as_nobody("""
        for i in $(seq 1 100); do
          mkdir d
          echo "<?php echo $i; ?>" > d/secret.php
          sleep 0.0$((i % 6))
          mv d d_old_$i
          ln -s "$PRIVATE" d
          sleep 0.0$((i % 4))
          rm d
        done""", www, PRIVATE=str(private))
    marker(collector, agent, www)
    swaps = [e for e in fim_docs(collector) if e["file"]["path"].startswith(str(www / "e"))
             and e["file"].get("type") == "symlink"]
    assert swaps, "the swaps themselves are reported"
    stored = stored_bytes(collector, agent)
    assert secret.encode() not in stored
    assert canary_sha.encode() not in stored
    assert canary.read_text() == canary_text


def test_a_secret_file_change_gives_no_diff(
        tmp_path: Path, public_dir: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    www = web_root(public_dir)
    (www / ".env").write_text("DB_PASSWORD=old-pass-1\n")
    (www / "wp-config.php").write_text("<?php define('DB_PASSWORD', 'old-pass-2');\n")
    (www / "index.html").write_text("<p>hello</p>\n")
    cfg = write_config(tmp_path / "agent.yml", {"paths": [
        {"path": str(www), "report_changes": True}]})
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))
    (www / ".env").write_text("DB_PASSWORD=new-pass-1\n")
    (www / "wp-config.php").write_text("<?php define('DB_PASSWORD', 'new-pass-2');\n")
    (www / "index.html").write_text("<p>hello again</p>\n")
    page = wait_fim(collector, agent, "updated", www / "index.html")
    assert "+<p>hello again</p>" in page["sisguard"]["fim"]["diff"]   # diffs are on
    for name in (".env", "wp-config.php"):
        doc = wait_fim(collector, agent, "updated", www / name)
        assert "diff" not in doc["sisguard"]["fim"]
        assert doc["sisguard"]["fim"]["diff_skipped"] == "nodiff"
    stored = stored_bytes(collector, agent)
    assert b"pass-1" not in stored and b"pass-2" not in stored


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs (another file system than the web root), 0700 like a quarantine dir."""
    mount = tmp_path / "quarantine"
    mount.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mount)],
                   check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_fifo_and_sparse_file_in_a_protected_root_quarantined_across_file_systems(
        tmp_path: Path, public_dir: Path, tmpfs: Path,
        collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    """A FIFO (never opened: it would block) and a 100 GiB sparse file (never read whole:
    OOM) in a protected web root, quarantine on a tmpfs; the first start's automatic
    approve also meets a 100 GiB file. Later events arrive; the agent's RSS stays low."""
    www = web_root(public_dir)
    (www / "index.html").write_text("<p>portal</p>\n")
    as_nobody("truncate -s 100G approved-big.bin", www)
    cfg = write_config(tmp_path / "agent.yml", {"quarantine_dir": str(tmpfs), "paths": [
        {"path": str(www), "protect": "restore", "content_checks": True}]})
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))
    assert agent.proc is not None and agent.proc.popen is not None

    as_nobody("mkfifo evil.php; truncate -s 100G big.php", www)
    fifo = wait_fim(collector, agent, "quarantined", www / "evil.php")
    assert fifo["event"]["outcome"] == "success", fifo
    created = wait_fim(collector, agent, "created", www / "evil.php")
    assert created["file"]["type"] == "fifo"
    big = wait_fim(collector, agent, "created", www / "big.php")
    assert big["sisguard"]["fim"]["hash_skipped"] == "size over 256MiB cap"
    assert "hash" not in big["file"]
    moved = wait_fim(collector, agent, "quarantined", www / "big.php")
    assert moved["event"]["outcome"] == "success", moved
    marker(collector, agent, www)
    assert not (www / "evil.php").exists() and not (www / "big.php").exists()
    origins = [json.loads(p.read_text()) for p in tmpfs.glob("*/origin.json")]
    skipped = {s["name"]: s for o in origins for s in o.get("not_copied", [])}
    assert skipped["evil.php"]["type"] == "fifo"
    assert skipped["big.php"]["reason"] == "size over 64MiB cap"
    assert (www / "approved-big.bin").stat().st_size == 100 << 30   # approved, left alone
    rss = peak_rss_kib(agent.proc.popen.pid)
    print(f"agent peak RSS {rss / 1024:.0f} MiB")
    assert rss < RSS_BOUND_KIB


def test_fim_approve_of_a_root_holding_a_100_gib_sparse_file_stays_small(
        tmp_path: Path, public_dir: Path) -> None:
    www = web_root(public_dir)
    as_nobody("truncate -s 100G huge.php; echo '<p>x</p>' > index.html", www)
    state = tmp_path / "state"
    log = tmp_path / "approve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "fim", "approve",
                                 str(www), "--state-dir", str(state)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
    # The child's own peak (VmHWM of its image, read while it lives). rusage's ru_maxrss
    # would not do: a child forked or vforked by a big pytest process starts out with
    # pytest's resident pages counted (seen: 218 MiB in a full run, 34 MiB alone).
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(OSError, AssertionError):
            peak = max(peak, peak_rss_kib(proc.pid))
        time.sleep(0.01)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "approved 2 entries" in output
    print(f"fim approve peak RSS {peak / 1024:.0f} MiB")
    assert 0 < peak < 200 * 1024


def test_fim_scan_started_beside_a_planted_hashlib_never_imports_it(tmp_path: Path) -> None:
    """Root runs ``sisguard-agent fim scan`` from a directory a user can write, holding
    a ``hashlib.py``: the hash helpers run isolated and never import it."""
    plant = tmp_path / "plant"
    plant.mkdir()
    flag = tmp_path / "imported"
    (plant / "hashlib.py").write_text(
        f"open({str(flag)!r}, 'w').write('pwned')\nfrom _hashlib import *\n")
    www = tmp_path / "www"
    www.mkdir()
    for i in range(50):
        (www / f"p{i}.html").write_text(f"<p>{i}</p>")
    # the installed console script: its own directory (not the cwd) leads sys.path
    launcher = tmp_path / "bin" / "sisguard-agent"
    launcher.parent.mkdir()
    launcher.write_text(f"import sys\nsys.path.insert(1, {str(REPO)!r})\n"
                        "from agent.cli import main\nsys.exit(main())\n")
    result = subprocess.run([sys.executable, str(launcher), "fim", "scan", str(www), "--once",
                             "--state-dir", str(tmp_path / "state")], cwd=plant,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "baseline scan" in result.stderr and "51 entries" in result.stderr
    assert not flag.exists(), "a helper imported the planted hashlib.py"


@pytest.mark.parametrize("mode, owner", [(0o777, 0), (0o770, 0), (0o700, NOBODY)])
def test_agent_refuses_a_state_dir_another_user_controls(tmp_path: Path, mode: int,
                                                         owner: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    os.chown(state, owner, owner)
    for argv in (["run", "--state-dir", str(state), "--sensors", "fim"],
                 ["fim", "scan", str(tmp_path), "--once", "--state-dir", str(state)]):
        result = subprocess.run([sys.executable, "-m", "agent.cli", *argv], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert f"the state dir {state} is" in result.stderr
        assert "refusing to start" in result.stderr


def test_agent_refuses_a_config_file_others_can_write(tmp_path: Path) -> None:
    config = tmp_path / "agent.yml"
    config.write_text("sensors: [fim]\n")
    config.chmod(0o666)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for argv in (["run", "--config", str(config), "--state-dir", str(state)],
                 ["fim", "approve", str(tmp_path), "--config", str(config),
                  "--state-dir", str(state)]):
        result = subprocess.run([sys.executable, "-m", "agent.cli", *argv], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert f"the config file {config} is group- and world-writable (mode 0666)" in \
            result.stderr
