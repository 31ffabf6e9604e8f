"""The collector's config: the network budgets (limits.*, enrollment.*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import CollectorConfig, load_config
from common.errors import ConfigError


def _load(tmp_path: Path, text: str) -> CollectorConfig:
    path = tmp_path / "c.yml"
    path.write_text(f"data_dir: {tmp_path}\n{text}")
    return load_config(path, {})


def test_budget_defaults(tmp_path: Path) -> None:
    config = load_config(None, {"data_dir": str(tmp_path)})
    assert config.limits.max_streams_per_agent == 2
    assert float(config.limits.connection_age) == 3600.0
    assert float(config.limits.connection_age_grace) == 60.0
    assert float(config.enrollment.deadline) == 5.0 and config.enrollment.threads == 4
    assert config.enrollment.per_address_concurrent == 2


def test_budgets_from_yaml_with_durations(tmp_path: Path) -> None:
    config = _load(tmp_path, "limits:\n  max_streams_per_agent: 3\n  connection_idle: 2m\n"
                             "enrollment:\n  deadline: 2s\n  per_address_per_minute: 6\n")
    assert config.limits.max_streams_per_agent == 3
    assert float(config.limits.connection_idle) == 120.0
    assert float(config.enrollment.deadline) == 2.0


def test_an_unknown_enrollment_key_is_named_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"enrollment\.per_adress_burst") as e:
        _load(tmp_path, "enrollment:\n  per_adress_burst: 3\n")
    assert ":3" in str(e.value)


@pytest.mark.parametrize(("text", "error"), [
    ("limits:\n  max_streams_per_agent: 0\n", "max_streams_per_agent must be at least 1"),
    ("enrollment:\n  deadline: 0s\n", "deadline must be more than 0"),
    ("limits:\n  events_per_second: -5\n", "events_per_second must be more than 0"),
])
def test_a_budget_of_zero_is_refused(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        _load(tmp_path, text)


def test_a_short_duration_is_a_budget(tmp_path: Path) -> None:
    config = _load(tmp_path, "enrollment:\n  deadline_under_pressure: 100ms\n")
    assert float(config.enrollment.deadline_under_pressure) == pytest.approx(0.1)
