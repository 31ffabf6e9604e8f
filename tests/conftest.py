"""Shared fixtures: real collector and agent processes, torn down after each test.

A test that leaves a child process running fails.

``scripts/test`` runs the suite on several workers (pytest-xdist, ``--dist loadgroup``).
Each test file stays on one worker (its module fixtures are set up once); files that share
something of the host that only one test may use at a time (``/dev/log``, the installed
packages) name one group with ``pytestmark = pytest.mark.xdist_group("NAME")`` and run on
the same worker, one after the other. The fault matrix's rows travel to the controller in
each report's ``user_properties``, so its table is printed whichever worker ran the case.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.matrix import ROWS, Row, table
from tests.harness import Agent, Collector


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test without a group of its own runs in its file's group (xdist's loadgroup
    reads the mark later: its own hook runs last)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(str(item.path)))


_rows_sent = 0
_rows_seen: list[Row] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    global _rows_sent
    report = outcome.get_result()
    for row in ROWS[_rows_sent:]:
        report.user_properties.append(("fault_matrix_row", dataclasses.asdict(row)))
    _rows_sent = len(ROWS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == "fault_matrix_row" and isinstance(value, dict):
            _rows_seen.append(Row(**value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _rows_seen:
        return
    terminalreporter.section("fault matrix")
    for line in table(_rows_seen):
        terminalreporter.write_line(line)


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(*extra: str, name: str = "collector", start: bool = True) -> Collector:
        c = Collector(tmp_path / name, extra=list(extra))
        made.append(c)
        if start:
            c.start()
        else:
            c.init()
        return c

    yield make
    for c in made:
        if c.proc:
            c.proc.kill()


@pytest.fixture
def collector(collector_factory: Callable[..., Collector]) -> Collector:
    return collector_factory()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def make(collector: Collector, *args: str, name: str = "agent",
             start: bool = True) -> Agent:
        a = Agent(tmp_path / name, collector, list(args))
        made.append(a)
        if start:
            a.start()
        return a

    yield make
    for a in made:
        if a.proc:
            a.proc.kill()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads behind."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate()
              if t not in before and t.is_alive() and not t.daemon]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
