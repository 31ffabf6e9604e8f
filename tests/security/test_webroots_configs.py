"""Web-root discovery against a local user (uid 65534) who can write where a sloppy
config includes from: nothing they drop is read, nor can it block or widen the agent.

What they would gain if it were read: ``root /`` (the agent scanning everything),
``access_log /etc/shadow`` (the web-log follower shipping it), a FIFO that hangs the
agent's start, a link to a root-only file read as a config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.webroots import discover

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def as_nobody(*argv: str) -> None:
    subprocess.run([*AS_NOBODY, *argv], check=True, timeout=30)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory the attacker can reach (pytest's own is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="sisguard-webroots-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_files_a_user_drops_where_an_include_looks_are_not_read(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    drop = tmp_path / "drop"   # an upload or spool directory a web app writes
    drop.mkdir()
    os.chmod(drop, 0o1777)
    legit = tmp_path / "www"
    legit.mkdir()
    conf = etc / "nginx.conf"
    conf.write_text(f"http {{ include {drop}/*.conf; server {{ root {legit}; }} }}\n")
    evil = drop / "evil.conf"
    as_nobody("sh", "-c", f"printf 'server {{ root /home; access_log /etc/shadow; }}\\n' "
                          f"> {evil}; chmod 644 {evil}; "
                          f"ln -s /etc/shadow {drop}/shadow.conf; mkfifo {drop}/fifo.conf")
    assert evil.stat().st_uid == NOBODY and (drop / "fifo.conf").exists()

    found = discover((f"nginx:{conf}",))
    assert [r.path for r in found.roots] == [str(legit)]
    assert found.logs == ()
    refused = [e for e in found.errors if str(drop) in e]
    assert len(refused) == 3, found.errors
    assert all("others may write" in e or "owned by uid 65534" in e for e in refused), refused


def test_a_config_file_a_user_owns_or_can_write_is_not_read(tmp_path: Path) -> None:
    conf = tmp_path / "apache2.conf"
    conf.write_text("Include site.conf\nDocumentRoot /srv/www\n")
    site = tmp_path / "site.conf"
    site.write_text("")
    os.chown(site, NOBODY, NOBODY)
    as_nobody("sh", "-c", f"printf 'DocumentRoot /home\\nErrorLog /etc/shadow\\n' > {site}")
    found = discover((f"apache:{conf}",))
    assert [r.path for r in found.roots] == ["/srv/www"] and found.logs == ()
    assert any("owned by uid 65534" in e for e in found.errors), found.errors
