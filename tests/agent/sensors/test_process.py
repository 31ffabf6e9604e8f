"""The process sensor: kernel events decoded, documents built, the poll fallback, and
(as root on Linux) real short-lived processes captured through the netlink connector."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.platform.linux.exe_open import LOCAL_FILE_SYSTEMS, fs_type
from agent.platform.linux.netlink import (
    CN_IDX_PROC,
    CN_VAL_PROC,
    SO_RCVBUFFORCE,
    ConnectorError,
    ProcConnector,
    ProcEvent,
    What,
    parse_messages,
)
from agent.platform.linux.procfs import ExeHash, HashCache, OpenExe, ProcFS, Snapshot
from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.process import Mode, ProcessConfig, ProcessSensor
from agent.sensors.process_loss import LossAccount
from common.yamlconf import Size, from_dict
from tests.harness import Agent, Collector, in_ci, wait_for


def _message(what: int, *fields: int) -> bytes:
    body = struct.pack("=IIQ", what, 0, 123_000_000_000) + struct.pack(f"={len(fields)}I", *fields)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_parse_fork_exec_exit_and_ack() -> None:
    data = (_message(What.FORK, 10, 10, 11, 11) + _message(What.EXEC, 11, 11)
            + _message(What.EXIT, 11, 11, 256, 17, 10, 10) + _message(What.NONE, 0))
    events = parse_messages(data)
    assert [e.what for e in events] == [What.FORK, What.EXEC, What.EXIT, What.NONE]
    assert (events[0].parent_tgid, events[0].tgid) == (10, 11)
    assert events[2].exit_code == 256 and events[2].parent_tgid == 10
    assert events[0].timestamp_ns == 123_000_000_000
    assert parse_messages(b"\x00" * 10) == []


class FakeProcFS(ProcFS):
    def __init__(self, snaps: dict[int, Snapshot]) -> None:
        super().__init__(root="/nonexistent")
        self.snaps = snaps
        self.clk_tck = 100

    def pids(self) -> list[int]:
        return list(self.snaps)

    def snapshot(self, pid: int) -> Snapshot:
        return self.snaps.get(pid, Snapshot(pid))

    def start_ticks(self, pid: int) -> int | None:
        snap = self.snaps.get(pid)
        return snap.start_ticks if snap is not None else None

    def boot_id(self) -> str:
        return "boot-1"

    def boot_time(self) -> float:
        return 1_700_000_000.0


class RefusingConnector(ProcConnector):
    def open(self, *, ack_timeout: float = 2.0) -> None:
        raise ConnectorError(errno.EPERM, "Operation not permitted")


def _sensor(procfs: ProcFS, **kw: Any) -> tuple[ProcessSensor, list[dict[str, Any]],
                                                 list[str], SensorHealth]:
    docs: list[dict[str, Any]] = []
    errors: list[str] = []
    health = SensorHealth("process")
    ctx = SensorContext(emit=docs.append, health=health, state_dir=Path(tempfile.mkdtemp()),
                        report_error=lambda m, f: errors.append(m))
    return (ProcessSensor(ProcessConfig(hash=False, **kw.pop("config", {})), ctx, procfs=procfs,
                          user_name=lambda uid: {0: "root", 33: "www-data"}.get(uid), **kw),
            docs, errors, health)


def test_exec_of_a_process_already_gone_still_has_pid_and_parent() -> None:
    nginx = Snapshot(100, exe="/usr/sbin/nginx", args=["nginx: worker"], ppid=1,
                     start_ticks=500, uid=33, euid=33, cwd="/")
    sensor, docs, _, _ = _sensor(FakeProcFS({100: nginx}))
    sensor._scan_existing()
    sensor.handle(ProcEvent(What.FORK, 10**9, 200, 200, parent_pid=100, parent_tgid=100), None)
    shell = Snapshot(200, exe="/usr/bin/dash", args=["sh", "-c", "id"], ppid=100,
                     start_ticks=700, uid=33, euid=33, cwd="/var/www")
    sensor.handle(ProcEvent(What.EXEC, 2 * 10**9, 200, 200), shell)
    sensor.handle(ProcEvent(What.FORK, 3 * 10**9, 201, 201, parent_pid=200, parent_tgid=200),
                  None)
    sensor.handle(ProcEvent(What.EXEC, 3 * 10**9, 201, 201), None)  # gone before we read
    sensor.handle(ProcEvent(What.EXIT, 4 * 10**9, 201, 201, exit_code=2 << 8), None)
    sensor.handle(ProcEvent(What.EXIT, 4 * 10**9, 200, 200, exit_code=9), None)
    start, gone, gone_end, end = docs
    p = start["process"]
    assert (p["pid"], p["parent"]["pid"], p["executable"], p["name"]) == (200, 100, "/usr/bin/dash",
                                                                   "dash")
    assert p["command_line"] == "sh -c id" and p["args_count"] == 3
    assert p["working_directory"] == "/var/www"
    assert p["parent"]["executable"] == "/usr/sbin/nginx"
    assert p["parent"]["command_line"] == "nginx: worker"
    assert start["user"]["name"] == "www-data" and start["user"]["id"] == "33"
    assert p["start"] == "2023-11-14T22:13:27.000000Z"  # boot + 700 ticks at 100 Hz
    assert gone["process"]["pid"] == 201 and gone["process"]["parent"]["pid"] == 200
    assert gone["process"]["parent"]["executable"] == "/usr/bin/dash"
    assert gone["sisguard"]["process"]["gone_before_read"] is True
    assert gone_end["event"]["action"] == "exit" and gone_end["process"]["exit_code"] == 2
    assert gone_end["process"]["entity_id"] == gone["process"]["entity_id"]
    assert end["process"]["exit_code"] == 128 + 9
    assert end["process"]["entity_id"] == p["entity_id"]
    assert p["entity_id"] != sensor._entity(200, 701)


def test_no_netlink_means_poll_mode_and_a_health_event() -> None:
    sensor, _docs, errors, health = _sensor(FakeProcFS({1: Snapshot(1, exe="/sbin/init",
                                                                   ppid=0)}),
                                           connector_factory=RefusingConnector)
    sensor.start()
    try:
        assert health.mode == "poll"
        assert errors and "Operation not permitted" in errors[0]
    finally:
        sensor.stop()
        sensor.join()
    # another platform:
    sensor2, _, errors2, health2 = _sensor(FakeProcFS({}), platform="freebsd14")
    sensor2.start()
    sensor2.stop()
    sensor2.join()
    assert health2.mode == "poll" and "Linux" in errors2[0]


def test_poll_mode_reports_new_and_ended_processes() -> None:
    procs = {1: Snapshot(1, exe="/sbin/init", ppid=0, start_ticks=1)}
    fs = FakeProcFS(procs)
    sensor, docs, _, _ = _sensor(fs, config={"mode": Mode.POLL})
    sensor._scan_existing()
    procs[50] = Snapshot(50, exe="/usr/bin/xmrig", args=["xmrig", "-o", "pool:3333"], ppid=1,
                         start_ticks=9, uid=0, euid=0)
    sensor.poll_once()
    del procs[50]
    sensor.poll_once()
    assert [(d["event"]["action"], d["process"]["pid"]) for d in docs] == [("exec", 50),
                                                                          ("exit", 50)]
    assert docs[0]["process"]["parent"]["executable"] == "/sbin/init"


def test_a_bad_event_is_counted_not_fatal() -> None:
    sensor, _docs, _, health = _sensor(FakeProcFS({}))

    def boom(event: ProcEvent, snap: Snapshot | None, exe: object = None) -> None:
        raise RuntimeError("bad")

    sensor.handle = boom  # type: ignore[method-assign]
    sensor._inbox.put((ProcEvent(What.EXEC, 0, 1, 1), None, None))
    sensor._stop.set()
    sensor._inbox.put((ProcEvent(What.NONE, 0, 0, 0), None, None))
    sensor._work_loop()
    assert health.errors == 1 and "bad" in health.last_error


def _found_by(doc: dict[str, Any]) -> str | None:
    found: str | None = doc.get("sisguard", {}).get("process", {}).get("found_by")
    return found


def test_the_sweep_reports_what_a_loss_hid_and_nothing_twice() -> None:
    bash = Snapshot(100, exe="/usr/bin/bash", args=["bash"], ppid=1, start_ticks=10)
    procs = {1: Snapshot(1, exe="/sbin/init", args=["init"], ppid=0, start_ticks=1),
             100: bash,
             150: Snapshot(150, exe="/usr/bin/cron", args=["cron"], ppid=1, start_ticks=5),
             300: Snapshot(300, exe="/usr/bin/vim", args=["vim"], ppid=100, start_ticks=20)}
    fs = FakeProcFS(procs)
    sensor, docs, _, _ = _sensor(fs)
    sensor._scan_existing()
    # while events were lost: 300 ended, 150's pid was reused, 200 started, 201 forked
    del procs[300]
    procs[150] = Snapshot(150, exe="/tmp/x", args=["x"], ppid=100, start_ticks=900)
    evil = Snapshot(200, exe="/tmp/evil", args=["evil", "-d"], ppid=100, start_ticks=950)
    procs[200] = evil
    procs[201] = Snapshot(201, exe="/usr/bin/bash", args=["bash"], ppid=100, start_ticks=960)
    assert sensor.sweep() == 2
    starts = {d["process"]["pid"]: d for d in docs if d["event"]["action"] == "exec"}
    assert set(starts) == {150, 200}
    assert all(_found_by(d) == "sweep" for d in starts.values())
    assert starts[200]["process"]["executable"] == "/tmp/evil"
    assert starts[200]["process"]["parent"]["executable"] == "/usr/bin/bash"
    ends = [d for d in docs if d["event"]["action"] == "exit"]
    assert [(d["process"]["pid"], _found_by(d)) for d in ends] == [(300, "sweep")]
    # the events queued behind the sweep: 200's fork and exec are not reported again
    docs.clear()
    sensor.handle(ProcEvent(What.FORK, 10**9, 200, 200, parent_pid=100, parent_tgid=100), None)
    sensor.handle(ProcEvent(What.EXEC, 10**9, 200, 200), evil)
    assert docs == []
    # ... but a later exec of 201 (the fork) and a re-exec of 200 are
    later = Snapshot(201, exe="/usr/bin/id", args=["id"], ppid=100, start_ticks=960)
    sensor.handle(ProcEvent(What.EXEC, 2 * 10**9, 201, 201), later)
    again = Snapshot(200, exe="/usr/bin/curl", args=["curl", "x"], ppid=100, start_ticks=950)
    sensor.handle(ProcEvent(What.EXEC, 2 * 10**9, 200, 200), again)
    assert [(d["process"]["pid"], d["process"]["executable"], _found_by(d)) for d in docs] == [
        (201, "/usr/bin/id", None), (200, "/usr/bin/curl", None)]
    assert sensor.sweep() == 0          # nothing new since


def test_one_process_the_sweep_cannot_read_costs_only_itself() -> None:
    class Flaky(FakeProcFS):
        def snapshot(self, pid: int) -> Snapshot:
            if pid == 13:
                raise ValueError("unreadable")
            return super().snapshot(pid)

    procs = {1: Snapshot(1, exe="/sbin/init", args=["init"], ppid=0, start_ticks=1)}
    sensor, docs, _, health = _sensor(Flaky(procs))
    sensor._scan_existing()
    procs[13] = Snapshot(13, exe="/tmp/a", args=["a"], ppid=1, start_ticks=3)
    procs[14] = Snapshot(14, exe="/tmp/b", args=["b"], ppid=1, start_ticks=4)
    assert sensor.sweep() == 1
    assert [d["process"]["pid"] for d in docs] == [14]
    assert health.errors == 1 and "sweep pid 13" in health.last_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_losses_are_reported_with_counts_at_most_once_per_interval() -> None:
    reports: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    loss = LossAccount(lambda m, f: reports.append((m, f)), sweep_interval=1.0,
                       report_interval=5.0, clock=clock)
    assert not loss.take_sweep() and not loss.report_if_due()
    for _ in range(3):
        loss.overrun()
    loss.drop(4)
    assert not loss.report_if_due()      # a sweep is pending: its count goes in the report
    assert loss.take_sweep() and not loss.take_sweep()
    loss.swept(2)
    assert loss.report_if_due()
    message, fields = reports[0]
    assert (fields["overruns"], fields["queue_dropped"], fields["found_by_sweep"]) == (3, 4, 2)
    assert "overran 3 times" in message and "found 2" in message
    loss.overrun()
    assert not loss.take_sweep()         # one sweep per second
    wait = loss.wait_time()
    assert wait is not None and 0.9 < wait <= 1.0
    clock.now += 1.0
    assert loss.take_sweep()
    loss.swept(0)
    assert not loss.report_if_due()      # one report per 5 s
    clock.now += 4.0
    assert loss.report_if_due()
    assert reports[1][1]["overruns"] == 1 and reports[1][1]["overruns_total"] == 4
    assert reports[1][1]["found_by_sweep_total"] == 2
    assert not loss.report_if_due() and loss.wait_time() is None


class OverrunConnector(ProcConnector):
    """The kernel's answer after an overrun (once ``go`` is set), then quiet."""

    go = threading.Event()

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls = 0

    def open(self, *, ack_timeout: float = 2.0) -> None:
        self.granted_buffer, self.buffer_option = 2 * self.recv_buffer, "SO_RCVBUFFORCE"

    def recv(self) -> list[ProcEvent]:
        if not self.go.wait(0.01):
            return []
        self.calls += 1
        if self.calls <= 2:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        time.sleep(0.01)     # the real socket's timeout, shortened
        return []

    def close(self) -> None:
        pass


def test_an_overrun_is_followed_by_a_sweep_and_one_report() -> None:
    procs = {1: Snapshot(1, exe="/sbin/init", args=["init"], ppid=0, start_ticks=1)}
    docs: list[dict[str, Any]] = []
    reports: list[tuple[str, dict[str, Any]]] = []
    health = SensorHealth("process")
    ctx = SensorContext(emit=docs.append, health=health, state_dir=Path(tempfile.mkdtemp()),
                        report_error=lambda m, f: reports.append((m, f)))
    sensor = ProcessSensor(ProcessConfig(hash=False, receive_buffer=Size(4096)), ctx,
                           procfs=FakeProcFS(procs), platform="linux",
                           connector_factory=OverrunConnector)
    sensor.start()
    try:
        assert health.mode == "netlink" and health.details["receive_buffer"] == "8192"
        procs[66] = Snapshot(66, exe="/tmp/hidden", args=["hidden"], ppid=1, start_ticks=7)
        OverrunConnector.go.set()
        wait_for(lambda: reports, message="the loss report")
    finally:
        sensor.stop()
        sensor.join()
    assert len(reports) == 1
    message, fields = reports[0]
    assert fields["overruns"] == 2 and fields["reason"] == "process events lost"
    assert fields["found_by_sweep"] == 1 and "found 1 running" in message
    found = [d for d in docs if _found_by(d) == "sweep"]
    assert [d["process"]["executable"] for d in found] == ["/tmp/hidden"]


def test_the_receive_buffer_falls_back_to_so_rcvbuf_without_privilege() -> None:
    class Sock:
        def __init__(self) -> None:
            self.set: dict[int, int] = {}

        def setsockopt(self, level: int, opt: int, value: int) -> None:
            if opt == SO_RCVBUFFORCE:
                raise PermissionError(errno.EPERM, "Operation not permitted")
            self.set[opt] = value

        def getsockopt(self, level: int, opt: int) -> int:
            return min(self.set[opt], 212992) * 2

    c = ProcConnector(recv_buffer=1 << 20)
    sock = Sock()
    c._size_buffer(sock)  # type: ignore[arg-type]
    assert c.buffer_option == "SO_RCVBUF" and c.granted_buffer == 425984


# --- real kernel, real agent --------------------------------------------------------------

def _netlink_possible() -> bool:
    if os.geteuid() != 0 or not hasattr(os, "sched_getaffinity"):
        return False
    try:
        c = ProcConnector()
        c.open()
        c.close()
        return True
    except ConnectorError:
        return False


@pytest.mark.service
def test_short_lived_processes_are_captured_with_their_parent(
        collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    if not _netlink_possible():
        reason = "needs root on Linux with the netlink process connector"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "process")
    assert agent.proc is not None
    wait_for(lambda: '"mode": "netlink"' in agent.proc.tail(200) if agent.proc else False,
             timeout=10, message="netlink mode in the agent log")
    script = ("echo $$; for i in $(seq 20); do /bin/true & echo $!; wait; done; "
              "for i in 1 2 3; do sleep 0.03 & echo s$!; wait; done")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    shell = int(out[0])
    trues = {int(x) for x in out[1:] if not x.startswith("s")}
    sleeps = {int(x[1:]) for x in out[1:] if x.startswith("s")}

    def starts() -> dict[int, dict[str, Any]]:
        return {e["process"]["pid"]: e for e in collector.events()
                if e["event"]["dataset"] == "sisguard.process"
                and e["event"]["action"] == "exec"
                and e["process"]["pid"] in trues | sleeps}

    got = wait_for(lambda: len(s := starts()) == len(trues | sleeps) and s, timeout=30,
                   message="every short-lived process")
    assert isinstance(got, dict)
    for pid in trues | sleeps:
        p = got[pid]["process"]
        assert p["parent"]["pid"] == shell
        assert p["parent"]["executable"] == "/usr/bin/bash"
        assert "seq 20" in p["parent"]["command_line"]
        assert p["entity_id"] and p["parent"]["entity_id"]
    # /bin/true lives ~1 ms: most are described, some only by pid and parent
    assert any(got[pid]["process"].get("executable") == "/usr/bin/true" for pid in trues)
    for pid in sleeps:  # 30 ms is plenty: fully described, as Sigma rules need
        p = got[pid]["process"]
        assert p["executable"] == "/usr/bin/sleep" and p["command_line"] == "sleep 0.03"
        assert p["args"] == ["sleep", "0.03"] and p["name"] == "sleep"
        assert len(p["hash"]["sha256"]) == 64 and p["working_directory"]
        assert got[pid]["user"]["name"] == "root"
    ends = wait_for(lambda: {e["process"]["pid"] for e in collector.events()
                             if e["event"]["action"] == "exit"} >= sleeps, timeout=30,
                    message="exit events")
    assert ends


# --- the running image's hash, through /proc/PID/exe --------------------------------------

def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def own_sleep(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, str]]:
    """A copy of sleep, running from a path of ours; its hash as started."""
    prog = tmp_path / "prog"
    shutil.copy("/bin/sleep", prog)
    with open(prog, "ab") as f:      # not the system's sleep: its own hash
        f.write(b"\0sisguard-test")
    digest = _sha256(str(prog))
    proc = subprocess.Popen([str(prog), "30"])
    wait_for(lambda: os.readlink(f"/proc/{proc.pid}/exe") == str(prog), message="exec")
    try:
        yield proc, prog, digest
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(20)   # a blocking open would hang here: fail instead
def test_hash_is_the_running_image_whatever_replaced_its_path(
        own_sleep: tuple[subprocess.Popen[bytes], Path, str], tmp_path: Path) -> None:
    proc, prog, digest = own_sleep
    assert HashCache().sha256(proc.pid) == ExeHash(sha256=digest)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.rename(fifo, prog)                           # a FIFO over the path
    assert HashCache().sha256(proc.pid) == ExeHash(sha256=digest)
    prog.unlink()
    prog.symlink_to("/bin/true")                    # a link to a benign binary
    assert HashCache().sha256(proc.pid) == ExeHash(sha256=digest)
    assert digest != _sha256("/bin/true")
    prog.unlink()                                   # deleted
    assert HashCache().sha256(proc.pid) == ExeHash(sha256=digest)


def test_a_hash_that_cannot_be_taken_says_why(
        own_sleep: tuple[subprocess.Popen[bytes], Path, str]) -> None:
    proc, prog, _ = own_sleep
    over = HashCache(max_bytes=1000).sha256(proc.pid)
    assert over.sha256 is None and over.error is not None
    assert "hash_max_bytes" in over.error and str(prog.stat().st_size) in over.error
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    lost = HashCache().sha256(gone.pid)
    assert lost.sha256 is None and lost.error is not None and "gone" in lost.error


def test_hashes_are_cached_by_the_file_not_the_path(
        own_sleep: tuple[subprocess.Popen[bytes], Path, str]) -> None:
    proc, prog, digest = own_sleep
    second = subprocess.Popen([str(prog), "30"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{second.pid}/exe") == str(prog), message="exec")
        cache = HashCache()
        digests: list[int] = []
        real = cache._digest

        def counted(opened: OpenExe) -> ExeHash:
            digests.append(opened.fd)
            return real(opened)

        cache._digest = counted  # type: ignore[method-assign]
        assert cache.sha256(proc.pid).sha256 == digest
        assert cache.sha256(second.pid).sha256 == digest
        assert len(digests) == 1
        first = cache.begin(proc.pid)          # cached: no descriptor kept open
        assert first == ExeHash(sha256=digest)
    finally:
        second.kill()
        second.wait()


def test_the_exe_opened_by_the_reader_is_hashed_after_the_process_is_gone(
        tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    shutil.copy("/bin/sleep", prog)
    proc = subprocess.Popen([str(prog), "30"])
    wait_for(lambda: os.readlink(f"/proc/{proc.pid}/exe") == str(prog), message="exec")
    cache = HashCache()
    opened = cache.begin(proc.pid)
    proc.kill()
    proc.wait()
    prog.unlink()
    assert isinstance(opened, OpenExe)
    assert cache.finish(opened) == ExeHash(sha256=_sha256("/bin/sleep"))
    assert opened.closed


def test_mountinfo_gives_the_file_system_of_a_device() -> None:
    text = (b"22 27 0:21 / /proc rw,relatime - proc proc rw\n"
            b"29 27 253:0 / / rw,relatime shared:1 master:2 - ext4 /dev/vda rw\n"
            b"41 29 0:45 / /home/u/mnt rw,nosuid,nodev - fuse.evil evil rw,user_id=65534\n")
    assert fs_type(text, 253, 0) == "ext4"
    assert fs_type(text, 0, 45) == "fuse.evil"
    assert fs_type(text, 0, 46) is None
    assert fs_type(b"garbage\n\n1 2 0:45 x\n", 0, 45) is None


@pytest.mark.service
def test_an_image_on_a_file_system_not_allowed_is_never_opened(tmp_path: Path) -> None:
    """What a FUSE or NFS executable gets (tmpfs, excluded, stands in for them here)."""
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("needs root (mounts a tmpfs)")
        pytest.skip("needs root (mounts a tmpfs)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copy("/bin/sleep", mnt / "prog")
        proc = subprocess.Popen([str(mnt / "prog"), "30"])
        try:
            wait_for(lambda: os.readlink(f"/proc/{proc.pid}/exe") == str(mnt / "prog"),
                     message="exec")
            dev = os.stat(mnt / "prog").st_dev
            assert os.major(dev) == 0   # anonymous: the mountinfo path is taken
            allowed = HashCache().sha256(proc.pid)
            assert allowed == ExeHash(sha256=_sha256("/bin/sleep"))
            refused = HashCache(file_systems=["ext4"]).sha256(proc.pid)
            assert refused.sha256 is None and refused.error is not None
            assert "tmpfs file system" in refused.error
            assert f"{os.major(dev)}:{os.minor(dev)}" in refused.error
        finally:
            proc.kill()
            proc.wait()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_hash_file_systems_is_a_setting() -> None:
    config = from_dict(ProcessConfig, {"hash_file_systems": ["ext4", "nfs4"]},
                       source="<test>", path="sensor.process")
    assert config.hash_file_systems == ("ext4", "nfs4")
    assert "tmpfs" in ProcessConfig().hash_file_systems
    assert not any(t.startswith(("fuse", "nfs", "cifs")) for t in LOCAL_FILE_SYSTEMS)
