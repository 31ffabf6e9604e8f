"""sisguard-agent: enroll, run, status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import logs
from common.configcli import add_config_parser
from common.process import run_command


def _enroll(args: argparse.Namespace) -> int:
    import os

    from agent.enrollment import enroll, enrollment_token

    token = enrollment_token(flag=args.token, file=args.token_file, environ=os.environ,
                             stdin=sys.stdin.buffer)
    identity = enroll(collectors=args.collector, token=token,
                      ca_fingerprint=args.ca_fingerprint, state_dir=Path(args.state_dir),
                      hostname=args.hostname, enroll_port=args.enroll_port)
    print(f"enrolled: agent id {identity.agent_id}, organization {identity.organization}")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    sensor: dict[str, Any] = {}
    paths: list[Any] = list(args.watch or [])
    paths += [{"path": p, "tags": ["web_root"], "content_checks": True}
              for p in args.web_root or []]
    if paths:
        sensor["fim"] = {"paths": paths}
    return {
        "state_dir": args.state_dir,
        "collectors": args.collector,
        "sensors": args.sensors.split(",") if args.sensors else None,
        "sensor": sensor or None,
        "log_level": args.log_level,
        "web_roots": getattr(args, "web_roots", None),
    }


def _run(args: argparse.Namespace) -> int:
    if args.program:
        from agent.memory import exec_with_system_malloc

        exec_with_system_malloc()   # before any thread starts; returns if already so
    from agent.config import load_config
    from agent.runtime import Agent
    from agent.trust import check_agent, check_path

    if args.config:   # before reading it
        check_path(args.config, what="config file")
    config, sensor_configs = load_config(Path(args.config) if args.config else None,
                                         _overrides(args))
    check_agent(config_file=args.config, state_dir=config.state_dir,
                fim=sensor_configs.get("fim"))
    logs.configure(config.log_level)
    Agent(config, sensor_configs).run_forever()
    return 0


def _status(args: argparse.Namespace) -> int:
    from agent.runtime import state_summary

    print(json.dumps(state_summary(Path(args.state_dir)), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sisguard-agent", description=__doc__)
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enroll", help="get a certificate from the collector")
    p.add_argument("--collector", action="append", required=True,
                   help="HOST:PORT (repeatable: the first enrolls, all are used for failover)")
    p.add_argument("--token", default=None, metavar="TOKEN|-",
                   help="'-' reads the token from stdin; a value here is visible to every "
                        "local user in /proc (it works, with a warning)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="read the token from FILE (or set SISGUARD_ENROLL_TOKEN)")
    p.add_argument("--ca-fingerprint", required=True, help="sha256:<hex> from collector init")
    p.add_argument("--state-dir", default="/var/lib/sisguard-agent")
    p.add_argument("--hostname", default=None)
    p.add_argument("--enroll-port", type=int, default=None,
                   help="the collector's enrollment port (default: the events port + 1)")
    p.set_defaults(func=_enroll)

    p = sub.add_parser("run", help="run the sensors and ship their events")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--watch", action="append", help="path for file integrity (repeatable)")
    p.add_argument("--web-root", action="append",
                   help="a web root: watched, tagged web_root, content-checked (repeatable)")
    p.add_argument("--web-roots", choices=("auto", "off"), default=None,
                   help="watch the web roots the nginx/Apache configs name (default: auto)")
    p.add_argument("--sensors", default=None, help="comma-separated subset, e.g. fim,process")
    p.add_argument("--collector", action="append", help="override the enrolled collectors")
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="identity, spool depth and, while the agent runs, "
                                      "its collector, last ack and sensors")
    p.add_argument("--state-dir", default="/var/lib/sisguard-agent")
    p.set_defaults(func=_status)

    from agent.sensors.fim.cli import add_fim_parser

    add_fim_parser(sub)
    add_config_parser(sub, program="sisguard-agent", default_path="/etc/sisguard/agent.yml",
                      check=_check_config, load=_effective_config)
    return parser


def _check_config(path: Path) -> list[Any]:
    from agent.config import check_config

    return check_config(path)


def _effective_config(path: Path | None) -> Any:
    """The agent's config with each enabled sensor's settings in place of the raw mapping."""
    import dataclasses

    from agent.config import load_config

    config, sensor_configs = load_config(path, {})
    return dataclasses.replace(config, sensor=sensor_configs)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(program=argv is None)   # a program of its own, not a call in a test
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
