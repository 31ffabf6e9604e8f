"""The sensor registry is lazy: importing it, or the FIM hash helper, imports no sensor."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from agent.sensors import REGISTRY, Entry, config_class, register, sensor_class
from agent.sensors.base import Sensor
from tests.harness import REPO


def modules_after(statement: str) -> set[str]:
    """The ``agent``/``common`` modules and third-party roots a fresh isolated interpreter
    (``-I``, as the hash helpers run) holds after ``statement``."""
    code = (f"import sys; sys.path.append({str(REPO)!r}); {statement}; import json; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", check=True,
                         capture_output=True, text=True, timeout=60).stdout
    names: set[str] = set(json.loads(out))
    return {n for n in names
            if n.split(".")[0] in {"agent", "common", "yaml", "grpc", "google", "sisguard"}}


def test_the_hash_helper_imports_only_itself_and_the_safe_reads() -> None:
    loaded = modules_after("import agent.sensors.fim.hashing")
    assert loaded == {"agent", "agent.sensors", "agent.sensors.fim", "agent.sensors.fim.hashing",
                      "agent.platform", "agent.platform.linux",
                      "agent.platform.linux.saferead"}


def test_importing_the_registry_imports_no_sensor() -> None:
    assert modules_after("import agent.sensors") == {"agent", "agent.sensors"}


def test_a_sensor_is_imported_when_asked_for_and_the_others_are_not() -> None:
    loaded = modules_after("from agent.sensors import sensor_class; sensor_class('network')")
    assert "agent.sensors.network" in loaded
    assert not loaded & {"agent.sensors.fim.sensor", "agent.sensors.process",
                         "agent.sensors.weblog", "agent.sensors.auth", "agent.sensors.inventory"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_sensor_loads(name: str) -> None:
    cls = sensor_class(name)
    assert issubclass(cls, Sensor) and cls.__module__ == REGISTRY[name].sensor.split(":")[0]
    config = config_class(name)
    assert dataclasses.is_dataclass(config)
    assert config.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_an_unknown_sensor_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown sensor 'nope' .*fim"):
        sensor_class("nope")


def test_a_duplicate_or_malformed_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("fim", "agent.sensors.fim.sensor:FimSensor", "agent.sensors.fim.config:FimConfig")
    with pytest.raises(ValueError, match="is not 'module:Class'"):
        register("bogus", "agent.sensors.bogus", "agent.sensors.bogus:Config")
    assert "bogus" not in REGISTRY


def test_a_target_that_is_not_a_sensor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "odd", Entry(
        "agent.sensors.fim.config:FimConfig", "agent.sensors.fim.config:Missing"))
    with pytest.raises(TypeError, match="not a Sensor subclass"):
        sensor_class("odd")
    with pytest.raises(ImportError, match="cannot load its config"):
        config_class("odd")
