"""Protection mode: restore defaced pages, quarantine new files, never act via symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sensors.fim.baseline import Baseline
from agent.sensors.fim.protect import Protector, Refused, approve, open_parent
from agent.sensors.fim.state import Reader
from tests.agent.sensors.fim.test_sensor import SensorFactory, make_sensor  # noqa: F401
from tests.harness import wait_for


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "tin-tuc").mkdir(parents=True)
    (root / "index.html").write_text("<h1>UBND tỉnh</h1>\n")
    (root / "tin-tuc" / "1.html").write_text("<p>Tin 1</p>\n")
    os.chmod(root / "index.html", 0o640)
    return root


def test_defaced_page_is_restored_and_new_php_quarantined(
        make_sensor: SensorFactory, site: Path, tmp_path: Path) -> None:  # noqa: F811
    _, stub = make_sensor({"paths": [{"path": str(site), "protect": "restore"}]})
    page = site / "index.html"
    approved = page.read_bytes()

    page.write_text("<h1>Hacked by X</h1>")
    stub.wait("updated", page)
    restored = stub.wait("restored", page)
    assert restored["event"]["outcome"] == "success"
    assert page.read_bytes() == approved and (page.stat().st_mode & 0o777) == 0o640

    shell = site / "tin-tuc" / "x.php"
    shell.write_text("<?php @eval($_POST['x']);?>")
    stub.wait("created", shell)
    q = stub.wait("quarantined", shell)
    wait_for(lambda: not shell.exists(), message="shell moved away")
    kept = Path(q["sisguard"]["fim"]["quarantine_path"])
    assert kept.read_text() == "<?php @eval($_POST['x']);?>"
    assert kept.is_relative_to(tmp_path / "state" / "quarantine")

    (site / "tin-tuc" / "1.html").unlink()
    stub.wait("restored", site / "tin-tuc" / "1.html")
    assert (site / "tin-tuc" / "1.html").read_text() == "<p>Tin 1</p>\n"
    # what protection did is not reported again as a change
    assert not stub.fim("created", site / "tin-tuc" / "1.html")
    assert len(stub.fim("restored", page)) == 1


def test_approve_accepts_new_content(
        make_sensor: SensorFactory, site: Path, tmp_path: Path) -> None:  # noqa: F811
    baseline = Baseline(tmp_path / "state")
    (site / "index.html").write_text("<h1>Trang mới</h1>\n")
    assert approve(baseline, Reader(), str(site)) == 3
    baseline.mark_initialized(str(site))
    baseline.close()
    _, stub = make_sensor({"paths": [{"path": str(site), "protect": "restore"}]})
    (site / "index.html").write_text("defaced")
    stub.wait("restored", site / "index.html")
    assert (site / "index.html").read_text() == "<h1>Trang mới</h1>\n"


def test_refuses_to_act_outside_the_root_through_a_symlinked_directory(
        tmp_path: Path, site: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.php").write_text("keep me")
    os.symlink(outside, site / "link")
    baseline = Baseline(tmp_path / "state")
    protector = Protector(baseline, tmp_path / "quarantine")
    # beneath the root there is no link/x.php: nothing to act on, nothing touched
    assert protector.enforce(str(site), str(site / "link" / "x.php")) is None
    assert (outside / "x.php").read_text() == "keep me"
    with pytest.raises(Refused, match="symlink"):
        open_parent(str(site), str(site / "link" / "x.php"))
    with pytest.raises(Refused):
        open_parent(str(site), "/etc/passwd")
    with pytest.raises(Refused):
        open_parent(str(site), str(site / ".." / "outside" / "x.php"))


def test_restore_replaces_a_symlink_without_writing_through_it(tmp_path: Path,
                                                               site: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not touch")
    baseline = Baseline(tmp_path / "state")
    approve(baseline, Reader(), str(site))
    page = site / "index.html"
    page.unlink()
    os.symlink(secret, page)
    doc = Protector(baseline, tmp_path / "quarantine").enforce(str(site), str(page))
    assert doc is not None and doc["event"]["outcome"] == "success", doc
    assert not page.is_symlink() and page.read_text() == "<h1>UBND tỉnh</h1>\n"
    assert secret.read_text() == "do not touch"


def test_a_new_symlink_is_quarantined_not_its_target(tmp_path: Path, site: Path) -> None:
    target = tmp_path / "target.php"
    target.write_text("outside")
    baseline = Baseline(tmp_path / "state")
    approve(baseline, Reader(), str(site))
    os.symlink(target, site / "evil.php")
    doc = Protector(baseline, tmp_path / "q").enforce(str(site), str(site / "evil.php"))
    assert doc is not None and doc["event"]["outcome"] == "success"
    assert not os.path.lexists(site / "evil.php") and target.read_text() == "outside"
    assert Path(doc["sisguard"]["fim"]["quarantine_path"]).is_symlink()


def test_a_file_approved_over_the_cap_is_never_restored_empty(tmp_path: Path,
                                                             site: Path) -> None:
    """Its content was not kept (streamed, hashed, not stored): a small replacement is
    reported as a failure to restore, and the file is left as it is."""
    big = site / "video.bin"
    big.write_bytes(os.urandom(4096))
    baseline = Baseline(tmp_path / "state")
    assert approve(baseline, Reader(), str(site), max_bytes=1024) == 4
    stored = baseline.approved(str(big))
    assert stored is not None and stored.data is None and stored.sha256 is not None
    protector = Protector(baseline, tmp_path / "q", max_bytes=1024)
    assert protector.enforce(str(site), str(big)) is None   # unchanged: nothing to say
    big.write_bytes(b"<?php system($_GET['c']);")
    doc = protector.enforce(str(site), str(big))
    assert doc is not None and doc["event"]["outcome"] == "failure"
    assert "its approved content was not kept (size over 1KiB cap)" in doc["error"]["message"]
    assert big.read_bytes() == b"<?php system($_GET['c']);"
    page = baseline.approved(str(site / "index.html"))   # small files: kept, restorable
    assert page is not None and page.data is not None
