"""The weblog sensor on real files: follows, survives rotation and truncation, resumes
after a restart without losing or repeating a line, cuts long lines, keeps bad ones."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import check_config
from agent.sensors import sensor_class
from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.weblog import (
    ChunkedFollower,
    WebLogConfig,
    WebLogPath,
    WebLogSensor,
    discovered_paths,
)
from agent.webconf import WebLog
from common.errors import ConfigError
from common.yamlconf import Duration, from_dict
from tests.harness import wait_for


def line(n: int, target: str = "/p") -> str:
    return (f'192.0.2.{n % 250} - - [01/Dec/2026:10:00:00 +0000] "GET {target}?n={n} HTTP/1.1" '
            f'200 {n} '
            f'"-" "ua-{n}"\n')


class Run:
    """A sensor on a temp state dir, collecting what it emits."""

    def __init__(self, state: Path, config: WebLogConfig) -> None:
        self.docs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        state.mkdir(exist_ok=True)
        context = SensorContext(emit=self._emit, health=SensorHealth("weblog"),
                                state_dir=state,
                                report_error=lambda m, f: self.errors.append(m))
        self.sensor = WebLogSensor(config, context)
        self.health = context.health

    def _emit(self, doc: dict[str, Any]) -> None:
        with self.lock:
            self.docs.append(doc)

    def numbers(self) -> list[int]:
        with self.lock:
            docs = list(self.docs)
        return [int(d["url"]["query"][2:]) for d in docs if "url" in d]

    def stop(self) -> None:
        self.sensor.stop()
        self.sensor.join(10)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def start(runs: list[Run], tmp_path: Path, *paths: WebLogPath, **options: Any) -> Run:
    config = WebLogConfig(paths=paths, poll_interval=Duration(options.pop("poll", 0.02)),
                          rotate_grace=Duration(0.5), **options)
    run = Run(tmp_path / "state", config)
    run.sensor.start()
    runs.append(run)
    return run


def append(path: Path, *lines: str | bytes) -> None:
    with open(path, "ab") as f:
        for item in lines:
            f.write(item.encode() if isinstance(item, str) else item)


def test_registered_but_not_a_default_sensor() -> None:
    from agent.config import AgentConfig
    assert sensor_class("weblog") is WebLogSensor
    assert "weblog" not in AgentConfig().sensors


def test_rotation_truncation_and_restart_lose_and_repeat_nothing(
        tmp_path: Path, runs: list[Run]) -> None:
    log = tmp_path / "access.log"
    append(log, line(0))  # before the sensor starts: not read (start at the end)
    run = start(runs, tmp_path, WebLogPath(log))
    append(log, *(line(n) for n in range(1, 11)))
    wait_for(lambda: len(run.numbers()) >= 10 or None, timeout=10, message="first lines")
    # logrotate: rename, the server reopens a new file; lines go to both
    os.rename(log, tmp_path / "access.log.1")
    append(tmp_path / "access.log.1", line(11))
    append(log, line(12))
    wait_for(lambda: len(run.numbers()) >= 12 or None, timeout=10, message="after rotation")
    # copytruncate: the file is emptied in place and written again
    os.truncate(log, 0)
    append(log, line(13), line(14))
    wait_for(lambda: len(run.numbers()) >= 14 or None, timeout=10, message="after truncate")
    run.stop()
    # while the agent is down: more lines, and a rotation
    append(log, line(15))
    os.rename(log, tmp_path / "access.log.2")
    append(log, line(16))
    again = start(runs, tmp_path, WebLogPath(log))
    append(log, line(17))
    wait_for(lambda: len(again.numbers()) >= 3 or None, timeout=10, message="after restart")
    assert sorted(run.numbers() + again.numbers()) == list(range(1, 18))
    assert len(run.numbers() + again.numbers()) == 17  # nothing twice
    assert run.health.errors == 0 and again.health.errors == 0


def test_long_invalid_and_unparsed_lines_each_cost_only_themselves(
        tmp_path: Path, runs: list[Run]) -> None:
    log = tmp_path / "access.log"
    log.touch()
    run = start(runs, tmp_path, WebLogPath(log, vhost="portal.example"),
                max_line=1024)
    append(log, line(1), b'\xff\xfe - - [bad] "\x00GET" \xc3\x28\n',
           line(2, target="/" + "A" * 5000), line(3))
    wait_for(lambda: len(run.docs) >= 4 or None, timeout=10, message="four documents")
    bad, long = run.docs[1], run.docs[2]
    assert bad["sisguard"]["web"]["parse_error"] is True
    assert bad["event"]["original"].startswith("\\xff\\xfe - - [bad]")
    assert long["sisguard"]["web"]["truncated"] is True
    assert len(long["event"]["original"]) == 1024
    assert run.numbers() == [1, 3]
    assert all(d["destination"] == {"domain": "portal.example"} for d in run.docs)


def test_add_logs_while_running_and_a_missing_log_is_reported(
        tmp_path: Path, runs: list[Run]) -> None:
    missing = tmp_path / "later.log"
    run = start(runs, tmp_path, WebLogPath(missing))
    assert run.errors and "not found" in run.errors[0]
    append(missing, line(1))  # appears later: read from its start
    wait_for(lambda: run.numbers() == [1] or None, timeout=10, message="late log")
    other = tmp_path / "error.log"
    other.touch()
    assert run.sensor.add_logs([WebLogPath(other, format="nginx_error"),
                                WebLogPath(missing)]) == [other]
    append(other, "2026/12/01 10:00:00 [error] 7#7: *1 boom, client: 192.0.2.1\n")
    wait_for(lambda: any(d["event"]["type"] == ["error"] for d in run.docs) or None,
             timeout=10, message="error log line")
    assert "nginx_error" in run.health.details["logs"]


def test_unreadable_log_is_a_health_event(tmp_path: Path, runs: list[Run]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    log = tmp_path / "access.log"
    log.write_text(line(1))
    os.chmod(log, 0o600)
    os.chown(log, 65534, 65534)
    # root reads anything: stand for the unprivileged agent by a follower that cannot
    run = start(runs, tmp_path, WebLogPath(log))
    entry = next(iter(run.sensor._logs.values()))

    def denied() -> list[bytes]:
        raise PermissionError(13, "Permission denied", str(log))
    entry.follower.poll = denied  # type: ignore[method-assign]
    wait_for(lambda: any("cannot read web log" in e for e in run.errors) or None,
             timeout=10, message="permission error reported")


def test_config_is_strict_and_says_where(tmp_path: Path) -> None:
    config = from_dict(WebLogConfig, {"paths": ["/var/log/nginx/access.log",
                                                {"path": "/x.log", "format": "json"}]},
                       source="t")
    assert [p.format for p in config.logs()] == ["combined", "json"]
    with pytest.raises(ConfigError, match=r"unknown key 'paths\[0\].fromat'"):
        from_dict(WebLogConfig, {"paths": [{"path": "/x", "fromat": "json"}]}, source="t")
    with pytest.raises(ConfigError, match="format"):
        from_dict(WebLogConfig, {"paths": [{"path": "/x", "format": "$a$b"}]}, source="t")
    path = tmp_path / "agent.yml"
    path.write_text("sensors: [weblog]\nsensor:\n  weblog:\n    paths:\n"
                    "      - {path: /x, format: 'no vars'}\n")
    problems = check_config(path)
    assert problems and "no variable" in str(problems[0])
    assert problems[0].location is not None and problems[0].location.line == 5


def test_a_backlog_is_read_a_chunk_at_a_time(tmp_path: Path, runs: list[Run],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ChunkedFollower, "CHUNK", 4096)
    log = tmp_path / "access.log"
    append(log, *(line(n) for n in range(500)))  # ~60 KiB: 15 chunks
    follower = ChunkedFollower(log, None, start_at_end=False, grace=0.0)
    first = follower.poll()
    assert 0 < sum(map(len, first)) <= 4096 and follower.backlog()
    got = list(first)
    while follower.backlog():
        got.extend(follower.poll())
    follower.close()
    assert b"".join(got) == log.read_bytes()
    # the sensor goes on without waiting while there is a backlog, and loses nothing
    run = start(runs, tmp_path, WebLogPath(log), start_at="beginning", poll=30.0)
    wait_for(lambda: len(run.numbers()) >= 500 or None, timeout=20, message="the backlog")
    assert run.numbers() == list(range(500))


def test_logs_the_web_configs_name_become_paths_to_follow() -> None:
    """What agent/webroots.py found (format hints) as weblog paths; unknown formats and
    format strings that cannot be parsed are left out."""
    found = [
        WebLog("/l/a.log", "access", "combined", "nginx", "portal.test", "/e/n.conf"),
        WebLog("/l/j.log", "access", "nginx:json", "nginx", None, "/e/n.conf"),
        WebLog("/l/e.log", "error", "apache:error", "apache", None, "/e/a.conf"),
        WebLog("/l/c.log", "access", "apache:mine", "apache", "intra.test", "/e/a.conf",
               '%h %l %u %t "%r" %>s %b'),
        WebLog("/l/x.log", "access", "nginx:undefined", "nginx", None, "/e/n.conf"),
        WebLog("/l/bad.log", "access", "nginx:bad", "nginx", None, "/e/n.conf", "$a$b"),
    ]
    paths = {str(p.path): p for p in discovered_paths(found)}
    assert set(paths) == {"/l/a.log", "/l/j.log", "/l/e.log", "/l/c.log"}
    assert (paths["/l/a.log"].format, paths["/l/a.log"].vhost,
            paths["/l/a.log"].server) == ("combined", "portal.test", "nginx")
    assert paths["/l/j.log"].format == "json"
    assert paths["/l/e.log"].format == "apache_error"
    assert paths["/l/c.log"].format == '%h %l %u %t "%r" %>s %b'
