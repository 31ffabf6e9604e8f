"""``sisguard-agent fim scan|approve``: file integrity by hand, on the agent's state dir.

* ``fim scan PATH [--once]``: reconcile PATH with the baseline in the foreground (a
  first scan builds it), printing each change and a summary; without ``--once`` it
  repeats every ``scan_interval`` until interrupted. It updates the baseline, so a
  change it prints is not reported again by a running agent.
* ``fim approve PATH``: accept PATH's current content as approved (protection mode) and
  as the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from agent.ecs import Document
from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.fim.config import FimConfig, WatchPath
from agent.sensors.fim.protect import approve
from agent.sensors.fim.scan import Scanner
from agent.sensors.fim.sensor import open_reconciler
from agent.trust import check_agent, check_path
from common.errors import ConfigError
from common.text import os_text
from common.yamlconf import from_dict, load_yaml


def _config(args: argparse.Namespace) -> tuple[FimConfig, WatchPath]:
    """The fim settings from --config (if any), and the entry that covers PATH; refuses
    (``UntrustedPath``) a config file or state dir that another user controls."""
    raw: dict[str, Any] = {}
    if args.config:
        check_path(args.config, what="config file")
        data = load_yaml(Path(args.config)) or {}
        raw = dict((data.get("sensor") or {}).get("fim") or {})
    path = os.path.abspath(args.path)
    config = from_dict(FimConfig, raw, source=args.config or "<flags>", path="sensor.fim")
    entry = next((wp for wp in sorted(config.watch_paths, key=lambda w: len(w.root),
                                      reverse=True)
                  if path == wp.root or path.startswith(wp.root.rstrip("/") + "/")), None)
    if entry is None or entry.root != path:
        base = entry or WatchPath(path=Path(path))
        entry = WatchPath(path=Path(path), recursive=base.recursive,
                          report_changes=base.report_changes,
                          content_checks=base.content_checks, protect=base.protect,
                          scan_interval=base.scan_interval, include=base.include,
                          exclude=base.exclude)
    others = tuple(wp for wp in config.watch_paths if wp.root != path)
    fields = {k: getattr(config, k) for k in config.__dataclass_fields__ if k != "paths"}
    check_agent(config_file=args.config, state_dir=args.state_dir, fim=config)
    return FimConfig(**{**fields, "paths": (*others, entry)}), entry


def _context(args: argparse.Namespace, emit: Any) -> SensorContext:
    state = Path(args.state_dir) / "sensors" / "fim"

    def report(message: str, fields: dict[str, Any]) -> None:
        print(f"warning: {message} {json.dumps(fields) if fields else ''}", file=sys.stderr)

    return SensorContext(emit=emit, health=SensorHealth("fim"), state_dir=state,
                         report_error=report)


def _print_event(as_json: bool) -> Any:
    def emit(doc: Document) -> None:
        if as_json:
            print(json.dumps(doc, ensure_ascii=False), flush=True)
            return
        fim = doc.get("sisguard", {}).get("fim", {})
        line = f"{doc['event']['action']:20} {doc['file'].get('path', '')}"
        if fim.get("changed"):
            line += f"  [{', '.join(fim['changed'])}]"
        if "path" in fim.get("before", {}):
            line += f"  (was {fim['before']['path']})"
        content = doc.get("sisguard", {}).get("content")
        if content:
            line += f"  !! {', '.join(content['signatures'])}"
        print(line, flush=True)
    return emit


def scan(args: argparse.Namespace) -> int:
    config, entry = _config(args)
    reconciler = open_reconciler(config, _context(args, _print_event(args.json)))
    stop = threading.Event()
    try:
        while True:
            stats = Scanner(reconciler, stop, progress=True).scan(
                entry, reason="manual", throttled=args.throttle)
            print(stats.summary(), file=sys.stderr)
            if args.once or stop.wait(config.interval(entry)):
                break
    except KeyboardInterrupt:
        stop.set()
    finally:
        reconciler.baseline.close()
    return 0


def approve_cmd(args: argparse.Namespace) -> int:
    config, entry = _config(args)
    if not os.path.isdir(entry.root):
        raise ConfigError(f"fim approve: {entry.root} is not a directory")
    reconciler = open_reconciler(config, _context(args, _print_event(False)))
    try:
        n = approve(reconciler.baseline, reconciler.reader, entry.root,
                    max_bytes=config.protect_max_bytes)
        reconciler.baseline.mark_initialized(entry.root)
    finally:
        reconciler.baseline.close()
    print(f"approved {n} entries under {os_text(entry.root)}")
    return 0


def add_fim_parser(sub: Any) -> None:
    """Adds ``fim scan`` and ``fim approve`` to the ``sisguard-agent`` subparsers."""
    fim = sub.add_parser("fim", help="file integrity: scan or approve by hand")
    fim_sub = fim.add_subparsers(dest="fim_command", required=True)
    for name, func, text in (("scan", scan, "reconcile PATH with the baseline now"),
                             ("approve", approve_cmd,
                              "accept PATH's content as approved and as the baseline")):
        p = fim_sub.add_parser(name, help=text)
        p.add_argument("path")
        p.add_argument("--state-dir", default="/var/lib/sisguard-agent")
        p.add_argument("--config", default=None, help="agent YAML (its sensor.fim settings)")
        if name == "scan":
            p.add_argument("--once", action="store_true", help="one scan, then exit")
            p.add_argument("--json", action="store_true", help="events as JSON lines")
            p.add_argument("--throttle", action="store_true",
                           help="keep the configured bytes/s and files/s limits")
        p.set_defaults(func=func)
