"""The offline bundle and the packages, built and installed for real.

``scripts/bundle`` builds both (once per test session); the bundle is installed with
``--root`` into a throw-away root, the .deb with ``dpkg -i`` on this machine; each
installed agent then enrolls with a real collector and ships a file event.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import REPO, Collector, Proc, in_ci, wait_for

pytestmark = pytest.mark.service

AGENT_PYTHONS = ("39", "310", "311", "312", "313")
ARCHS = ("x86_64", "aarch64")


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    if in_ci():
        pytest.fail(f"{tool} is required in CI (scripts/lib.sh installs it)")
    pytest.skip(f"{tool} not found")


def sh(*argv: str | Path, check: bool = True, input: str | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            input=input, timeout=600, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("installs packages: needs root")
    if os.environ.get("SISGUARD_TEST_DIST"):   # built already (developing these tests)
        return Path(os.environ["SISGUARD_TEST_DIST"])
    need("go")
    out = tmp_path_factory.mktemp("dist")
    # the bundles for both architectures (checked below); packages for this machine's,
    # which are installed (both formats, both products)
    sh(REPO / "scripts" / "bundle", "--out", out, "--no-packages")
    sh(REPO / "scripts" / "bundle", "--out", out, "--arch", "x86_64", "--no-bundles")
    return out


@pytest.fixture(scope="module")
def dist_release2(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same version rebuilt (release 2): an upgrade for dpkg."""
    out = tmp_path_factory.mktemp("dist2")
    sh(REPO / "scripts" / "bundle", "--out", out, "--arch", "x86_64", "--only", "agent",
       "--release", "2", "--no-bundles")
    return out


def one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"{pattern} in {directory}: {found}"
    return found[0]


def token_file(collector: Collector, directory: Path) -> Path:
    path = directory / "token"
    path.write_text(collector.token("--org", "So TT&TT") + "\n")
    path.chmod(0o600)
    return path


def ships_a_file_event(agent: Path, config: Path, state: Path, watch: Path,
                       collector: Collector) -> None:
    """Run an installed agent and see one file event arrive in the collector's archive."""
    watch.mkdir(exist_ok=True)
    log = watch.parent / f"agent-{uuid.uuid4().hex}.log"   # this run's log only
    proc = Proc([str(agent), "run", "--config", str(config), "--state-dir", str(state),
                 "--sensors", "fim", "--watch", str(watch)], log)
    proc.start()
    try:
        wait_for(lambda: '"fim ready"' in proc.since(0), timeout=60,
                 message=f"installed agent ready\n{proc.tail()}")
        marker = watch / f"marker-{uuid.uuid4().hex}.html"
        marker.write_text("installed\n")
        wait_for(lambda: any(e.get("file", {}).get("path") == str(marker)
                             for e in collector.events()),
                 timeout=30, message=f"event for {marker}\n{proc.tail()}")
    finally:
        proc.stop()


def test_bundle_has_every_python_and_architecture(dist: Path) -> None:
    bundle = one(dist, "sisguard-agent-*.tar.gz")
    with tarfile.open(bundle) as tar:
        names = [Path(n) for n in tar.getnames()]
    top = names[0].parts[0]
    files = {p.relative_to(top).as_posix() for p in names if len(p.parts) > 1}
    for needed in ("install-agent.sh", "install-common.sh", "sisguard-agent.service",
                   "agent.yml", "VERSION"):
        assert needed in files
    wheels = [f.split("/", 1)[1] for f in files if f.startswith("wheels/")]
    assert any(w.startswith("sisguard_agent-") and w.endswith("-py3-none-any.whl")
               for w in wheels)
    for arch in ARCHS:
        for py in AGENT_PYTHONS:
            for dep in ("grpcio", "pyyaml", "cffi"):
                assert any(w.startswith(f"{dep}-") and f"-cp{py}-" in w and w.endswith(
                    f"_{arch}.whl") for w in wheels), f"no {dep} wheel for cp{py} {arch}"
        for dep in ("psutil", "protobuf", "cryptography"):
            assert any(w.startswith(f"{dep}-") and w.endswith(f"_{arch}.whl")
                       for w in wheels), f"no {dep} wheel for {arch}"
    collector = one(dist, "sisguard-collector-*.tar.gz")
    with tarfile.open(collector) as tar:
        assert any(n.endswith("/rules/auth/ssh_brute_force.yml") for n in tar.getnames())


def test_bundle_installs_under_a_root_enrolls_ships_upgrades_and_uninstalls(
        dist: Path, tmp_path: Path, collector: Collector) -> None:
    with tarfile.open(one(dist, "sisguard-agent-*.tar.gz")) as tar:
        tar.extractall(tmp_path / "unpacked", filter="tar")
    installer = one(tmp_path / "unpacked", "*/install-agent.sh")
    root = tmp_path / "root"
    token = token_file(collector, tmp_path)
    out = sh(installer, "--root", root, "--collector", collector.address, "--token-file",
             token, "--ca-fingerprint", collector.fingerprint)
    assert "enrolled: agent id" in out.stdout + out.stderr
    state = root / "var/lib/sisguard-agent"
    agent = root / "opt/sisguard/agent/venv/bin/sisguard-agent"
    assert agent.exists()
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((root / "etc/sisguard/agent.yml").stat().st_mode & 0o777) == 0o600
    assert (root / "etc/systemd/system/sisguard-agent.service").exists()
    identity = (state / "identity.json").read_text()
    ships_a_file_event(agent, root / "etc/sisguard/agent.yml", state, tmp_path / "www",
                       collector)

    # Re-running is an upgrade in place: identity and config kept, no second enrollment.
    config = root / "etc/sisguard/agent.yml"
    config.write_text(config.read_text() + "# edited by the sysadmin\n")
    out = sh(installer, "--root", root, "--collector", collector.address, "--token-file",
             token, "--ca-fingerprint", collector.fingerprint)
    assert "identity kept" in out.stderr
    assert (state / "identity.json").read_text() == identity
    assert config.read_text().endswith("# edited by the sysadmin\n")

    sh(installer, "--root", root, "--uninstall")
    assert not (root / "opt/sisguard/agent").exists()
    assert not (root / "etc/systemd/system/sisguard-agent.service").exists()
    assert (state / "identity.json").exists() and config.exists()
    sh(installer, "--root", root, "--uninstall", "--purge")
    assert not state.exists() and not config.exists()


def test_install_refuses_a_token_on_the_command_line(dist: Path, tmp_path: Path) -> None:
    with tarfile.open(one(dist, "sisguard-agent-*.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="tar")
    result = sh(one(tmp_path, "*/install-agent.sh"), "--root", tmp_path / "r", "--token",
                "sgt_secret", check=False)
    assert result.returncode != 0 and "--token-file" in result.stderr


def _deb_files(deb: Path) -> set[str]:
    listing = sh("dpkg-deb", "--contents", deb).stdout
    # mode owner size date time path [-> target]
    return {line.split()[5].lstrip(".") for line in listing.splitlines()
            if not line.startswith("d")} - {""}


def test_rpm_holds_the_same_files_as_the_deb(dist: Path, tmp_path: Path) -> None:
    need("rpm")
    need("rpm2cpio")
    for product in ("agent", "collector"):
        deb = one(dist, f"sisguard-{product}_*_amd64.deb")
        rpm = one(dist, f"sisguard-{product}-*.x86_64.rpm")
        listed = {line for line in sh("rpm", "-qlp", rpm).stdout.splitlines()
                  if line and not line.startswith("(")}
        unit = f"/lib/systemd/system/sisguard-{product}.service"
        deb_files = {f.replace(unit, f"/usr{unit}") for f in _deb_files(deb)}
        assert deb_files - listed <= {f"/var/lib/sisguard-{product}"}
        assert f"/etc/sisguard/{product}.yml" in listed
        extract = tmp_path / product
        extract.mkdir()
        # the payload names absolute paths: keep them under the extract directory
        cpio = subprocess.run(f"rpm2cpio {rpm} | cpio -idm --quiet --no-absolute-filenames",
                              shell=True, cwd=extract,
                              capture_output=True, text=True, check=False)
        assert cpio.returncode == 0, cpio.stderr
        extracted = {"/" + p.relative_to(extract).as_posix() for p in extract.rglob("*")
                     if p.is_file() or p.is_symlink()}
        assert extracted == {f for f in listed if not (Path(extract) / f[1:]).is_dir()}


@pytest.fixture
def clean_dpkg() -> Iterator[None]:
    """The .deb test installs on this machine: purge whatever is left, before and after."""
    need("dpkg")
    sh("dpkg", "--purge", "sisguard-agent", check=False)
    yield
    sh("dpkg", "--purge", "sisguard-agent", check=False)


def test_deb_installs_enrolls_ships_upgrades_keeping_the_spool_and_purges(
        dist: Path, dist_release2: Path, tmp_path: Path, clean_dpkg: None,
        collector_factory: Callable[..., Collector]) -> None:
    collector = collector_factory()
    sh("dpkg", "-i", one(dist, "sisguard-agent_*_amd64.deb"))
    installed = Path("/opt/sisguard/agent/venv/bin/sisguard-agent")
    assert installed.exists() and Path("/usr/bin/sisguard-agent").resolve() == \
        installed.resolve()
    assert (Path("/var/lib/sisguard-agent").stat().st_mode & 0o777) == 0o700
    verify = sh("systemd-analyze", "verify", "/lib/systemd/system/sisguard-agent.service",
                check=False)
    assert verify.returncode == 0, verify.stderr
    state = Path("/var/lib/sisguard-agent")
    sh("/opt/sisguard/agent/install-agent.sh", "--collector", collector.address,
       "--token-file", token_file(collector, tmp_path), "--ca-fingerprint",
       collector.fingerprint, "--no-start")
    identity = (state / "identity.json").read_text()
    ships_a_file_event(installed, Path("/etc/sisguard/agent.yml"), state, tmp_path / "www",
                       collector)

    # Unacked events in the spool while the collector is down, then an upgrade.
    assert collector.proc
    collector.proc.stop()
    watch = tmp_path / "www"
    proc = Proc([str(installed), "run", "--config", "/etc/sisguard/agent.yml", "--sensors",
                 "fim", "--watch", str(watch)], tmp_path / "agent2.log")
    proc.start()
    wait_for(lambda: '"fim ready"' in proc.since(0), timeout=60, message="agent ready")
    pending = watch / "written-while-collector-down.html"
    pending.write_text("spooled\n")
    wait_for(lambda: "written-while-collector-down" in _spool_text(installed, state),
             timeout=20, message="the event in the spool")
    proc.stop()
    sh("dpkg", "-i", one(dist_release2, "sisguard-agent_*_amd64.deb"))
    assert Path("/opt/sisguard/agent/VERSION").read_text().strip().endswith("-2")
    assert (state / "identity.json").read_text() == identity
    collector.start()
    ships_a_file_event(installed, Path("/etc/sisguard/agent.yml"), state, watch, collector)
    assert any(e.get("file", {}).get("path") == str(pending) for e in collector.events())

    sh("dpkg", "--remove", "sisguard-agent")
    assert not Path("/opt/sisguard/agent").exists()
    assert (state / "identity.json").exists() and Path("/etc/sisguard/agent.yml").exists()
    sh("dpkg", "--purge", "sisguard-agent")
    assert not state.exists() and not Path("/etc/sisguard/agent.yml").exists()


def _spool_text(agent: Path, state: Path) -> str:
    import sqlite3

    db = state / "spool.db"
    if not db.exists():
        return ""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT * FROM events").fetchall()
    return repr(rows)


def test_units_verify_clean(tmp_path: Path) -> None:
    need("systemd-analyze")
    for name in ("agent", "collector"):
        text = (REPO / "deploy" / "systemd" / f"sisguard-{name}.service").read_text()
        text = re.sub(r"ExecStart=\S+", f"ExecStart={sys.executable}", text)
        unit = tmp_path / f"sisguard-{name}.service"
        unit.write_text(text)
        result = sh("systemd-analyze", "verify", unit, check=False)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
