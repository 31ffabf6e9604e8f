"""The fault matrix's marker and fixtures (its table is printed by tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.faults.matrix import es_drop
from tests.search import engine_urls, need_engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a fault case that takes a minute or more")


@pytest.fixture
def es_prefix() -> Iterator[tuple[str, str]]:
    """The first shared engine (SISGUARD_TEST_ES_URLS) and an index prefix of this test's."""
    url = engine_urls()[0]
    if not url:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    prefix = f"f{uuid.uuid4().hex[:10]}"
    yield url, prefix
    es_drop(url, prefix)
