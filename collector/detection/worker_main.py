"""One detection worker process (started by workers.WorkerPool; not a command for people).

``python -m collector.detection.worker_main FD``: FD is this end of a socket pair. The
first frame is (WorkerSettings, index, wanted rules); the worker loads its rules, builds
its engine with 1/N of the bounds, answers ``(0, True, missing)`` and then serves frames
``(id, op, payload)`` in order, answering ``(id, ok, result)``. A thread drains the socket
into a queue so that the pool's writes never wait for this process's work (the pool's
pending requests bound that queue). EOF on the socket: the collector is gone, exit.
"""

from __future__ import annotations

import pickle
import queue
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from collector.detection.clock import EventClock
from collector.detection.correlation_rules import link_correlations
from collector.detection.engine import DetectionEngine
from collector.detection.loader import load_rules
from collector.detection.patterns import set_text_cap
from collector.detection.rules import LoadResult, Rule, RuleLoadError
from collector.detection.workers import Wanted, WorkerSettings, skew_of
from common import logs

log = logs.get_logger("sisguard.collector.detection.worker")
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_EOF = b""


def build_rules(settings: WorkerSettings, wanted: Wanted | None,
                previous: Sequence[Rule] = ()) -> tuple[LoadResult, Wanted]:
    """The wanted rules (all that load, when None) from the files, else from ``previous``
    (a file broken now keeps the version loaded before); and the wanted ones not found."""
    fresh = load_rules([Path(p) for p in settings.paths],
                       filters=[Path(p) for p in settings.filters])
    if wanted is None:
        return fresh, []
    have: dict[tuple[str, str], Rule] = {(r.meta.id, r.fingerprint): r for r in previous}
    have.update({(r.meta.id, r.fingerprint): r for r in fresh.rules})
    rules = [have[k] for k in wanted if k in have]
    missing = [k for k in wanted if k not in have]
    errors: list[RuleLoadError] = list(fresh.errors)
    return LoadResult(rules=link_correlations(rules, errors), errors=errors), missing


def detect(engine: DetectionEngine, events: list[dict[str, Any]]
           ) -> list[tuple[list[dict[str, Any]], Any]]:
    """Per event: its alerts, and its sisguard.time_skew afterwards (the clock's flag)."""
    return [(engine.process(event), skew_of(event)) for event in events]


def _drain(conn: Connection, inbox: queue.SimpleQueue[bytes]) -> None:
    try:
        while True:
            inbox.put(conn.recv_bytes())
    except (EOFError, OSError):
        inbox.put(_EOF)


def serve(conn: Connection) -> int:
    settings, index, wanted = pickle.loads(conn.recv_bytes())
    assert isinstance(settings, WorkerSettings)
    logs.configure(settings.log_level)
    set_text_cap(settings.max_pattern_text)
    share = max(1, settings.workers)
    result, missing = build_rules(settings, wanted)
    engine = DetectionEngine(
        result, max_state_bytes=max(1, settings.max_state_bytes // share),
        max_groups=max(1, settings.max_groups // share),
        clock=EventClock(ahead=settings.clock_ahead, behind=settings.clock_behind))
    if missing:
        log.error("rules not found at worker start", worker=index, missing=len(missing))
    conn.send_bytes(pickle.dumps((0, True, missing), protocol=_PROTOCOL))
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    threading.Thread(target=_drain, args=(conn, inbox), daemon=True,
                     name="worker-inbox").start()
    while True:
        data = inbox.get()
        if data == _EOF:
            return 0
        req_id, op, payload = pickle.loads(data)
        try:
            if op == "detect":
                answer: Any = detect(engine, payload)
            elif op == "rules":
                fresh, answer = build_rules(settings, payload, engine.result.rules)
                engine.replace(fresh)
            elif op == "stats":
                answer = engine.stats()
            else:
                raise ValueError(f"unknown request {op!r}")
            reply = pickle.dumps((req_id, True, answer), protocol=_PROTOCOL)
        except Exception as e:  # answered, counted by the pool; the worker stays up
            log.exception("detection worker request failed", worker=index, op=op)
            reply = pickle.dumps((req_id, False, f"{type(e).__name__}: {e}"),
                                 protocol=_PROTOCOL)
        try:
            conn.send_bytes(reply)
        except OSError:
            return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m collector.detection.worker_main FD (started by the "
              "collector)", file=sys.stderr)
        return 2
    return serve(Connection(int(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
