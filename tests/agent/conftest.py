"""The agent's tests also run on Python 3.9 and 3.10 (scripts/test). Two of them sign
certificates with the collector's CA (``collector.pki``, Python 3.11+): on the older
Pythons they are not collected; they run on the main interpreter, and the renewal they
test also runs end to end in tests/e2e/test_renewal.py."""

from __future__ import annotations

import os
import sys

import pytest

collect_ignore = ([] if sys.version_info >= (3, 11)
                  else ["test_renewal.py", "test_identity.py"])


PROCESS_FIXTURES = {"collector", "collector_factory", "agent_factory"}
# under sensors/ but start no sensor thread: they stay in the unit subset
UNIT_UNDER_SENSORS = {("fim", "test_hashing.py"), ("sensors", "test_registry.py")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``SISGUARD_AGENT_TESTS=unit`` (scripts/test, on the second old Python) keeps the
    tests that start no collector, daemon or sensor thread: the oldest Python runs them
    all, and the suite stays under its time budget."""
    if os.environ.get("SISGUARD_AGENT_TESTS") != "unit":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        sensor_test = ("sensors" in item.path.parts
                       and (item.path.parent.name, item.path.name) not in UNIT_UNDER_SENSORS)
        heavy = (bool(names & PROCESS_FIXTURES) or item.get_closest_marker("service")
                 or sensor_test)
        (drop if heavy else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
