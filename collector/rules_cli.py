"""``sisguard-rules``: lint rules, run their test cases, run events through them.

    sisguard-rules lint PATH...
    sisguard-rules test PATH... [--filters PATH...]
    sisguard-rules match --rules PATH... --events FILE.jsonl [--filters PATH...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from collector.detection import DetectionEngine, load_rules
from collector.detection.engine import event_time
from collector.detection.rules import LoadResult
from collector.detection.testcases import run_tests


def _print_errors(result: LoadResult, out: TextIO) -> None:
    for error in result.errors:
        print(str(error), file=out)


def _lint(paths: Sequence[Path], filters: Sequence[Path], out: TextIO) -> int:
    result = load_rules(paths, filters=filters)
    _print_errors(result, out)
    files = len({e.where.path for e in result.errors})
    print(f"{len(result.rules)} rules loaded, {len(result.errors)} problems in {files} files",
          file=out)
    return 1 if result.errors else 0


def _test(paths: Sequence[Path], filters: Sequence[Path], out: TextIO) -> int:
    result = load_rules(paths, filters=filters)
    _print_errors(result, out)
    outcomes = run_tests(result, DetectionEngine)
    failed = [o for o in outcomes if not o.passed]
    for o in failed:
        print(f"FAIL {o.case.location}: {o.rule.meta.title}: {o.case.name}", file=out)
        print(f"  expected {o.case.alerts} alerts, got {o.actual}", file=out)
        for event in o.events:
            print(f"  event: {json.dumps(event, sort_keys=True, default=str)}", file=out)
    untested = sum(1 for r in result.rules if not r.tests)
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed"
          f" ({untested} rules without tests, {len(result.errors)} load problems)", file=out)
    return 1 if failed or result.errors else 0


def _read_events(path: Path, err: TextIO) -> list[tuple[float, int, dict[str, Any]]]:
    events: list[tuple[float, int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{path}:{number}: bad JSON: {e.msg} (column {e.colno})", file=err)
                continue
            if not isinstance(event, dict):
                print(f"{path}:{number}: not a JSON object", file=err)
                continue
            events.append((event_time(event), number, event))
    return events


def _match(rules: Sequence[Path], filters: Sequence[Path], events_path: Path,
           out: TextIO, err: TextIO) -> int:
    result = load_rules(rules, filters=filters)
    _print_errors(result, err)
    engine = DetectionEngine(result)
    try:
        events = _read_events(events_path, err)
    except OSError as e:
        print(f"{events_path}: cannot read: {e.strerror}", file=err)
        return 2
    events.sort(key=lambda item: (item[0], item[1]))
    for _ts, _number, event in events:
        for alert in engine.process(event):
            print(json.dumps(alert, sort_keys=True, default=str), file=out)
    stats = engine.stats()
    print(f"{stats['events']} events, {stats['alerts']} alerts, {stats['errors']} errors",
          file=err)
    return 1 if result.errors else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sisguard-rules", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lint = sub.add_parser("lint", help="load every rule; report problems with file:line")
    lint.add_argument("paths", nargs="+", type=Path)
    lint.add_argument("--filters", nargs="*", type=Path, default=[])
    test = sub.add_parser("test", help="run the rules' test cases")
    test.add_argument("paths", nargs="+", type=Path)
    test.add_argument("--filters", nargs="*", type=Path, default=[])
    match = sub.add_parser("match", help="run JSONL events through the rules; print alerts")
    match.add_argument("--rules", nargs="+", type=Path, required=True)
    match.add_argument("--events", type=Path, required=True)
    match.add_argument("--filters", nargs="*", type=Path, default=[])
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr
    if args.command == "lint":
        return _lint(args.paths, args.filters, out)
    if args.command == "test":
        return _test(args.paths, args.filters, out)
    return _match(args.rules, args.filters, args.events, out, err)


if __name__ == "__main__":
    sys.exit(main())
