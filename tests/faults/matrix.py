"""The fault matrix's shared parts: marked events, the stores read back, one row per case.

Each case writes uniquely named files in a directory a REAL agent watches (one FIM
``created`` event each), breaks something, and then reads the REAL stores back: the
collector's JSONL archive and, where configured, Elasticsearch. A row says

* produced: marked files written;
* stored: marked files with a ``created`` event in that store;
* duplicates: documents stored twice (same ``event.id``) plus extra ``created`` events
  for one marked file (a resend under a new sequence number);
* dropped: events the agent said it dropped (``spool_dropped`` events in the store: the
  spool's running total, plus the sensor queue's own counts);
* lost: marked files with no event, which must be 0 or covered by reported drops.

Rows are collected here and printed by ``tests/faults/conftest.py`` at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import Agent, Collector, read_jsonl, wait_for
from tests.search import SearchNode, when_searchable

ROWS: list[Row] = []


@dataclass(frozen=True)
class Row:
    case: str
    store: str
    produced: int
    stored: int
    duplicates: int
    dropped: int
    lost: int

    def line(self) -> str:
        return (f"fault matrix | {self.case} | {self.store} | produced {self.produced} / "
                f"stored {self.stored} / duplicates {self.duplicates} / "
                f"dropped-and-reported {self.dropped} | lost {self.lost}")


def report(row: Row) -> Row:
    """Print the row (visible with -s and in the log of a failure) and keep it for the table."""
    print(row.line(), flush=True)
    ROWS.append(row)
    return row


def table(rows: Iterable[Row]) -> list[str]:
    out = ["| case | store | produced | stored | duplicates | dropped-and-reported | lost |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {r.case} | {r.store} | {r.produced} | {r.stored} | {r.duplicates} | "
            f"{r.dropped} | {r.lost} |" for r in rows]
    return out


# ---------------------------------------------------------------- producing marked events

@dataclass
class Marker:
    """Writes uniquely named files in a watched directory; remembers every one."""

    root: Path
    tag: str
    pad: int = 0   # extra characters in each name: bigger events (a full spool sooner)
    produced: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, n: int = 1) -> list[str]:
        made = []
        for _ in range(n):
            with self._lock:
                name = f"{self.tag}-{len(self.produced):06d}{'x' * self.pad}.txt"
                path = str(self.root / name)
                self.produced.append(path)
            with open(path, "w") as f:
                f.write(f"{name}\n")
            made.append(path)
        return made

    @property
    def paths(self) -> set[str]:
        with self._lock:
            return set(self.produced)


class Stream:
    """Writes marked files at a steady pace in a thread, while a fault happens."""

    def __init__(self, marker: Marker, *, every: float = 0.02) -> None:
        self.marker = marker
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-stream", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.marker.write()

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---------------------------------------------------------------- reading the stores

def _get(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


@dataclass(frozen=True)
class Tally:
    stored: set[str]
    duplicates: int
    dropped: int
    # a few of the duplicates, for the failure message: "id <event.id>" stored twice, or
    # "path <file.path>" created under two ids
    examples: tuple[str, ...] = ()

    def row(self, case: str, store: str, produced: set[str]) -> Row:
        return Row(case, store, len(produced), len(self.stored & produced), self.duplicates,
                   self.dropped, len(produced - self.stored))


def tally(docs: Iterable[dict[str, Any]], produced: set[str]) -> Tally:
    seen: Counter[str] = Counter()
    created: Counter[str] = Counter()
    queue_dropped, spool_total = 0, 0
    for doc in docs:
        event_id = str(_get(doc, "event.id"))
        seen[event_id] += 1
        if seen[event_id] > 1:
            continue   # counted once as a duplicate below; not again as a second creation
        action = _get(doc, "event.action")
        if action == "created" and _get(doc, "file.path") in produced:
            created[str(_get(doc, "file.path"))] += 1
        elif action == "spool_dropped":
            # the spool's notices carry its running total (a later overflow may drop an
            # earlier notice); the sensor queue's notices count their own drops only
            total = _get(doc, "sisguard.spool.dropped_total")
            if total is not None:
                spool_total = max(spool_total, int(total))
            else:
                queue_dropped += int(_get(doc, "sisguard.spool.dropped") or 0)
    duplicates = sum(n - 1 for n in seen.values()) + sum(n - 1 for n in created.values())
    examples = tuple([f"id {i} x{n}" for i, n in seen.items() if n > 1][:3]
                     + [f"path {p} x{n}" for p, n in created.items() if n > 1][:3])
    return Tally(set(created), duplicates, queue_dropped + spool_total, examples)


def apart(*tallies: Tally) -> Tally:
    """Stores that are separate (one archive per collector): what any of them holds, and the
    duplicates within each. The same event in two archives is no duplicate of either: an
    agent that fails over resends what the dead collector had stored but not acked."""
    return Tally(set().union(*(t.stored for t in tallies)),
                 sum(t.duplicates for t in tallies), max(t.dropped for t in tallies),
                 tuple(e for t in tallies for e in t.examples))


def overlap(*doc_lists: list[dict[str, Any]]) -> int:
    """Events (by ``event.id``) held by more than one of these stores."""
    held: Counter[str] = Counter()
    for docs in doc_lists:
        held.update({str(_get(d, "event.id")) for d in docs})
    return sum(1 for n in held.values() if n > 1)


def archive_docs(*collectors: Collector) -> list[dict[str, Any]]:
    """Every event in the archives of these collectors (one store when they are several)."""
    return [doc for c in collectors for doc in read_jsonl(c.data_dir / "archive", "events-")]


def alerted(alerts: Iterable[dict[str, Any]], events: Iterable[dict[str, Any]],
            produced: set[str]) -> Tally:
    """Marked files whose event raised an alert; duplicates: alerts stored twice (same
    ``event.id``) and extra alerts for one event."""
    path_of = {str(_get(e, "event.id")): _get(e, "file.path") for e in events}
    seen: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    for alert in alerts:
        seen[str(_get(alert, "event.id"))] += 1
        if seen[str(_get(alert, "event.id"))] > 1:
            continue
        for event_id in _get(alert, "sisguard.alert.event_ids") or []:
            path = path_of.get(str(event_id))
            if path in produced:
                fired[str(path)] += 1
    duplicates = sum(n - 1 for n in seen.values()) + sum(n - 1 for n in fired.values())
    return Tally(set(fired), duplicates, 0)


def es_docs(url: str, prefix: str, *, kind: str = "events") -> list[dict[str, Any]]:
    from elasticsearch import Elasticsearch, helpers

    client = Elasticsearch(url, request_timeout=30)
    try:
        index = f"{prefix}-{kind}-*"
        return when_searchable(client, index, lambda: [hit["_source"] for hit in helpers.scan(
            client, index=index, ignore_unavailable=True, allow_no_indices=True,
            _source=["event.id", "event.action", "file.path", "sisguard.spool",
                     "sisguard.alert.event_ids"])])
    finally:
        client.close()


def es_drop(url: str, prefix: str) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(url, request_timeout=30)
    try:
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True,
                              allow_no_indices=True)
        for kind in ("events", "alerts", "deadletter"):
            client.options(ignore_status=404).indices.delete_index_template(
                name=f"{prefix}-{kind}")
    finally:
        client.close()


def collector_config(path: Path, *, es_url: str = "", prefix: str = "",
                     extra: str = "") -> Path:
    """A collector config: the archive always on, Elasticsearch when given."""
    text = "archive:\n  enabled: true\n"
    if es_url:
        text += f"elasticsearch:\n  url: [{es_url}]\n  index_prefix: {prefix}\n"
    path.write_text(text + extra)
    return path


def spool_events(agent: Agent) -> int:
    return int(agent.spool().get("events", 0))


def settle(agent: Agent, stores: dict[str, Any], produced: set[str], *,
           timeout: float = 90.0) -> dict[str, Tally]:
    """Wait until every store holds every marked file (or the agent reported drops), and
    the agent's spool is empty, so that no resend can still come; then count. On timeout
    the last count is returned: ``check`` says what is missing."""
    last: dict[str, Tally] = {}

    def complete() -> bool:
        last.update({name: tally(read(), produced) for name, read in stores.items()})
        if any(len(produced - t.stored) > t.dropped for t in last.values()):
            return False
        return agent.proc is None or spool_events(agent) == 0

    with contextlib.suppress(AssertionError):
        wait_for(complete, timeout=timeout, interval=1.0, message="settled")
    return last


def check(case: str, tallies: dict[str, Tally], produced: set[str], *,
          drops_allowed: bool = False) -> list[Row]:
    rows = [report(t.row(case, store, produced)) for store, t in tallies.items()]
    for row, t in zip(rows, tallies.values(), strict=True):
        missing = sorted(produced - t.stored)[:5]
        assert row.duplicates == 0, f"{row.line()}; e.g. {list(t.examples)}"
        if drops_allowed:
            assert row.lost <= row.dropped, f"{row.line()}; missing e.g. {missing}"
        else:
            assert row.lost == 0, f"{row.line()}; missing e.g. {missing}"
    return rows


# ---------------------------------------------------------------- faults

class TunedSearchNode(SearchNode):
    """A SearchNode of the test's own with extra node settings (``SEARCH_SETTINGS``)."""

    settings: str = ""

    def _run(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        old = os.environ.get("SEARCH_SETTINGS")
        os.environ["SEARCH_SETTINGS"] = self.settings
        try:
            return super()._run(*args, timeout=timeout, check=check)
        finally:
            if old is None:
                os.environ.pop("SEARCH_SETTINGS", None)
            else:
                os.environ["SEARCH_SETTINGS"] = old


@contextlib.contextmanager
def port_cut(port: int) -> Iterator[None]:
    """Drop every TCP packet to and from ``port`` (nftables, a table of our own)."""
    table = f"sisguard_faults_{port}"
    rules = (f"table inet {table} {{\n"
             f"  chain input {{ type filter hook input priority -10; policy accept;\n"
             f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n"
             f"  chain output {{ type filter hook output priority -10; policy accept;\n"
             f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False,
                       capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)   # a child that just died may still hold a file open


def log_lines(text: str, msg: str) -> list[dict[str, Any]]:
    """The JSON log lines whose message is ``msg``."""
    out = []
    for line in text.splitlines():
        if f'"{msg}"' not in line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
