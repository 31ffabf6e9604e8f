"""The file side joined to the web side, with a real nginx, agent and collector.

The agent is given no path: it finds the nginx web root and access log in nginx's
config. A PHP web shell written into the root's uploads directory (by the unprivileged
user the web server runs as), flagged by a YARA rule written here, then requested with
``?cmd=id``, must raise the script-written-then-requested and the request-to-a-flagged-
web-shell correlations once each; a 404 scan from one address raises one scanning alert,
and 16 POSTs to wp-login.php one brute-force alert.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.test_webroots import Site, site, write  # noqa: F401
from tests.harness import REPO, Agent, Collector, wait_for

THEN_REQUESTED = "Script Written To A Web Root Then Requested Over HTTP"
FLAGGED = "Request To A File Flagged As A Web Shell"
SCANNING = "Web Scanning From One Address (Many 404s)"
BRUTE_FORCE = "Web Login Brute Force From One Address"
# the kind of rule a security team keeps: a command function's name cut in two
YARA_RULE = r"""
rule php_split_function_name : webshell
{
    strings:
        $open = "<?php"
        $split = /'(sys|pass|shell_|ex)'\s*\.\s*'(tem|thru|exec|ec)'/
    condition:
        $open at 0 and $split
}
"""
# no shipped signature matches this one: only the YARA rule flags it
SHELL = b"<?php $c = $_GET; $f = 'pass' . 'thru'; $f($c['cmd']);\n"


def get(port: int, target: str, method: str = "GET") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target, body=b"log=admin&pwd=123456" if method == "POST" else None)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def names(collector: Collector) -> list[str]:
    return [a["rule"]["name"] for a in collector.alerts()]


def web(collector: Collector, query: str) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["event"]["dataset"] == "sisguard.web"
            and e.get("url", {}).get("query") == query]


def test_shell_written_flagged_by_yara_then_requested_and_a_404_scan(
        site: Site, collector_factory: Callable[..., Collector],  # noqa: F811
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    collector = collector_factory("--rules", str(REPO / "rules" / "web"))
    rules = write(tmp_path / "shells.yar", YARA_RULE)
    config = write(tmp_path / "agent.yml", f"""\
sensors: [fim, weblog]
web_roots: auto
web_server_configs: ["nginx:{site.nginx_conf}"]
sensor:
  fim:
    yara_rules: ['{rules}']
    yara_timeout: 2s
  weblog:
    poll_interval: 0.1
""")
    uploads = site.nginx_root / "uploads"
    uploads.mkdir()
    os.chown(uploads, 65534, 65534)   # the upload directory the web server may write
    agent = agent_factory(collector, "--config", str(config), "--web-roots", "auto")
    assert agent.proc is not None
    proc = agent.proc
    wait_for(lambda: '"weblog following"' in proc.since(0), timeout=10,
             message="the access log nginx's config names, followed")

    # the upload, written as the web server's unprivileged user
    shell = uploads / "x.php"
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "sh", "-c", f"cat > '{shell}'"], input=SHELL, check=True, timeout=10)

    def created() -> list[dict[str, Any]]:
        return [e for e in collector.events() if e["event"]["dataset"] == "sisguard.fim"
                and e["event"]["action"] == "created" and e["file"]["path"] == str(shell)]

    (fim,) = wait_for(created, timeout=15, message=f"created {shell}")
    assert fim["tags"] == ["web_root"]
    assert fim["sisguard"]["content"]["yara"] == [
        {"rule": "php_split_function_name", "namespace": "shells", "tags": ["webshell"]}]
    assert fim["sisguard"]["content"]["signatures"] == ["yara:shells.php_split_function_name"]

    assert get(site.nginx_port, "/uploads/x.php?cmd=id") == 200
    (request,) = wait_for(lambda: web(collector, "cmd=id"), timeout=15,
                          message="the request's web event")
    assert request["file"]["path"] == str(shell)        # the join: the same file.path
    assert request["sisguard"]["web"]["root"] == str(site.nginx_root)
    wait_for(lambda: {THEN_REQUESTED, FLAGGED} <= set(names(collector)) or None,
             timeout=15, message=f"the two correlations (have {names(collector)})")

    # a scanner walking the site: 35 misses from one address in a few seconds
    for i in range(35):
        assert get(site.nginx_port, f"/backup-{i}.zip") == 404
    wait_for(lambda: SCANNING in names(collector) or None, timeout=15,
             message=f"the scanning alert (have {names(collector)})")

    # password guessing: 16 POSTs to wp-login.php (nginx has no PHP here: the answer
    # does not matter, the POSTs do)
    for _ in range(16):
        get(site.nginx_port, "/wp-login.php", "POST")
    wait_for(lambda: BRUTE_FORCE in names(collector) or None, timeout=15,
             message=f"the brute-force alert (have {names(collector)})")

    # everything sent before the last request is in: then count
    assert get(site.nginx_port, "/index.html?last=1") == 200
    wait_for(lambda: web(collector, "last=1"), timeout=15, message="the last request")
    assert get(site.nginx_port, "/uploads/x.php?cmd=uname") == 200
    wait_for(lambda: web(collector, "cmd=uname"), timeout=15, message="a second use")
    counts = {n: names(collector).count(n)
              for n in (THEN_REQUESTED, FLAGGED, SCANNING, BRUTE_FORCE)}
    assert counts == {THEN_REQUESTED: 1, FLAGGED: 1, SCANNING: 1, BRUTE_FORCE: 1}, counts
    alert = next(a for a in collector.alerts() if a["rule"]["name"] == THEN_REQUESTED)
    assert str(shell) in json.dumps(alert)
