from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from common.errors import ConfigError
from tests.harness import cli


def test_flags_override_file_and_sensor_settings_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "agent.yml"
    path.write_text("state_dir: /s\nheartbeat_interval: 1m\nsensors: [fim]\n"
                    "sensor:\n  fim:\n    paths: [/var/www]\n")
    config, sensors = load_config(path, {"state_dir": "/other"})
    assert config.state_dir == Path("/other")
    assert config.heartbeat_interval == 60.0
    assert [str(p) for p in sensors["fim"].paths] == ["/var/www"]


def test_unknown_sensor_setting_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.yml"
    path.write_text("sensors: [fim]\nsensor:\n  fim:\n    pathz: [/var/www]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sensor.fim.pathz'"):
        load_config(path, {})


def test_cli_reports_unknown_key_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yml"
    path.write_text("state_dir: /tmp/x\nspool:\n  max_bytez: 1GiB\n")
    result = cli("agent", "run", "--config", str(path), check=False)
    assert result.returncode == 2
    assert f"{path}:3:3: unknown key 'spool.max_bytez'" in result.stderr
