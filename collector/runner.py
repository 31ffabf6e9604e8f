"""``sisguard-collector run``: config from file and flags, then serve until signalled."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from collector.config import CollectorConfig, load_config
from collector.credentials import resolve_elasticsearch
from collector.server import Collector, DataDir
from common import logs
from common.errors import SisguardError


def overrides_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    es: dict[str, Any] = {
        "url": args.es_url, "api_key": args.es_api_key, "username": args.es_user,
        "password": args.es_password, "ca": args.es_ca,
        "api_key_file": args.es_api_key_file, "password_file": args.es_password_file,
    }
    archive = None if args.archive is None else {"enabled": args.archive == "on"}
    return {
        "data_dir": args.data_dir, "listen": args.listen,
        "enroll_listen": args.enroll_listen, "print_alerts": args.print_alerts,
        "elasticsearch": {k: v for k, v in es.items() if v is not None},
        "rules": {"paths": args.rules} if args.rules else None,
        "archive": archive,
        "metrics": {"listen": args.metrics} if getattr(args, "metrics", None) else None,
        "log_level": args.log_level,
    }


def resolve_config(args: argparse.Namespace) -> CollectorConfig:
    path = Path(args.config) if args.config else None
    flags = overrides_from_flags(args)
    if path is None and args.data_dir and DataDir(Path(args.data_dir)).config.exists():
        path = DataDir(Path(args.data_dir)).config
    if path is None and not args.data_dir:
        raise SisguardError("give --data-dir or --config")
    for flag, value in (("--es-api-key", args.es_api_key), ("--es-password", args.es_password)):
        if value is not None:
            logs.get_logger("sisguard.collector").warning(
                f"{flag} on the command line is visible to every local user (/proc): "
                f"use {flag}-file FILE or the environment variable instead")
    config = load_config(path, flags)
    return dataclasses.replace(
        config, elasticsearch=resolve_elasticsearch(config.elasticsearch, os.environ))


def build_detector(config: CollectorConfig) -> Any:
    if not config.rules.paths:
        return None
    from collector.detection import DetectionEngine, RuleWatcher, load_rules
    from collector.detection.clock import EventClock
    from collector.detection.patterns import set_text_cap

    log = logs.get_logger("sisguard.collector.rules")
    bounds = config.detection
    set_text_cap(bounds.max_pattern_text)
    result = load_rules(list(config.rules.paths), filters=list(config.rules.filters))
    for error in result.errors:
        log.error("rule not loaded", error=str(error))
    from collector.detection.workers import pool_for

    engine: Any = pool_for(config, result)   # None: detection.workers is 1
    if engine is None:
        engine = DetectionEngine(result, max_state_bytes=bounds.max_state_bytes,
                                 clock=EventClock(ahead=bounds.clock_ahead,
                                                  behind=bounds.clock_behind))
    log.info("rules loaded", rules=len(result.rules), errors=len(result.errors))
    if config.rules.reload:
        def report(errors: list[Any]) -> None:
            for error in errors:
                log.error("rule not reloaded; its previous version stays", error=str(error))

        RuleWatcher(list(config.rules.paths), engine, interval=1.0,
                    filters=list(config.rules.filters), on_errors=report).start()
    return engine


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    logs.configure(config.log_level)
    collector = Collector(config, detector=build_detector(config),
                          config_source=args.config or "outputs")
    try:
        collector.run_forever()
    finally:
        close = getattr(collector.detector, "close", None)
        if close is not None:
            close()
    return 0
