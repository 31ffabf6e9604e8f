"""The inventory sensor: dpkg parsing and "everything once, then only changes"."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.inventory import InventoryConfig, InventorySensor, parse_dpkg_status

STATUS = """\
Package: openssh-server
Status: install ok installed
Architecture: amd64
Version: 1:9.2p1-2+deb12u3
Description: secure shell
 continuation line

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def test_parse_dpkg_status_keeps_installed_packages_only() -> None:
    assert parse_dpkg_status(STATUS) == [{"name": "openssh-server",
                                          "version": "1:9.2p1-2+deb12u3",
                                          "architecture": "amd64", "type": "deb"}]


def test_first_run_sends_everything_later_runs_only_changes(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(STATUS)
    docs: list[dict[str, Any]] = []
    ctx = SensorContext(emit=docs.append, health=SensorHealth("inventory"),
                        state_dir=Path(tempfile.mkdtemp()), report_error=lambda m, f: None)
    sensor = InventorySensor(InventoryConfig(dpkg_status=status, users=True, groups=True),
                             ctx, host=lambda: ({"hostname": "h", "os": {"full": "x"}},
                                                "2026-01-01T00:00:00Z"))
    sensor.run_once()
    assert all(d["event"]["kind"] == "state" for d in docs)
    actions = {d["event"]["action"] for d in docs}
    assert actions == {"host", "user", "group", "package"}
    assert any(d.get("user", {}).get("name") == "root" for d in docs)
    docs.clear()
    sensor.run_once()
    assert [d["event"]["action"] for d in docs] == ["host"]
    docs.clear()
    status.write_text(STATUS.replace("deb12u3", "deb12u4") + "\nPackage: nmap\n"
                      "Status: install ok installed\nArchitecture: amd64\nVersion: 7.93\n")
    sensor.run_once()
    changes = {(d["package"]["name"], d["sisguard"]["inventory"]["change"], d["event"]["type"][0])
               for d in docs if d["event"]["action"] == "package"}
    assert changes == {("openssh-server", "changed", "change"), ("nmap", "added", "installation")}
    docs.clear()
    status.write_text("")
    sensor.run_once()
    removed = {d["package"]["name"] for d in docs if d["event"]["action"] == "package"}
    assert removed == {"openssh-server", "nmap"}
