"""The shipped example configs load (their keys exist, their values parse)."""

from __future__ import annotations

from collector.config import load_config as load_collector_config
from tests.harness import REPO


def test_example_collector_config_loads() -> None:
    config = load_collector_config(REPO / "deploy" / "config" / "collector.yml", {})
    assert config.elasticsearch.retention_days == 90
    assert config.archive_enabled


def test_systemd_units_run_the_installed_commands() -> None:
    for name in ("agent", "collector"):
        unit = (REPO / "deploy" / "systemd" / f"sisguard-{name}.service").read_text()
        assert (f"ExecStart=/opt/sisguard/{name}/venv/bin/sisguard-{name} run "
                f"--config /etc/sisguard/{name}.yml") in unit
        for hardening in ("NoNewPrivileges=yes", "ProtectSystem=", "PrivateTmp=yes",
                          "CapabilityBoundingSet=", "Restart=on-failure",
                          "StartLimitBurst="):
            assert hardening in unit, f"sisguard-{name}.service lacks {hardening}"


def test_example_agent_config_loads_with_a_tagged_web_root() -> None:
    from agent.config import load_config as load_agent_config

    config, sensors = load_agent_config(REPO / "deploy" / "config" / "agent.yml", {})
    assert set(config.sensors) == {"fim", "process", "network", "auth", "inventory"}
    web = [wp for wp in sensors["fim"].watch_paths if "web_root" in wp.tags]
    assert [str(wp.path) for wp in web] == ["/var/www"]
