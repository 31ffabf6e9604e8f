"""A local user's invalid UTF-8 bytes in names and command lines blind nothing.

The attacker is a real unprivileged user (``setpriv --reuid=65534``) writing in a watched
web root and running processes. Before issue 9 one file named ``x\\xffy`` stopped the agent
from shipping anything, from every sensor, for good (the spool writer failed on the lone
surrogate and re-queued the batch forever), and the stale baseline entry did it again
after a restart. Now every such name arrives escaped (``\\xHH``, docs/events.md), and a
marker written after it arrives too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.text import escape_bytes, unescape
from tests.harness import Agent, Collector, free_port, wait_for

Doc = dict[str, Any]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(script: str, *args: str, cwd: Path | None = None,
              check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a shell script as the unprivileged attacker (uid/gid 65534, no groups)."""
    return subprocess.run([*NOBODY, "sh", "-c", script, "sh", *args], cwd=cwd,
                          capture_output=True, check=check, timeout=30)


@pytest.fixture
def attacker_dir() -> Iterator[Path]:
    """A directory the attacker owns, reachable by it (pytest's tmp_path is root's 0700)."""
    d = Path(os.environ.get("TMPDIR", "/tmp")) / f"sisguard-text-{secrets.token_hex(4)}"
    d.mkdir(mode=0o755)
    os.chown(d, 65534, 65534)
    try:
        yield d
    finally:
        shutil.rmtree(os.fsencode(d), ignore_errors=True)


def _events(collector: Collector, dataset: str) -> list[Doc]:
    return [e for e in collector.events() if e.get("event", {}).get("dataset") == dataset]


def _find(collector: Collector, dataset: str, pred: Callable[[Doc], bool],
          agent: Agent, what: str, timeout: float = 15) -> Doc:
    found = wait_for(lambda: [e for e in _events(collector, dataset) if pred(e)],
                     timeout=timeout,
                     message=f"{what}\n{agent.proc.tail() if agent.proc else ''}")
    return found[0]


def _all_text_valid(collector: Collector) -> None:
    """Every stored document is valid UTF-8 (the archive is read as strict UTF-8 JSON)."""
    for doc in collector.events():
        json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _fim(collector: Collector, agent: Agent, action: str, path: bytes) -> Doc:
    text = escape_bytes(path)
    return _find(collector, "sisguard.fim",
                 lambda e: e["event"]["action"] == action and e["file"]["path"] == text,
                 agent, f"{action} {text}")


def test_invalid_names_in_a_web_root_give_events_and_block_nothing(
        attacker_dir: Path, tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    www = attacker_dir / "www"
    as_nobody('mkdir "$1"', str(www))
    cfg = tmp_path / "agent.yml"
    cfg.write_text(json.dumps({"sensor": {"fim": {"paths": [
        {"path": str(www), "report_changes": True, "content_checks": True}]}}}))
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))
    root = os.fsencode(www)

    # a file, a directory and a file in it, a symlink whose target is invalid too
    as_nobody("""cd "$1" && touch "$(printf 'x\\377y')" && mkdir "$(printf 'd\\377')" &&
                 printf 'hello\\n' > "$(printf 'd\\377')/in.txt" &&
                 ln -s "$(printf '/t\\376')" "$(printf 'l\\377')" && touch marker-1""",
              str(www))
    made = _fim(collector, agent, "created", root + b"/x\xffy")
    assert made["file"]["name"] == "x\\xffy"
    assert unescape(made["file"]["path"]) == root + b"/x\xffy"
    directory = _fim(collector, agent, "created", root + b"/d\xff")
    assert directory["file"]["type"] == "dir"
    inner = _fim(collector, agent, "created", root + b"/d\xff/in.txt")
    assert inner["file"]["directory"] == os.fsdecode(root) + "/d\\xff"
    link = _fim(collector, agent, "created", root + b"/l\xff")
    assert link["file"]["target_path"] == "/t\\xfe"
    _fim(collector, agent, "created", root + b"/marker-1")

    # an update of the bad file carries a diff whose header names it escaped
    as_nobody("""printf 'changed\\n' >> "$1/$(printf 'd\\377')/in.txt" && touch "$1/marker-2" """,
              str(www))
    updated = _fim(collector, agent, "updated", root + b"/d\xff/in.txt")
    assert "+changed" in updated["sisguard"]["fim"].get("diff", "+changed")
    _fim(collector, agent, "created", root + b"/marker-2")

    # after a restart the baseline holds the bad names: nothing is poisoned by them
    assert agent.proc is not None
    agent.proc.stop()
    as_nobody("""cd "$1" && rm "$(printf 'x\\377y')" && touch "$(printf 'z\\375')" """,
              str(www))
    agent.start()
    _fim(collector, agent, "deleted", root + b"/x\xffy")
    _fim(collector, agent, "created", root + b"/z\xfd")
    as_nobody('touch "$1/marker-3"', str(www))
    _fim(collector, agent, "created", root + b"/marker-3")
    _all_text_valid(collector)
    assert not [e for e in collector.events() if e["event"]["action"] == "sensor_error"
                and e.get("sisguard", {}).get("sensor", {}).get("stage") == "spool"], \
        "no document had to be replaced: the sensors made every name valid"


def _proc(collector: Collector, agent: Agent, what: str,
          pred: Callable[[Doc], bool]) -> Doc:
    return _find(collector, "sisguard.process",
                 lambda e: e["event"]["action"] == "exec" and pred(e), agent, what)


def test_a_process_with_invalid_cwd_and_argv_is_reported_and_blocks_nothing(
        attacker_dir: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "process")
    cwd = os.fsencode(attacker_dir) + b"/c\xffwd"
    token = secrets.token_hex(4)
    os.mkdir(cwd)
    os.chown(cwd, 65534, 65534)

    def attack(round_: int) -> None:
        # sh stays the process (two commands: no exec of the last one); its $0 is invalid.
        # The marker lives a second too: the process sensor reads /proc at exec time
        as_nobody(f'cd "$1" && sh -c "sleep 1.5; true" "$(printf \'a\\377{token}{round_}\')"'
                  f' && exec sh -c "sleep 1; true" sisguard-marker-{token}-{round_}',
                  os.fsdecode(cwd))

    for round_ in (1, 2):
        attack(round_)
        bad_arg, marker = f"a\\xff{token}{round_}", f"sisguard-marker-{token}-{round_}"

        def is_bad(e: Doc, arg: str = bad_arg) -> bool:
            return arg in e["process"].get("args", [])

        def is_marker(e: Doc, arg: str = marker) -> bool:
            return bool(e["process"].get("args", [])[-1:] == [arg])

        bad = _proc(collector, agent, f"the attacker's process (round {round_})", is_bad)
        assert bad["process"]["working_directory"] == os.fsdecode(attacker_dir) + "/c\\xffwd"
        assert bad["process"]["args"][:3] == ["sh", "-c", "sleep 1.5; true"]
        assert bad_arg in bad["process"]["command_line"]
        assert bad["user"]["id"] == "65534"
        _proc(collector, agent, "the marker process", is_marker)
        if round_ == 1:
            assert agent.proc is not None
            agent.proc.stop()
            agent.start()
    _all_text_valid(collector)


def test_a_huge_command_line_is_cut_to_fit_and_blocks_nothing(
        tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    """12 arguments of 120 kB: a 2.9 MB document, above the spool's 1 MiB and far above
    this collector's 64 KiB message limit (before, the batch was refused and resent
    forever). The event still arrives, its long fields cut and named; then a marker."""
    cfg = tmp_path / "collector.yml"
    cfg.write_text("limits:\n  max_message_bytes: 65536\n")
    collector = collector_factory("--config", str(cfg))
    agent = agent_factory(collector, "--sensors", "process")
    token = secrets.token_hex(4)
    big = [f"{token}{i}" + "A" * 120_000 for i in range(12)]
    subprocess.run([*NOBODY, "sh", "-c", "sleep 1.5; true", "sh", *big], check=True,
                   timeout=30)
    as_nobody(f'exec sh -c "sleep 1; true" sisguard-marker-{token}')

    def is_big(e: Doc) -> bool:   # the shell, not setpriv before its exec
        args = e["process"].get("args", [])
        return args[:1] == ["sh"] and any(a.startswith(f"{token}0AAA") for a in args)

    doc = _proc(collector, agent, "the process with the huge command line", is_big)
    assert doc["process"]["args"][:3] == ["sh", "-c", "sleep 1.5; true"]
    assert {"process.command_line", "process.args[4]"} <= set(doc["sisguard"]["truncated"])
    assert doc["user"]["id"] == "65534"
    _proc(collector, agent, "the marker process",
          lambda e: e["process"].get("args", [])[-1:] == [f"sisguard-marker-{token}"])


def test_a_listener_whose_program_name_is_invalid_is_reported(
        attacker_dir: Path, tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    """The attacker copies perl to a name with 0xff and listens on a port with it."""
    cfg = tmp_path / "agent.yml"
    cfg.write_text("sensor:\n  network:\n    poll_interval: 0.5\n")
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "network", "--config", str(cfg))
    listen = ("use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',"
              " LocalPort => $ARGV[0], Listen => 1, ReuseAddr => 1) or die; sleep 4")
    bad, good = free_port(), free_port()
    script = f"""cd "$1" || exit 1
                 cp /usr/bin/perl "$(printf 'srv\\377')" && cp /usr/bin/perl srv-marker || exit 1
                 "./$(printf 'srv\\377')" -e "$2" {bad} &
                 sleep 1
                 ./srv-marker -e "$2" {good} && wait"""
    as_nobody(script, str(attacker_dir), listen)

    def listening(port: int) -> Callable[[Doc], bool]:
        return lambda e: (e["event"]["action"] == "listen_opened"
                          and e.get("server", {}).get("port") == port)

    doc = _find(collector, "sisguard.network", listening(bad), agent, f"listener on {bad}")
    assert doc["process"]["name"] == "srv\\xff"
    assert doc["process"]["executable"] == os.fsdecode(attacker_dir) + "/srv\\xff"
    _find(collector, "sisguard.network", listening(good), agent, f"marker listener {good}")
    _all_text_valid(collector)


def test_a_spool_database_that_refuses_writes_costs_counted_events_only(
        tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    """Before, a batch the database refused was put back in the queue, every second,
    forever. Now it is tried once more, then counted as lost, and a spool_dropped event
    (where: write) says how many with the next batch stored. Here another process holds
    the database's write lock for a while (as a disk full or an I/O error would refuse)."""
    www = tmp_path / "www"
    www.mkdir()
    cfg = tmp_path / "agent.yml"
    cfg.write_text(json.dumps({"sensor": {"fim": {"paths": [str(www)]}}}))
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))
    assert agent.proc is not None
    log_offset = agent.proc.log.stat().st_size
    lock = sqlite3.connect(agent.state_dir / "spool.db", isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        for i in range(20):
            (www / f"while-locked-{i}").write_bytes(b"")
        wait_for(lambda: "spool refused a batch" in agent.proc.since(log_offset)
                 if agent.proc else None, timeout=30,
                 message=f"the spool refusing a batch\n{agent.proc.tail()}")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    (www / "marker").write_text("after the lock")
    _fim(collector, agent, "created", os.fsencode(www / "marker"))
    notices = wait_for(lambda: [e for e in collector.events()
                                if e["event"]["action"] == "spool_dropped"
                                and e["sisguard"]["spool"]["where"] == "write"],
                       timeout=20, message="the count of what the refused writes cost")
    lost = sum(n["sisguard"]["spool"]["dropped"] for n in notices)
    stored = [e for e in collector.events() if e["event"]["action"] == "created"
              and e["file"]["name"].startswith("while-locked-")]
    assert lost > 0 and len(stored) + lost >= 20, (len(stored), lost)
    assert "locked" in notices[0]["error"]["message"]
