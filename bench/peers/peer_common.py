"""What the Python peers of bench/rules_peers share: arguments, timing and the output.

A peer runs as ``python PEER.py RULES_DIR EVENTS_JSONL SECONDS MATCHES_OUT LIMIT`` in its
own throw-away virtual environment. It writes one ``index<TAB>rule id`` line per match
of the first LIMIT events, times whole passes over them until SECONDS have gone by, and
prints ``rules=N evaluated=N seconds=S``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

Evaluate = Callable[[list[Any]], Iterable[tuple[int, str]]]


def run(load: Callable[[str, list[Any]], tuple[int, Evaluate]]) -> None:
    """load(rules_dir, events) -> (rules loaded, evaluate); load is not timed."""
    rules_dir, events_path, seconds, out_path, limit = sys.argv[1:6]
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    with open(events_path, encoding="utf-8") as f:
        events = [json.loads(line) for line in f][: int(limit)]
    count, evaluate = load(rules_dir, events)
    started = time.process_time()
    found = list(evaluate(events))
    spent = time.process_time() - started
    evaluated = len(events)
    while spent < float(seconds):
        started = time.process_time()
        for _ in evaluate(events):
            pass
        spent += time.process_time() - started
        evaluated += len(events)
    with open(out_path, "w", encoding="utf-8") as out:
        out.writelines(f"{index}\t{rule}\n" for index, rule in found)
    print(f"rules={count} evaluated={evaluated} seconds={spent:.6f}")
