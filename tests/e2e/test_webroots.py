"""Web roots found by themselves, with real nginx and apache2 serving on loopback.

The agent is given no path: only ``web_roots: auto`` and the two servers' main config
files. It must find both web roots and both logs, a PHP web shell dropped in the nginx
root must raise the web-shell alerts through a real collector, and an upload renamed
``shell.txt -> shell.php`` while the agent was stopped must be one ``renamed`` event.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, SHARED, Agent, Collector, cli, free_port, in_ci, wait_for

AgentFactory = Callable[..., Agent]
MODULES = Path("/usr/lib/apache2/modules")
SCRIPT_RULE = "Script File Created In Web Root"
SIGNATURE_RULE = "Web Shell Code Found In File"


def need(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        message = f"{program} is not installed (apt-get install {program})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Site:
    base: Path
    nginx_conf: Path
    apache_conf: Path
    nginx_root: Path
    apache_root: Path
    logs: Path
    nginx_port: int
    apache_port: int


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def layout(base: Path) -> Site:
    site = Site(base, base / "nginx" / "nginx.conf", base / "apache2" / "apache2.conf",
                base / "www" / "portal", base / "www" / "intranet", base / "log",
                free_port(), free_port())
    for d in (site.nginx_root, site.apache_root / "uploads", site.logs,
              base / "nginx" / "tmp", base / "apache2" / "run"):
        d.mkdir(parents=True, exist_ok=True)
    write(site.nginx_root / "index.html", "<h1>Cổng thông tin</h1>\n")
    write(site.apache_root / "index.html", "<h1>Intranet</h1>\n")
    n = base / "nginx"
    write(site.nginx_conf, f"""\
# a test nginx: loopback only, everything under {base}
daemon off;
worker_processes 1;
pid {n}/nginx.pid;
error_log {site.logs}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {n}/tmp/body;
    proxy_temp_path {n}/tmp/proxy;
    fastcgi_temp_path {n}/tmp/fastcgi;
    uwsgi_temp_path {n}/tmp/uwsgi;
    scgi_temp_path {n}/tmp/scgi;
    include sites-enabled/*;
}}
""")
    write(n / "sites-available" / "portal", f"""\
server {{
    listen 127.0.0.1:{site.nginx_port};
    server_name portal.test;
    root "{site.nginx_root}";
    access_log {site.logs}/portal-access.log combined;
}}
""")
    (n / "sites-enabled").mkdir()
    os.symlink(n / "sites-available" / "portal", n / "sites-enabled" / "portal")
    a = base / "apache2"
    write(a / "envvars", f"export APACHE_LOG_DIR={site.logs}$SUFFIX\n")
    write(site.apache_conf, f"""\
ServerRoot "{a}"
Mutex file:{a}/run default
PidFile {a}/run/apache2.pid
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule dir_module {MODULES}/mod_dir.so
User nobody
Group nogroup
ServerName localhost
Listen 127.0.0.1:{site.apache_port}
ErrorLog ${{APACHE_LOG_DIR}}/apache-error.log
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
IncludeOptional sites-enabled/*.conf
""")
    write(a / "sites-enabled" / "intranet.conf", f"""\
<VirtualHost 127.0.0.1:{site.apache_port}>
    ServerName intranet.test
    DocumentRoot {site.apache_root}
    <Directory {site.apache_root}>
        Require all granted
    </Directory>
    CustomLog ${{APACHE_LOG_DIR}}/intranet-access.log combined
</VirtualHost>
""")
    return site


@pytest.fixture
def site() -> Iterator[Site]:
    nginx, apache2 = need("nginx"), need("apache2")
    if not MODULES.is_dir():
        pytest.fail(f"{MODULES}: apache2 modules missing")
    # not under pytest's private tmp: the servers' workers (nobody) must read the roots,
    # and no parent may be writable by others (the FIM root check would say so)
    base = Path(tempfile.mkdtemp(prefix="sisguard-webroots-", dir="/srv"))
    os.chmod(base, 0o755)
    s = layout(base)
    env = {**os.environ, "APACHE_LOG_DIR": str(s.logs)}
    procs = [subprocess.Popen([nginx, "-e", str(s.logs / "nginx-start.log"), "-c",
                               str(s.nginx_conf)], stdout=subprocess.DEVNULL,
                              stderr=open(s.logs / "nginx.out", "wb")),  # noqa: SIM115
             subprocess.Popen([apache2, "-d", str(base / "apache2"), "-f", str(s.apache_conf),
                               "-DFOREGROUND"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(s.logs / "apache.out", "wb"))]  # noqa: SIM115
    try:
        for port, name in ((s.nginx_port, "nginx"), (s.apache_port, "apache")):
            wait_for(lambda p=port: _get(p, "/") == 200, timeout=20,  # type: ignore[misc]
                     message=f"{name} serving on {port}: "
                             f"{(s.logs / f'{name}.out').read_text(errors='replace')}")
        yield s
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        shutil.rmtree(base, ignore_errors=True)


def _get(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except OSError:
        return None


def _alerts(collector: Collector, rule: str, path: Path) -> list[dict[str, Any]]:
    return [a for a in collector.alerts() if a["rule"]["name"] == rule
            and json.dumps(a).find(str(path)) >= 0]


def _fim(collector: Collector, action: str, path: Path) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["event"]["dataset"] == "sisguard.fim"
            and e["event"]["action"] == action and e["file"]["path"] == str(path)]


def test_web_roots_and_logs_found_alone_webshell_alerted_rename_while_stopped(
        site: Site, collector_factory: Callable[..., Collector], agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    collector = collector_factory("--rules", str(REPO / "rules"))
    config = write(tmp_path / "agent.yml", f"""\
heartbeat_interval: 1s
sensors: [fim]
web_roots: auto
web_roots_poll: 1s
web_server_configs: ["nginx:{site.nginx_conf}", "apache:{site.apache_conf}"]
""")
    (site.apache_root / "uploads" / "shell.txt").write_text(
        "<?php echo shell_exec($_REQUEST['c']); ?>\n")
    agent = agent_factory(collector, "--config", str(config),   # no path given
                          "--web-roots", "auto")
    assert agent.proc is not None
    text = agent.proc.since(0)
    found = [json.loads(line) for line in text.splitlines()
             if '"web root found"' in line or '"web log found"' in line]
    assert {(f["path"], f["server"], f["vhost"]) for f in found
            if f["msg"] == "web root found"} == {
        (str(site.nginx_root), "nginx", "portal.test"),
        (str(site.apache_root), "apache", "intranet.test")}
    logs = {(f["path"], f["kind"], f["format"]) for f in found
            if f["msg"] == "web log found"}
    assert logs == {(str(site.logs / "portal-access.log"), "access", "combined"),
                    (str(site.logs / "nginx-error.log"), "error", "nginx:error"),
                    (str(site.logs / "intranet-access.log"), "access", "combined"),
                    (str(site.logs / "apache-error.log"), "error", "apache:error")}
    # the servers really write where the agent looked
    assert (site.logs / "portal-access.log").stat().st_size > 0
    assert (site.logs / "intranet-access.log").stat().st_size > 0

    def fim_details() -> dict[str, str] | None:
        shown = json.loads(cli("collector", "agents", "show", "--data-dir",
                               str(collector.data_dir), agent.agent_id).stdout)
        sensors = (shown.get("heartbeat") or {}).get("sensors", [])
        fim = next((s for s in sensors if s["name"] == "fim"), None)
        return fim["details"] if fim and fim["details"].get("web_roots") else None

    details = wait_for(fim_details, timeout=10, message="web roots in a FIM heartbeat")
    assert details["web_roots"].startswith("2: ") and str(site.nginx_root) in \
        details["web_roots"] and str(site.apache_root) in details["web_roots"]
    assert details["web_logs"].startswith("4: ")

    # a web shell dropped in the nginx root: both web-shell rules, no path configured
    shell = site.nginx_root / "x.php"
    shell.write_text("<?php @eval(base64_decode($_POST['z0'])); system($_GET['cmd']); ?>\n")
    wait_for(lambda: _alerts(collector, SCRIPT_RULE, shell), timeout=15,
             message=f"{SCRIPT_RULE} for {shell}")
    wait_for(lambda: _alerts(collector, SIGNATURE_RULE, shell), timeout=15,
             message=f"{SIGNATURE_RULE} for {shell}")
    created = _fim(collector, "created", shell)
    assert len(created) == 1 and "web_root" in created[0]["tags"]

    # renamed while the agent is down: one `renamed`, the script rule still fires
    agent.proc.stop()
    uploads = site.apache_root / "uploads"
    old, new = uploads / "shell.txt", uploads / "shell.php"
    os.rename(old, new)
    agent.start()
    renamed = wait_for(lambda: _fim(collector, "renamed", new), timeout=30,
                       message=f"renamed {new}")
    assert renamed[0]["sisguard"]["fim"]["before"]["path"] == str(old)
    assert renamed[0]["sisguard"]["fim"]["detected_by"] == "scan"
    wait_for(lambda: _alerts(collector, SCRIPT_RULE, new), timeout=15,
             message=f"{SCRIPT_RULE} for the renamed {new}")
    # never content-checked as .txt (it was there before the first scan): checked now
    assert renamed[0]["sisguard"]["content"]["categories"] == ["webshell"]
    wait_for(lambda: _alerts(collector, SIGNATURE_RULE, new), timeout=15,
             message=f"{SIGNATURE_RULE} for the renamed {new}")
    assert _fim(collector, "created", new) == [] and _fim(collector, "deleted", old) == []
    assert len(_fim(collector, "renamed", new)) == 1

    # a site enabled later: the configs are re-read and its root watched
    proc = agent.proc   # the restarted agent's
    assert proc is not None
    offset = len(proc.since(0).encode())
    extra = site.base / "www" / "new-site"
    extra.mkdir()
    write(site.base / "nginx" / "sites-enabled" / "new", f"server {{ listen 127.0.0.1:1; "
          f"server_name new.test; root {extra}; }}\n")
    wait_for(lambda: '"fim ready"' in proc.since(offset), timeout=30,
             message="FIM restarted on the new web root")
    page = extra / "cmd.jsp"
    page.write_text("<% Runtime.getRuntime().exec(request.getParameter(\"c\")); %>\n")
    wait_for(lambda: _alerts(collector, SCRIPT_RULE, page), timeout=15,
             message=f"{SCRIPT_RULE} for {page} in the root found on re-read")


def test_logs_found_in_the_configs_are_followed_and_sigmahq_web_rules_fire(
        site: Site, collector_factory: Callable[..., Collector], agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    """No log path given: the weblog sensor follows what nginx's config names, and a SQL
    injection sent to the real nginx raises the SigmaHQ web rule."""
    collector = collector_factory("--rules", str(SHARED / "data" / "sigma" / "web"))
    config = write(tmp_path / "agent.yml", f"""\
sensors: [weblog]
web_roots: auto
web_server_configs: ["nginx:{site.nginx_conf}"]
""")
    agent = agent_factory(collector, "--config", str(config), "--web-roots", "auto")
    assert agent.proc is not None
    access = str(site.logs / "portal-access.log")
    wait_for(lambda: '"weblog following"' in agent.proc.since(0) if agent.proc else None,
             timeout=10, message="the found logs followed")
    assert access in agent.proc.since(0)

    def web(path: str) -> list[dict[str, Any]]:
        return [e for e in collector.events() if e["event"]["dataset"] == "sisguard.web"
                and e.get("url", {}).get("path") == path]

    wait_for(lambda: _get(site.nginx_port, "/index.html?id=1'%20or%20'1'='1") == 200,
             timeout=10, message="nginx answers")
    event = wait_for(lambda: web("/index.html"), timeout=20, message="the request's event")[0]
    assert "'1'='1" in event["url"]["query"]
    assert event["destination"]["domain"] == "portal.test"
    assert event["http"]["response"]["status_code"] == 200
    wait_for(lambda: [a for a in collector.alerts()
                      if a["rule"]["name"] == "SQL Injection Strings In URI"],
             timeout=20, message="the SigmaHQ SQL injection alert")
