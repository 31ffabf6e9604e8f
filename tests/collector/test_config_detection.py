"""The ``detection:`` section of the collector's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import DetectionConfig, load_config
from common.errors import SisguardError
from tests.harness import REPO


def test_defaults_and_the_shipped_example() -> None:
    assert DetectionConfig() == load_config(REPO / "deploy" / "config" / "collector.yml",
                                            {}).detection
    assert DetectionConfig().max_state_bytes == 256 * 1024 * 1024
    assert float(DetectionConfig().clock_ahead) == 300.0
    assert float(DetectionConfig().clock_behind) == 7 * 86400.0


def test_sizes_and_durations_parse_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("detection:\n  max_state_bytes: 8MiB\n  clock_ahead: 30s\n")
    config = load_config(path, {}).detection
    assert config.max_state_bytes == 8 * 1024 * 1024 and float(config.clock_ahead) == 30.0
    path.write_text("detection:\n  max_state_byte: 8MiB\n")
    with pytest.raises(SisguardError, match="max_state_byte"):
        load_config(path, {})
