"""``config check`` names every error with its line; ``config show`` prints every key."""

from __future__ import annotations

from pathlib import Path

from tests.harness import REPO, cli

AGENT_WITH_THREE_ERRORS = """\
state_dir: /var/lib/sisguard-agent
spool:
  max_bytez: 1GiB
shipper:
  window: many
sensor:
  fim:
    paths: [/etc]
    scan_intervall: 10m
"""

COLLECTOR_WITH_THREE_ERRORS = """\
listen: 0.0.0.0:4443
limits:
  window: x
  max_batch_eventz: 3
elasticsearch:
  retention_days: soon
"""


def test_agent_config_check_names_all_three_errors_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "agent.yml"
    path.write_text(AGENT_WITH_THREE_ERRORS)
    result = cli("agent", "config", "check", str(path), check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"{path}:3:3: unknown key 'spool.max_bytez'" in lines[0]
    assert f"{path}:5:3: 'shipper.window': expected an integer" in lines[1]
    assert f"{path}:9:5: unknown key 'sensor.fim.scan_intervall'" in lines[2]
    assert lines[3] == f"{path}: 3 errors"


def test_collector_config_check_names_all_three_errors_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text(COLLECTOR_WITH_THREE_ERRORS)
    result = cli("collector", "config", "check", str(path), check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}:3:3: 'limits.window'")
    assert lines[1].startswith(f"{path}:4:3: unknown key 'limits.max_batch_eventz'")
    assert lines[2].startswith(f"{path}:6:3: 'elasticsearch.retention_days'")


def test_config_check_of_invalid_yaml_and_of_the_examples(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text("spool:\n  max_bytes: [1\n")
    result = cli("agent", "config", "check", str(bad), check=False)
    assert result.returncode == 1 and "invalid YAML" in result.stderr
    for program in ("agent", "collector"):
        example = REPO / "deploy" / "config" / f"{program}.yml"
        assert cli(program, "config", "check", str(example)).stdout.strip() == f"{example}: ok"


def test_config_show_prints_every_key_with_defaults_and_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("elasticsearch:\n  url: [http://127.0.0.1:9200]\n  password: hunter2\n"
                    "  retention_days: 30\n")
    out = cli("collector", "config", "show", "--config", str(path)).stdout
    assert "hunter2" not in out
    assert "\n  password: \"********\"  # better: password_file; default: null\n" in out
    assert "  retention_days: 30  # older daily indices are deleted; default: 90" in out
    assert "listen: 0.0.0.0:4443  # events, mutual TLS" in out
    defaults = cli("agent", "config", "show", "--defaults").stdout
    assert "  max_bytes: 512MiB  # disk bound; oldest dropped first, counted" in defaults
    for key in ("state_dir:", "heartbeat_interval:", "sensor:", "  fim:", "    hashes:",
                "  process:", "  auth:"):
        assert any(line.startswith(key) or line.startswith(f"  {key}")
                   for line in defaults.splitlines()), key
