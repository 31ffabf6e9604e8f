"""The fault matrix's table, at the end of the run (whether or not output is captured)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.faults.matrix import ROWS, es_drop, table
from tests.search import engine_urls, need_engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a fault case that takes a minute or more")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault matrix")
    for line in table(ROWS):
        terminalreporter.write_line(line)


@pytest.fixture
def es_prefix() -> Iterator[tuple[str, str]]:
    """The first shared engine (SISGUARD_TEST_ES_URLS) and an index prefix of this test's."""
    url = engine_urls()[0]
    if not url:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    prefix = f"f{uuid.uuid4().hex[:10]}"
    yield url, prefix
    es_drop(url, prefix)
