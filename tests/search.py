"""The real search engine for indexing tests (deploy/dev/search: genuine Elasticsearch).

``scripts/test`` starts one node and exports ``SISGUARD_TEST_ES_URL``. Tests that stop
and restart the engine start a node of their own with ``SearchNode``. In CI a missing
engine fails the test; elsewhere it skips, saying why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests.harness import REPO, free_port, in_ci

if TYPE_CHECKING:   # the agent's tests on old Pythons load this without the client
    from elasticsearch import Elasticsearch

SCRIPT = REPO / "deploy" / "dev" / "search"
T = TypeVar("T")


def need_engine(reason: str) -> None:
    if in_ci():
        pytest.fail(f"search engine required in CI: {reason}")
    pytest.skip(f"no search engine: {reason} (run scripts/test, or set SISGUARD_TEST_ES_URL)")


def engine_urls() -> list[str]:
    """The engines to test against: ``SISGUARD_TEST_ES_URLS`` (comma-separated) or
    ``SISGUARD_TEST_ES_URL``; [""] when none is set (the fixture then fails or skips)."""
    urls = os.environ.get("SISGUARD_TEST_ES_URLS") or os.environ.get("SISGUARD_TEST_ES_URL", "")
    return [u.strip() for u in urls.split(",") if u.strip()] or [""]


@dataclass
class SearchNode:
    """A node of a test's own, with its data kept across stop/start."""

    state: Path
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        if not SCRIPT.exists():
            need_engine(f"{SCRIPT} is missing")

    def _run(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        env = {**os.environ, "PORT": str(self.port), "SISGUARD_SEARCH_STATE": str(self.state),
               "ES_HEAP": os.environ.get("SISGUARD_TEST_ES_HEAP", "512m")}
        result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                                env=env, timeout=timeout)
        if result.returncode != 0 and check:
            need_engine(f"deploy/dev/search {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""

    def start(self) -> str:
        return self._run("start", "--data", str(self.state / "data"))

    def stop(self) -> None:
        """Never raises: it runs in ``finally`` blocks, where it must not hide a failure."""
        self._run("stop", check=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def when_searchable(es: Elasticsearch, index: str, read: Callable[[], T]) -> T:
    """``read()`` after a refresh of ``index``. A new or recovering index answers 503 until
    its primary shards are allocated: this then waits (up to 30 s each time) for them and
    reads again, so a read is never a spurious empty answer or error."""
    from elasticsearch import ApiError

    for attempt in range(3):
        try:
            es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
            return read()
        except ApiError as e:
            if e.status_code != 503 or attempt == 2:
                raise
            es.options(ignore_status=408).cluster.health(
                index=index, wait_for_status="yellow", timeout="30s")
    raise AssertionError("unreachable")


def searchable_count(es: Elasticsearch, index: str, query: dict[str, Any] | None = None) -> int:
    """Documents matching ``query`` in ``index`` (see ``when_searchable``)."""
    return when_searchable(es, index, lambda: int(es.count(
        index=index, ignore_unavailable=True, allow_no_indices=True, query=query)["count"]))


def drop_prefix(es: Elasticsearch, prefix: str) -> None:
    """Delete what a test's index prefix left: its indices, index templates, then the
    component templates they were composed of (collector/outputs/es_indices.py)."""
    es.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    for kind in ("events", "alerts", "deadletter"):
        es.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-{kind}")
    for kind in ("events", "alerts"):
        es.options(ignore_status=404).cluster.delete_component_template(
            name=f"{prefix}-{kind}-tenants")
