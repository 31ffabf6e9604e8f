"""Shared fixtures: real collector and agent processes, torn down after each test.

A test that leaves a child process running fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Agent, Collector


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
