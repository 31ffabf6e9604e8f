"""The output registry: one name per type, every built-in registered, config errors with
their file and line, every output built in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.config import load_config
from collector.outputs import registry
from collector.outputs.archive import JsonlArchive
from collector.outputs.console import ConsoleAlerts
from collector.outputs.elasticsearch import ElasticsearchOutput
from collector.outputs.registry import (
    BUILTIN,
    OutputContext,
    configured_outputs,
    output_type,
    register,
)
from common.errors import ConfigError


@dataclass(frozen=True)
class NoConfig:
    pass


def test_every_builtin_type_is_registered_by_its_module() -> None:
    assert {"archive", "elasticsearch", "console"} <= set(BUILTIN)
    for name in BUILTIN:
        kind = output_type(name)
        assert kind.name == name
        assert kind.output.__module__ == BUILTIN[name], f"{name} registered elsewhere"
    assert output_type("archive").output is JsonlArchive
    assert output_type("elasticsearch").output is ElasticsearchOutput
    assert output_type("console").output is ConsoleAlerts


def test_a_name_registered_twice_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_TYPES", dict(registry._TYPES))
    output_type("archive")

    with pytest.raises(ValueError, match="'archive' is registered twice"):
        @register("archive", NoConfig)
        class Another(ConsoleAlerts):
            pass
    # the same class again (a module imported twice) is not a clash
    register("archive", NoConfig)(JsonlArchive)


def test_an_unknown_type_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text("data_dir: /tmp/x\noutputs:\n  soc:\n    type: carrier-pigeon\n")
    with pytest.raises(ConfigError) as e:
        load_config(config, {})
    assert str(e.value).startswith(f"{config}:4:5: outputs.soc.type: unknown output type "
                                   f"'carrier-pigeon'")
    config.write_text("outputs:\n  soc:\n    host: x\n")
    with pytest.raises(ConfigError, match=f"^{config}:3:5: outputs.soc: needs 'type'"):
        load_config(config, {})


def test_a_wrong_key_of_an_output_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text("outputs:\n  screen:\n    type: console\n    as_jsn: true\n")
    with pytest.raises(ConfigError, match=f"^{config}:4:5: .*as_jsn"):
        load_config(config, {})


def test_every_output_is_built_in_one_place_in_publishing_order(tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text(f"data_dir: {tmp_path}\nprint_alerts: true\narchive:\n  enabled: true\n"
                      "elasticsearch:\n  url: [http://127.0.0.1:9]\n  bulk_max_docs: 7\n"
                      "outputs:\n  screen:\n    type: console\n    as_json: true\n"
                      "  copy:\n    type: archive\n")
    outputs = configured_outputs(load_config(config, {}), OutputContext(data_dir=tmp_path))
    assert [(o.name, type(o)) for o in outputs] == [
        ("archive", JsonlArchive), ("elasticsearch", ElasticsearchOutput),
        ("console", ConsoleAlerts), ("screen", ConsoleAlerts), ("copy", JsonlArchive)]
    archive, es, _, screen, copy = outputs
    assert isinstance(archive, JsonlArchive) and archive.directory == tmp_path / "archive"
    assert isinstance(copy, JsonlArchive) and copy.directory == tmp_path / "outputs" / "copy"
    assert isinstance(es, ElasticsearchOutput) and es.config.bulk_max_docs == 7
    assert isinstance(screen, ConsoleAlerts) and screen.as_json
    es.close()


def test_an_output_name_used_twice_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text(f"data_dir: {tmp_path}\noutputs:\n  archive:\n    type: console\n")
    with pytest.raises(ConfigError, match="'archive' is already an output's"):
        configured_outputs(load_config(config, {}), OutputContext(data_dir=tmp_path),
                           source=str(config))
