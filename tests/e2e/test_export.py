"""Alerts of a real agent, through a real collector, to a real rsyslog (TCP and TLS) and
to an HTTPS receiver, while each is down for a while: nothing lost, nothing twice.

The attacker is an unprivileged user (``setpriv --reuid=65534``) dropping scripts into
a web root, one of them named to forge a syslog message and CEF fields.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.outputs.cef import parse_cef
from tests.collector.outputs.receivers import HttpsReceiver, Rsyslog, Tls, make_tls
from tests.harness import REPO, Agent, Collector, wait_for

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
TOKEN = "soc-bearer-token-e2e"
RULE_FILE = REPO / "rules" / "fim" / "webshell_script_created_in_web_root.yml"
RULE_ID = "fcc1aa39-b02d-4ca8-9762-de0d92c48600"
# a newline, a syslog header, a JSON object, CEF separators: one file name
HOSTILE = ('up\n<13>1 2026-12-02T00:00:00Z web01 sisguard - alert - {"forged":true}'
           '|CEF:0|x|y|1|2|3|10|cs3=forged filePath\\=etc .php')


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the attacker can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="sisguard-export-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def drop_scripts(www: Path, *names: str) -> None:
    script = 'for n in "$@"; do printf "<?php system(1);" > "$n"; done'
    result = subprocess.run([*AS_NOBODY, "sh", "-ec", script, "sh", *names], cwd=www,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def config(path: Path, tls: Tls, rsyslog: Rsyslog, receiver: HttpsReceiver) -> Path:
    queue = {"backoff_initial": "0.1s", "backoff_max": "0.5s"}
    token = path.parent / "soc.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    path.write_text(json.dumps({"outputs": {
        "soc-tcp": {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.tcp_port,
                    "queue": queue},
        "soc-tls": {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.tls_port,
                    "payload": "cef", "cef": {"vendor": "So TTTT", "product": "sisguard"},
                    "tls": {"ca": str(tls.ca), "cert": str(tls.client_cert),
                            "key": str(tls.client_key), "server_name": "soc.test"},
                    "queue": queue},
        "soc-https": {"type": "https", "url": receiver.url, "ca": str(tls.ca),
                      "cert": str(tls.client_cert), "key": str(tls.client_key),
                      "token_file": str(token), "queue": queue},
    }}))
    return path


def webshell_alerts(collector: Collector) -> dict[str, str]:
    """alert id -> file path, from the collector's own archive."""
    return {a["event"]["id"]: a["file"]["path"] for a in collector.alerts()
            if a["rule"].get("id") == RULE_ID}


def tcp_ids(rsyslog: Rsyslog) -> Counter[str]:
    # every line is one whole JSON document: no line was forged
    return Counter(json.loads(line)["event"]["id"] for line in rsyslog.lines(rsyslog.tcp_file))


def tls_ids(rsyslog: Rsyslog) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in rsyslog.lines(rsyslog.tls_file):
        header, ext = parse_cef(line)
        assert header[:3] == ["CEF:0", "So TTTT", "sisguard"], line
        out[ext["externalId"]] += 1
    return out


def queued(collector: Collector, name: str) -> int:
    path = collector.data_dir / "outputs" / name / "queue.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])


def test_alerts_reach_rsyslog_and_https_through_their_outages_exactly_once(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path, public_dir: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    rsyslog = Rsyslog(tmp_path / "rsyslog", tls)
    receiver = HttpsReceiver(tls, TOKEN)
    receiver.failing.set()                 # the HTTPS receiver starts with an outage
    receiver.start()
    rsyslog.start()
    try:
        cfg = config(tmp_path / "collector.yml", tls, rsyslog, receiver)
        collector = collector_factory("--config", str(cfg), "--rules", str(RULE_FILE))
        www = public_dir / "www"
        www.mkdir()
        os.chown(www, NOBODY, NOBODY)
        agent_factory(collector, "--sensors", "fim", "--web-root", str(www))

        drop_scripts(www, "a.php", "b.php", HOSTILE)
        first = wait_for(lambda: (lambda a: a if len(a) >= 3 else None)(
            webshell_alerts(collector)), timeout=30, message="three web shell alerts")
        wait_for(lambda: set(first) <= set(tcp_ids(rsyslog)), message="alerts over TCP")
        wait_for(lambda: set(first) <= set(tls_ids(rsyslog)), message="alerts over TLS")
        assert str(www / HOSTILE) in first.values()
        wait_for(lambda: receiver.statuses[503] >= 2, message="HTTPS retried while 503")

        rsyslog.stop()                     # the SOC's syslog goes down
        drop_scripts(www, "c.php", "d.php")
        every = wait_for(lambda: (lambda a: a if len(a) >= 5 else None)(
            webshell_alerts(collector)), timeout=30, message="five web shell alerts")
        for name in ("soc-tcp", "soc-tls"):
            wait_for(lambda n=name: queued(collector, n) >= 2,  # type: ignore[misc]
                     message=f"{name} holds them")
        rsyslog.start()
        receiver.failing.clear()

        wait_for(lambda: set(every) <= set(tcp_ids(rsyslog)), timeout=20,
                 message="every alert over TCP after the outage")
        wait_for(lambda: set(every) <= set(tls_ids(rsyslog)), timeout=20,
                 message="every alert over TLS after the outage")
        wait_for(lambda: set(every) <= set(receiver.taken), timeout=20,
                 message="every alert over HTTPS after the 503s")
        for name in ("soc-tcp", "soc-tls", "soc-https"):
            wait_for(lambda n=name: queued(collector, n) == 0,  # type: ignore[misc]
                     message=f"{name} drained")
        assert [i for i, n in tcp_ids(rsyslog).items() if n > 1] == []
        assert [i for i, n in tls_ids(rsyslog).items() if n > 1] == []
        assert [i for i, n in receiver.taken.items() if n > 1] == []

        # the hostile name: one message, one value, exactly the attacker's bytes
        hostile_id = next(i for i, p in every.items() if p == str(www / HOSTILE))
        by_id = {json.loads(x)["event"]["id"]: json.loads(x)
                 for x in Rsyslog.lines(rsyslog.tcp_file)}
        assert by_id[hostile_id]["file"]["path"] == str(www / HOSTILE)
        assert all("forged" not in doc for doc in by_id.values())
        cef = {parse_cef(x)[1]["externalId"]: parse_cef(x)
               for x in Rsyslog.lines(rsyslog.tls_file)}
        header, ext = cef[hostile_id]
        assert ext["filePath"] == str(www / HOSTILE) and ext["fname"] == HOSTILE
        assert ext["cs3"] != "forged" and len(header) == 7
        assert receiver.documents[hostile_id]["file"]["path"] == str(www / HOSTILE)
    finally:
        rsyslog.stop()
        receiver.stop()
