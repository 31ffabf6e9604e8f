"""Discovery over both servers, the merge into FIM, and the re-read on change."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config
from agent.sensors.fim.config import FimConfig, WatchPath, with_web_roots
from agent.timer import Timer
from agent.webconf import WebRoot
from agent.webroots import Discovery, Poller, discover, server_kind, web_logs
from common.yamlconf import from_dict
from tests.harness import wait_for


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_discover_reads_both_servers_and_skips_absent_ones(tmp_path: Path) -> None:
    nginx = write(tmp_path / "nginx" / "nginx.conf", "http { server { server_name a;\n"
                  f"root {tmp_path}/www/a; access_log {tmp_path}/log/a.log; }} }}\n")
    apache = write(tmp_path / "apache2" / "apache2.conf",
                   f"<VirtualHost *:80>\nDocumentRoot {tmp_path}/www/b\nServerName b\n"
                   f"CustomLog {tmp_path}/log/b.log combined\n</VirtualHost>\n")
    found = discover((str(nginx), str(apache), "/nonexistent/nginx.conf", "/x/unknown.conf"))
    assert [(r.path, r.server, r.vhost) for r in found.roots] == [
        (f"{tmp_path}/www/a", "nginx", "a"), (f"{tmp_path}/www/b", "apache", "b")]
    assert web_logs(found) == [(f"{tmp_path}/log/a.log", "combined", "a"),
                               (f"{tmp_path}/log/b.log", "combined", "b")]
    assert found.configs == (str(nginx), str(apache)) and found.files == 2
    assert found.errors == ("/x/unknown.conf: neither nginx nor apache (prefix it nginx: "
                            "or apache:)",)
    assert found.details()["web_roots"] == f"2: {tmp_path}/www/a, {tmp_path}/www/b"


def test_heartbeat_details_stay_small_whatever_the_paths() -> None:
    roots = tuple(WebRoot("/srv/" + "x" * 4000 + str(i), "nginx", None, "root", "f:1")
                  for i in range(200))
    details = Discovery(roots=roots).details()
    assert details["web_roots"].startswith("200: /srv/xxx")
    assert details["web_roots"].endswith("... (+180 more)")
    assert len(details["web_roots"]) < 2100 and details["web_logs"] == "0"


def test_server_kind() -> None:
    assert server_kind("/etc/nginx/nginx.conf") == "nginx"
    assert server_kind("/etc/httpd/conf/httpd.conf") == "apache"
    assert server_kind("apache:/opt/web/main.conf") == "apache"
    assert server_kind("/opt/web/main.conf") is None


def test_merge_adds_roots_tags_watched_paths_inside_and_explicit_wins(tmp_path: Path
                                                                      ) -> None:
    for d in ("www/a/uploads", "www/b", "www/c"):
        (tmp_path / d).mkdir(parents=True)
    config = from_dict(FimConfig, {"paths": [
        str(tmp_path / "www" / "a" / "uploads"),               # --watch inside a root
        {"path": str(tmp_path / "www" / "b"), "report_changes": True},  # explicit
        "/etc"]}, source="<test>", path="sensor.fim")
    merged = with_web_roots(config, [str(tmp_path / "www" / "a"), str(tmp_path / "www" / "b"),
                                     str(tmp_path / "www" / "missing")])
    by_root = {wp.root: wp for wp in merged.watch_paths}
    uploads = by_root[str(tmp_path / "www" / "a" / "uploads")]
    assert uploads.tags == ("web_root",) and uploads.content_checks
    b = by_root[str(tmp_path / "www" / "b")]   # keeps its settings, gains the tag
    assert b.report_changes and not b.content_checks and b.tags == ("web_root",)
    assert by_root[str(tmp_path / "www" / "a")] == WatchPath(
        path=tmp_path / "www" / "a", content_checks=True, tags=("web_root",))
    assert by_root["/etc"].tags == ()
    assert str(tmp_path / "www" / "missing") not in by_root
    assert len(merged.watch_paths) == 4


def test_agent_config_keys(tmp_path: Path) -> None:
    conf = write(tmp_path / "agent.yml", "web_roots: off\nweb_server_configs: [nginx:/a]\n"
                 "web_roots_poll: 5s\n")
    config, _ = load_config(conf, {})
    assert config.web_roots == "off" and config.web_server_configs == ("nginx:/a",)
    assert float(config.web_roots_poll) == 5.0
    write(conf, "web_roots: sometimes\n")
    try:
        load_config(conf, {})
    except Exception as e:
        assert "web_roots" in str(e)
    else:
        raise AssertionError("web_roots: sometimes accepted")


def test_poller_sees_a_new_site_and_a_root_coming_into_being(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx" / "nginx.conf", "include sites/*;\n")
    configs = (str(conf),)
    changes: list[Discovery] = []
    poller = Poller(configs, 60.0, discover(configs), changes.append)
    assert not poller.poll()
    write(tmp_path / "nginx" / "sites" / "new", f"server {{ root {tmp_path}/new; }}\n")
    assert poller.poll() and [r.path for r in changes[-1].roots] == [f"{tmp_path}/new"]
    assert not poller.poll()
    (tmp_path / "new").mkdir()   # the root now exists: FIM can watch it
    assert poller.poll() and len(changes) == 2


def test_poller_runs_on_the_agents_timer(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx" / "nginx.conf", "include sites/*;\n")
    configs = (str(conf),)
    changes: list[Discovery] = []
    timer = Timer(name="test-timer")
    poller = Poller(configs, 0.1, discover(configs), changes.append, timer=timer)
    poller.start()
    try:
        assert [job.name for job in timer.jobs] == ["web-roots"]
        write(tmp_path / "nginx" / "sites" / "new", f"server {{ root {tmp_path}/new; }}\n")
        wait_for(lambda: changes, timeout=10, message="the re-read on the timer")
        assert [r.path for r in changes[-1].roots] == [f"{tmp_path}/new"]
    finally:
        poller.stop()
        timer.stop()
    assert timer.jobs == []
