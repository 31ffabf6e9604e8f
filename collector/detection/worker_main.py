"""One detection worker process (started by workers.WorkerPool; not a command for people).

``python -m collector.detection.worker_main FD``: FD is this end of a socket pair. The
first frame is (WorkerSettings, index, wanted rules); the worker loads its rules, builds
its engine with 1/N of the bounds, answers ``(0, True, missing)`` and then serves frames
``(id, op, payload)`` in order, answering ``(id, ok, result)``. A thread drains the socket
into a queue so that the pool's writes never wait for this process's work (the pool's
pending requests bound that queue). EOF on the socket: the collector is gone, exit.
Also here: what the pool and the worker share (the settings, the skew flag's round trip,
the merging of the engines' counters).
"""

from __future__ import annotations

import pickle
import queue
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from collector.detection.clock import EventClock
from collector.detection.correlation import DEFAULT_MAX_GROUPS
from collector.detection.correlation_rules import link_correlations
from collector.detection.engine import DetectionEngine
from collector.detection.loader import load_rules
from collector.detection.patterns import set_text_cap
from collector.detection.rules import LoadResult, Rule, RuleLoadError
from common import logs

log = logs.get_logger("sisguard.collector.detection.worker")
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_EOF = b""
_UNSET = "\0unset"        # sisguard.time_skew absent (a value no JSON event holds)
Wanted = list[tuple[str, str]]


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to build its engine: the whole budget, shared out here."""

    paths: tuple[str, ...]
    filters: tuple[str, ...] = ()
    workers: int = 2
    max_state_bytes: int = 256 * 1024 * 1024
    max_groups: int = DEFAULT_MAX_GROUPS
    max_pattern_text: int = 64 * 1024
    clock_ahead: float = 300.0
    clock_behind: float = 7 * 86400.0
    log_level: str = "info"
    timeout: float = 60.0  # one request; longer: the worker is killed and restarted


def skew_of(event: Mapping[str, Any]) -> Any:
    ours = event.get("sisguard")
    return ours.get("time_skew", _UNSET) if ours.__class__ is dict else _UNSET


def apply_skew(event: dict[str, Any], skew: Any) -> None:
    """Mirror on the collector's copy of the event what the worker's clock did to it."""
    if skew == _UNSET:
        ours = event.get("sisguard")
        if ours.__class__ is dict:
            ours.pop("time_skew", None)
        return
    ours = event.get("sisguard")
    if ours.__class__ is not dict:
        ours = event["sisguard"] = {}
    ours["time_skew"] = skew


def merge_stats(into: dict[str, Any], one: Mapping[str, Any]) -> None:
    for key, value in one.items():
        if key == "rules":
            for rid, entry in value.items():
                mine = into["rules"].setdefault(rid, {"title": entry.get("title"),
                                                      "matches": 0, "errors": 0})
                mine["matches"] += entry.get("matches", 0)
                mine["errors"] += entry.get("errors", 0)
        elif key == "correlations":
            for cid, entry in value.items():
                mine = into["correlations"].setdefault(cid, {})
                for k, v in entry.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        mine[k] = mine.get(k, 0) + v
                    else:
                        mine.setdefault(k, v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value


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
    # run as the module proper, not as __main__: the pool pickles worker_main's classes
    from collector.detection import worker_main

    sys.exit(worker_main.main(sys.argv[1:]))
