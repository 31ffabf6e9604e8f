"""pySigma's SQLite backend as a peer of bench/rules_peers, the Zircolite way.

Each rule becomes one SQL query over a table ``logs`` of the events, one column per
field, ``COLLATE NOCASE`` (as Zircolite builds it), REGEXP a Python function; the events
are inserted outside the timing; evaluation runs every query over the table.
"""

from __future__ import annotations

import pathlib
import re
import sqlite3
from collections.abc import Iterable
from typing import Any

from peer_common import run
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


def load(rules_dir: str, events: list[Any]) -> Any:
    backend = sqliteBackend()
    queries: list[tuple[str, str]] = []
    for path in sorted(pathlib.Path(rules_dir).rglob("*.yml")):
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
        for rule, query in zip(collection.rules, backend.convert(collection), strict=True):
            queries.append((str(rule.id), query.replace("SELECT *", "SELECT row_id", 1)))
    db = sqlite3.connect(":memory:")
    db.create_function("regexp", 2, _regexp, deterministic=True)
    columns = sorted({k for e in events for k in e})
    db.execute("CREATE TABLE logs (row_id INTEGER PRIMARY KEY, "
               + ", ".join(f'"{c}" TEXT COLLATE NOCASE' for c in columns) + ")")
    db.executemany(f"INSERT INTO logs VALUES (?, {', '.join('?' for _ in columns)})",
                   [(i, *(e.get(c) for c in columns)) for i, e in enumerate(events)])

    def evaluate(events: list[Any]) -> Iterable[tuple[int, str]]:
        for rule_id, query in queries:
            try:
                rows = db.execute(query).fetchall()
            except sqlite3.OperationalError:  # a column no event has: no match
                continue
            for (index,) in rows:
                yield index, rule_id
    return len(queries), evaluate


run(load)
