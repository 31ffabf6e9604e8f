"""The FIM sensor on a real file system, with a stub context collecting its events."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.platform.linux.inotify import IN_Q_OVERFLOW
from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.fim.config import FimConfig
from agent.sensors.fim.scan import _rename_key
from agent.sensors.fim.sensor import FimSensor
from agent.sensors.fim.state import FileState
from common.yamlconf import from_dict
from tests.harness import wait_for

Doc = dict[str, Any]


class Stub:
    def __init__(self, state_dir: Path) -> None:
        self.lock = threading.Lock()
        self.events: list[Doc] = []
        self.errors: list[tuple[str, dict[str, Any]]] = []
        self.context = SensorContext(emit=self._emit, health=SensorHealth("fim"),
                                     state_dir=state_dir, report_error=self._error)

    def _emit(self, doc: Doc) -> None:
        with self.lock:
            self.events.append(doc)

    def _error(self, message: str, fields: dict[str, Any]) -> None:
        with self.lock:
            self.errors.append((message, fields))

    def fim(self, action: str | None = None, path: Path | str | None = None) -> list[Doc]:
        with self.lock:
            return [e for e in self.events
                    if (action is None or e["event"]["action"] == action)
                    and (path is None or e["file"]["path"] == str(path))]

    def wait(self, action: str, path: Path | str, timeout: float = 10.0) -> Doc:
        found = wait_for(lambda: self.fim(action, path), timeout=timeout,
                         message=f"{action} {path}; have {self.summary()}")
        return found[0]

    def summary(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e["event"]["action"], e["file"].get("path", "")) for e in self.events]


SensorFactory = Callable[..., tuple[FimSensor, Stub]]


@pytest.fixture
def make_sensor(tmp_path: Path) -> Iterator[SensorFactory]:
    running: list[FimSensor] = []

    def make(settings: dict[str, Any], *, state: str = "state") -> tuple[FimSensor, Stub]:
        stub = Stub(tmp_path / state)
        config = from_dict(FimConfig, settings, source="<test>", path="sensor.fim")
        sensor = FimSensor(config, stub.context)
        sensor.start()
        running.append(sensor)
        wait_for(lambda: not sensor._initializing, message="initial scan")
        return sensor, stub

    yield make
    for s in running:
        s.stop()
        s.join(5)


def stop(sensor: FimSensor) -> None:
    sensor.stop()
    sensor.join(5)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>Cổng thông tin</h1>\n")
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text("a\n")
    return root


def test_initial_scan_is_silent_and_records_the_baseline(make_sensor: SensorFactory,
                                                          www: Path) -> None:
    sensor, stub = make_sensor({"paths": [str(www)]})
    assert stub.fim() == []
    assert sensor.reconciler is not None
    assert sensor.reconciler.baseline.get(str(www / "sub" / "a.txt")) is not None
    assert stub.context.health.details["baseline_entries"] == "4"


def test_initial_scan_events_when_asked(make_sensor: SensorFactory, www: Path) -> None:
    _, stub = make_sensor({"paths": [str(www)], "initial_scan_events": True})
    doc = stub.wait("initial_scan", www / "index.html")
    assert len(doc["file"]["hash"]["sha256"]) == 64


def test_create_update_burst_chmod_rename_delete(make_sensor: SensorFactory, www: Path
                                                 ) -> None:
    _, stub = make_sensor({"paths": [str(www)]})
    new = www / "new.html"
    new.write_text("x")
    created = stub.wait("created", new)
    assert created["file"]["size"] == 1 and created["file"]["mode"] == "0644"

    page = www / "index.html"
    before = stub.context.health.events
    for i in range(100):
        with open(page, "a") as f:
            f.write(f"line {i}\n")
    updated = stub.wait("updated", page)
    assert {"hash", "size"} <= set(updated["sisguard"]["fim"]["changed"])
    assert updated["sisguard"]["fim"]["before"]["size"] == len("<h1>Cổng thông tin</h1>\n"
                                                               .encode())
    wait_for(lambda: stub.context.health.events > before, message="events counted")
    assert len(stub.fim("updated", page)) == 1

    os.chmod(page, 0o600)
    attrs = stub.wait("attributes_modified", page)
    assert attrs["sisguard"]["fim"]["changed"] == ["mode"]
    assert attrs["sisguard"]["fim"]["before"]["mode"] == "0644"
    assert attrs["file"]["mode"] == "0600"

    moved = www / "moved.html"
    os.rename(new, moved)
    renamed = stub.wait("renamed", moved)
    assert renamed["sisguard"]["fim"]["before"]["path"] == str(new)
    assert not stub.fim("deleted", new)

    moved.unlink()
    deleted = stub.wait("deleted", moved)
    assert deleted["file"]["hash"]["sha256"] == renamed["file"]["hash"]["sha256"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_chown_reports_owner_change(make_sensor: SensorFactory, www: Path) -> None:
    _, stub = make_sensor({"paths": [str(www)]})
    page = www / "index.html"
    os.chown(page, 1, 1)
    doc = stub.wait("attributes_modified", page)
    assert {"uid", "gid"} <= set(doc["sisguard"]["fim"]["changed"])
    assert doc["sisguard"]["fim"]["before"]["uid"] == "0"
    assert doc["file"]["uid"] == "1"


def test_touch_without_content_change_is_an_mtime_change(make_sensor: SensorFactory,
                                                         www: Path) -> None:
    _, stub = make_sensor({"paths": [str(www)]})
    page = www / "index.html"
    os.utime(page, (1_000_000_000, 1_000_000_000))
    doc = stub.wait("attributes_modified", page)
    assert doc["sisguard"]["fim"]["changed"] == ["mtime"]


def test_deleting_a_directory_reports_every_file_in_it(make_sensor: SensorFactory,
                                                       www: Path) -> None:
    deep = www / "sub" / "deep"
    deep.mkdir()
    for i in range(5):
        (deep / f"f{i}.txt").write_text(str(i))
    _, stub = make_sensor({"paths": [str(www)]})
    shutil.rmtree(www / "sub")
    stub.wait("deleted", www / "sub")
    gone = {e["file"]["path"] for e in stub.fim("deleted")}
    expected = {str(www / "sub"), str(www / "sub" / "a.txt"), str(deep),
                *(str(deep / f"f{i}.txt") for i in range(5))}
    wait_for(lambda: expected <= {e["file"]["path"] for e in stub.fim("deleted")},
             message=f"all deletions, have {gone}")
    assert len(stub.fim("deleted")) == len(expected)


def test_directory_moved_out_of_sight_reports_its_files(make_sensor: SensorFactory,
                                                        www: Path, tmp_path: Path) -> None:
    _, stub = make_sensor({"paths": [str(www)]})
    os.rename(www / "sub", tmp_path / "elsewhere")
    stub.wait("deleted", www / "sub" / "a.txt")
    stub.wait("deleted", www / "sub")


def test_files_created_in_a_new_directory_at_once_are_reported(make_sensor: SensorFactory,
                                                                www: Path) -> None:
    _, stub = make_sensor({"paths": [str(www)]})
    d = www / "fresh" / "er"
    d.mkdir(parents=True)
    for i in range(20):
        (d / f"{i}.php").write_text("x")
    for i in range(20):
        stub.wait("created", d / f"{i}.php")
    (d / "later.php").write_text("y")   # and the new directory is watched
    stub.wait("created", d / "later.php")


def test_directory_rename_carries_old_paths(make_sensor: SensorFactory, www: Path) -> None:
    _, stub = make_sensor({"paths": [str(www)]})
    os.rename(www / "sub", www / "sub2")
    doc = stub.wait("renamed", www / "sub2" / "a.txt")
    assert doc["sisguard"]["fim"]["before"]["path"] == str(www / "sub" / "a.txt")
    (www / "sub2" / "b.txt").write_text("b")   # watch follows the rename
    stub.wait("created", www / "sub2" / "b.txt")


def test_excluded_files_are_not_reported(make_sensor: SensorFactory, www: Path) -> None:
    _, stub = make_sensor({"paths": [{"path": str(www), "exclude": ["cache"]}]})
    (www / "cache").mkdir()
    (www / "cache" / "x.html").write_text("x")
    (www / "page.swp").write_text("x")
    (www / "real.html").write_text("x")
    stub.wait("created", www / "real.html")
    assert [p for _, p in stub.summary() if "cache" in p or p.endswith(".swp")] == []


def test_restart_reports_changes_made_while_stopped(make_sensor: SensorFactory, www: Path
                                                    ) -> None:
    sensor, _ = make_sensor({"paths": [str(www)]})
    stop(sensor)
    (www / "index.html").write_text("defaced")
    (www / "sub" / "a.txt").unlink()
    (www / "added.php").write_text("<?php ?>")
    os.chmod(www / "sub", 0o700)
    _, stub2 = make_sensor({"paths": [str(www)]})
    stub2.wait("updated", www / "index.html")
    stub2.wait("deleted", www / "sub" / "a.txt")
    stub2.wait("created", www / "added.php")
    stub2.wait("attributes_modified", www / "sub")
    assert all(e["sisguard"]["fim"]["detected_by"] == "scan" for e in stub2.fim())
    assert len(stub2.fim()) == 4, stub2.summary()


def test_past_the_watch_budget_changes_are_found_by_scans(make_sensor: SensorFactory,
                                                          www: Path) -> None:
    for name in ("b", "c", "d"):
        (www / name).mkdir()
    sensor, stub = make_sensor({"paths": [str(www)], "max_watches": 2,
                                "unwatched_scan_interval": "0.5s"})
    assert sensor.watcher is not None and sensor.watcher.count == 2
    wait_for(lambda: any("watch limit" in m for m, _ in stub.errors), message="warning")
    unwatched = sorted(sensor.watcher.unwatched)
    assert len(unwatched) == 3
    target = Path(unwatched[-1]) / "late.html"
    target.write_text("x")
    doc = stub.wait("created", target)
    assert doc["sisguard"]["fim"]["detected_by"] == "scan"


def test_file_root_watches_only_that_file(make_sensor: SensorFactory, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    _, stub = make_sensor({"paths": [str(etc / "passwd")]})
    (etc / "other").write_text("x")
    with open(etc / "passwd", "a") as f:
        f.write("evil:x:0:0::/:/bin/sh\n")
    stub.wait("updated", etc / "passwd")
    assert not stub.fim(path=etc / "other")


def test_an_inotify_queue_overflow_is_reported_and_rescanned(make_sensor: SensorFactory,
                                                             www: Path) -> None:
    sensor, stub = make_sensor({"paths": [str(www)]})
    assert sensor.watcher is not None
    for _ in range(3):   # what the kernel queues when it drops events (wd -1)
        sensor.watcher._handle(-1, IN_Q_OVERFLOW, 0, b"")
    reports = [f for _, f in stub.errors if f.get("reason") == "inotify queue overflow; "
                                                             "rescanning"]
    assert len(reports) == 1 and reports[0]["overflows"] == 1   # rate-limited
    wait_for(lambda: sensor.last_scan is not None and sensor.last_scan.reason == "overflow"
             and sensor.last_scan.completed, message="the rescan after the overflow")
    assert sensor._overflows == 3


def test_a_hard_link_others_may_not_read_gives_no_diff_nor_excerpt(
        make_sensor: SensorFactory, www: Path, tmp_path: Path) -> None:
    """Where fs.protected_hardlinks is 0 a user can link a file it cannot read into a
    web root: its bytes stay on the host (the detection itself is still reported)."""
    secret = tmp_path / "secret.php"
    secret.write_text("<?php eval(base64_decode($_POST['k'])); // s3cr3t-1\n")
    secret.chmod(0o600)
    public = tmp_path / "public.txt"
    public.write_text("public-1\n")
    public.chmod(0o644)
    _, stub = make_sensor({"paths": [{"path": str(www), "report_changes": True,
                                      "content_checks": True}]})
    os.link(secret, www / "h.php")
    os.link(public, www / "p.txt")
    doc = stub.wait("created", www / "h.php")
    assert doc["sisguard"]["content"]["categories"] == ["webshell"]
    stub.wait("created", www / "p.txt")
    with open(www / "h.php", "a") as f:   # inotify hears writes through its own path
        f.write("// s3cr3t-2\n")
    with open(www / "p.txt", "a") as f:
        f.write("public-2\n")
    assert "diff" not in stub.wait("updated", www / "h.php")["sisguard"]["fim"]
    assert "+public-2" in stub.wait("updated", www / "p.txt")["sisguard"]["fim"]["diff"]
    assert "s3cr3t" not in json.dumps(stub.events)


def test_a_fifo_is_reported_as_one_and_never_blocks_the_sensor(
        make_sensor: SensorFactory, www: Path) -> None:
    _, stub = make_sensor({"paths": [{"path": str(www), "report_changes": True,
                                      "content_checks": True}]})
    os.mkfifo(www / "pipe.php")
    doc = stub.wait("created", www / "pipe.php")
    assert doc["file"]["type"] == "fifo" and "hash" not in doc["file"]
    (www / "after.html").write_text("<p>after</p>")
    stub.wait("created", www / "after.html")


def test_a_root_whose_parent_others_can_write_is_reported(make_sensor: SensorFactory,
                                                          tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "www").mkdir(parents=True)
    shared.chmod(0o777)
    _, stub = make_sensor({"paths": [str(shared / "www")]})
    assert [m for m, f in stub.errors if f == {"file.path": str(shared / "www")}] == [
        f"watched root can be replaced by another user: {shared} is group- and world-"
        "writable (mode 0777)"]


def test_a_web_shell_written_into_an_unhashed_sparse_file_is_found(
        make_sensor: SensorFactory, www: Path) -> None:
    """Size kept, mtime put back: without a hash only the ctime tells, and it does."""
    big = www / "cache.php"
    with open(big, "wb") as f:
        f.truncate(200 << 20)   # sparse: not hashed
    _, stub = make_sensor({"paths": [{"path": str(www), "content_checks": True}]})
    before = os.stat(big)
    fd = os.open(big, os.O_WRONLY)
    try:
        os.pwrite(fd, b"<?php eval(base64_decode($_POST['c'])); ?>", 0)
    finally:
        os.close(fd)
    os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))
    doc = stub.wait("updated", big)
    assert doc["sisguard"]["fim"]["changed"] == ["ctime"]
    assert doc["sisguard"]["content"]["categories"] == ["webshell"]
    assert doc["sisguard"]["fim"]["hash_skipped"].startswith("sparse: ")


def test_a_rename_made_while_stopped_is_one_renamed_event(make_sensor: SensorFactory,
                                                           www: Path) -> None:
    (www / "upload").mkdir()
    (www / "upload" / "shell.txt").write_text("<?php system($_GET['cmd']); ?>\n")
    watched = {"paths": [{"path": str(www), "tags": ["web_root"], "content_checks": True}]}
    sensor, _ = make_sensor(watched)
    stop(sensor)
    os.rename(www / "upload" / "shell.txt", www / "upload" / "shell.php")
    # a different file that only shares a hash with a deleted one is no rename (made
    # first, so that it cannot reuse the deleted file's inode)
    (www / "copy.txt").write_text("a\n")
    (www / "sub" / "a.txt").unlink()
    _, stub2 = make_sensor(watched)
    renamed = stub2.wait("renamed", www / "upload" / "shell.php")
    # the same bytes, now a script to the web server: content-checked as if new
    assert renamed["sisguard"]["content"]["categories"] == ["webshell"]
    stub2.wait("created", www / "copy.txt")
    stub2.wait("deleted", www / "sub" / "a.txt")
    assert renamed["sisguard"]["fim"]["before"]["path"] == str(www / "upload" / "shell.txt")
    assert renamed["sisguard"]["fim"]["detected_by"] == "scan"
    assert renamed["tags"] == ["web_root"]
    assert not stub2.fim("created", www / "upload" / "shell.php"), stub2.summary()
    assert not stub2.fim("deleted", www / "upload" / "shell.txt"), stub2.summary()
    assert len(stub2.fim()) == 3, stub2.summary()


def test_a_new_file_in_a_freed_inode_is_no_rename() -> None:
    """File systems hand a freed inode to the next file (``rm a; touch b`` while the agent
    is stopped: b has a's inode and, both empty, its hash; seen in a full test run). A
    rename keeps the mtime, a new file does not: only a match of all three is a rename."""
    made = FileState(path="/w/a.txt", type="file", size=0, mode=0o644, uid=0, gid=0,
                     owner="root", group="root", mtime_ns=1_000_000_000,
                     ctime_ns=1_000_000_000, inode=42,
                     hashes={"sha256": hashlib.sha256(b"").hexdigest()})
    moved = dataclasses.replace(made, path="/w/b.txt", ctime_ns=2_000_000_000)
    reused = dataclasses.replace(moved, mtime_ns=2_000_000_000)
    assert _rename_key(made) == _rename_key(moved)          # rename(2): same key
    assert _rename_key(made) != _rename_key(reused)         # a new file, a reused inode


def test_a_directory_renamed_while_stopped_keeps_its_files_as_renamed(
        make_sensor: SensorFactory, www: Path) -> None:
    (www / "sub" / "b.php").write_text("<?php echo 1; ?>\n")
    sensor, _ = make_sensor({"paths": [str(www)]})
    stop(sensor)
    os.rename(www / "sub", www / "moved")
    _, stub2 = make_sensor({"paths": [str(www)]})
    for name in ("a.txt", "b.php"):
        doc = stub2.wait("renamed", www / "moved" / name)
        assert doc["sisguard"]["fim"]["before"]["path"] == str(www / "sub" / name)
    stub2.wait("created", www / "moved")
    stub2.wait("deleted", www / "sub")
    # a directory has no hash to match it by: created + deleted; its files moved once
    assert sorted(stub2.summary()) == sorted([
        ("renamed", str(www / "moved" / "a.txt")), ("renamed", str(www / "moved" / "b.php")),
        ("created", str(www / "moved")), ("deleted", str(www / "sub"))])
