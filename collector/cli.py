"""sisguard-collector: init, token create/list, run, agents list, agents revoke, tenants sync,
kibana import."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector.pki import CertificateAuthority, fingerprint, pem, write_private
from collector.server import DataDir
from common.configcli import add_config_parser
from common.errors import ConfigError, SisguardError
from common.process import run_command
from common.yamlconf import parse_duration


def _init(args: argparse.Namespace) -> int:
    data = DataDir(Path(args.data_dir))
    if (data.pki / "ca.crt").exists() and not args.force:
        ca = CertificateAuthority.load(data.pki)
        print(f"already initialised: {data.root}", file=sys.stderr)
    else:
        data.root.mkdir(parents=True, exist_ok=True)
        data.root.chmod(0o700)
        # another collector of the same deployment: share its CA, so agents enrolled
        # anywhere are known everywhere by their certificates (scale-out, failover)
        ca = (CertificateAuthority.load(Path(args.ca_from)) if args.ca_from
              else CertificateAuthority.create())
        ca.save(data.pki)
        names = args.name or ["localhost", "127.0.0.1"]
        cert, key = ca.issue_server(names)
        (data.pki / "server.crt").write_bytes(pem(cert))
        write_private(data.pki / "server.key", key)
        if not data.config.exists():
            data.config.write_text(f"# written by sisguard-collector init\nlisten: {args.listen}\n")
        print(f"initialised {data.root} (server names: {', '.join(names)})", file=sys.stderr)
    print(f"ca-fingerprint: {fingerprint(ca.anchor)}")
    return 0


def _ca_root(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "ca.key").exists():
        raise SisguardError(f"{out / 'ca.key'} exists: refusing to replace a root CA")
    root = CertificateAuthority.create_root(args.name)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    root.save(out)
    print(f"root CA in {out}: keep it offline; agents pin its fingerprint", file=sys.stderr)
    print(f"ca-fingerprint: {fingerprint(root.cert)}")
    return 0


def _ca_intermediate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "ca.key").exists():
        raise SisguardError(f"{out / 'ca.key'} exists: refusing to replace a CA")
    if not 30 <= args.days <= 3650:
        raise SisguardError(f"--days {args.days}: give 30 to 3650 days")
    root = CertificateAuthority.load(Path(args.root))
    if root.chain:
        raise SisguardError(f"{args.root}: not a root CA (its ca.crt holds a chain)")
    intermediate = root.issue_intermediate(args.name, validity=dt.timedelta(days=args.days))
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    intermediate.save(out)
    print(f"collectors' CA in {out}: give it to each collector with "
          f"'sisguard-collector init --ca-from {out}'", file=sys.stderr)
    print(f"ca-fingerprint: {fingerprint(intermediate.anchor)}")
    return 0


def _store(data_dir: str) -> Any:
    from collector.store import Store

    data = DataDir(Path(data_dir))
    if not (data.pki / "ca.crt").exists():
        raise SisguardError(f"{data.root} is not initialised: run 'sisguard-collector init'")
    return Store(data.db)


def _token_create(args: argparse.Namespace) -> int:
    store = _store(args.data_dir)
    token = store.create_token(ttl=parse_duration(args.ttl), uses=args.uses,
                               organization=args.org, organization_id=args.org_id)
    print(token)
    return 0


def _date(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _organization_filter(value: str | None) -> str | None:
    from collector.tenants import check_org_id

    return None if value is None else check_org_id(value, where="--organization")


def _token_list(args: argparse.Namespace) -> int:
    """Tokens (never the token itself: only the start of its hash), newest first."""
    import time

    store = _store(args.data_dir)
    now = time.time()
    rows = [("HASH", "ORGANIZATION ID", "ORGANIZATION", "CREATED", "EXPIRES", "USES LEFT",
             "STATE")]
    for t in store.tokens(organization_id=_organization_filter(args.organization)):
        state = "expired" if t.expires < now else "used up" if t.uses_left <= 0 else "usable"
        rows.append((t.hash_prefix, t.organization.id, t.organization.name, _date(t.created),
                     _date(t.expires), str(t.uses_left), state))
    _table(rows)
    return 0


def _agents_list(args: argparse.Namespace) -> int:
    from collector.health import agent_status

    store = _store(args.data_dir)
    rows = [("ID", "HOST", "ORGANIZATION ID", "ORGANIZATION", "VERSION", "ADDRESS", "LAST SEEN",
             "STATUS", "SPOOL", "CERT EXPIRES")]
    for a in store.agents(organization_id=_organization_filter(args.organization)):
        seen = _date(a.last_seen) if a.last_seen else "never"
        spool = str(a.heartbeat.get("spool_events", "")) if a.heartbeat else ""
        expires = (dt.datetime.fromtimestamp(a.cert_expires, dt.UTC).strftime("%Y-%m-%d")
                   if a.cert_expires else "")
        rows.append((a.agent_id, a.hostname, a.organization_id, a.organization, a.version,
                     a.address, seen, agent_status(a, offline_after=args.offline_after), spool,
                     expires))
    _table(rows)
    _expiry_warnings(DataDir(Path(args.data_dir)), store)
    return 0


def _agents_show(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from collector.health import agent_status

    store = _store(args.data_dir)
    agent = store.agent(args.agent_id)
    if agent is None:
        raise SisguardError(f"no agent {args.agent_id}")
    data = dataclasses.asdict(agent)
    data["status"] = agent_status(agent)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _agents_revoke(args: argparse.Namespace) -> int:
    """Revoke an agent id (every certificate of it) or one serial, known here or not,
    then publish the signed list to every place the configuration names."""
    from collector.config import load_config
    from collector.crl import canonical_agent_id, parse_serial
    from collector.renewal import configured_ca
    from collector.revocation import watcher_for

    if bool(args.agent_id) == bool(args.serial):
        raise SisguardError("give an agent id or --serial HEX (one of them)")
    store = _store(args.data_dir)
    data = DataDir(Path(args.data_dir))
    path = Path(args.config) if args.config else data.config if data.config.exists() else None
    config = load_config(path, {"data_dir": args.data_dir})
    if args.agent_id:
        agent_id = canonical_agent_id(args.agent_id)
        known = store.revoke(agent_id)
        what = f"agent {agent_id}" + ("" if known else " (never seen here)")
    else:
        serial = parse_serial(args.serial)
        store.revoke_serial(format(serial, "x"))
        what = f"certificate serial {serial:x}"
    ca = configured_ca(CertificateAuthority.load(data.pki), config.pki)
    watcher = watcher_for(config, ca=ca, store=store, pki_dir=data.pki)
    watcher.refresh()
    print(f"revoked {what}: refused by every collector of this CA within "
          f"{config.pki.revocation_poll:g} s of reading the list from "
          f"{', '.join(p.name for p in watcher.places)}", file=sys.stderr)
    return 0


def _expiry_warnings(data: DataDir, store: Any) -> None:
    from collector.renewal import expiry_warnings

    for line in expiry_warnings(data.pki, store):
        print(f"warning: {line}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    data = DataDir(Path(args.data_dir))
    try:
        print(data.health.read_text(), end="")
    except FileNotFoundError:
        raise SisguardError(f"{data.health}: no health file: is the collector running?") from None
    _expiry_warnings(data, _store(args.data_dir))
    return 0


def _run(args: argparse.Namespace) -> int:
    from collector.runner import run

    return run(args)


def _tenants_sync(args: argparse.Namespace) -> int:
    from collector.tenants_sync import sync_command

    return sync_command(args, _store(args.data_dir))


def _kibana_import(args: argparse.Namespace) -> int:
    from collector.kibana import import_command

    return import_command(args)


def _check_config(path: Path) -> list[ConfigError]:
    from collector.config import check_config

    return check_config(path)


def _effective_config(path: Path | None) -> Any:
    from collector.config import load_config

    return load_config(path, {})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sisguard-collector", description=__doc__)
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="make the CA and the server certificate")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", default="0.0.0.0:4443")
    p.add_argument("--name", action="append",
                   help="DNS name or IP agents use to reach this collector (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing CA (!)")
    p.add_argument("--ca-from", default=None, metavar="PKI_DIR",
                   help="join a deployment: use the CA in PKI_DIR (another collector's "
                        "DATA_DIR/pki, holding ca.crt and ca.key) instead of making one")
    p.set_defaults(func=_init)

    p = sub.add_parser("ca", help="offline-CA mode: a root kept offline signs the "
                                  "collectors' intermediate CA")
    csub = p.add_subparsers(dest="ca_command", required=True)
    c = csub.add_parser("root", help="make the root CA (on an offline machine)")
    c.add_argument("--out", required=True, metavar="DIR")
    c.add_argument("--name", default="sisguard root CA")
    c.set_defaults(func=_ca_root)
    c = csub.add_parser("intermediate", help="sign the collectors' CA with the root")
    c.add_argument("--root", required=True, metavar="DIR", help="the root CA's directory")
    c.add_argument("--out", required=True, metavar="DIR")
    c.add_argument("--name", default="sisguard collector CA")
    c.add_argument("--days", type=int, default=1825)
    c.set_defaults(func=_ca_intermediate)

    p = sub.add_parser("token", help="enrollment tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="make a token; printed once, stored hashed")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--ttl", default="30m")
    t.add_argument("--uses", type=int, default=1)
    t.add_argument("--org", default="default", help="the organization's name (shown)")
    t.add_argument("--org-id", default=None,
                   help="its stable id, [a-z0-9-]{1,64} (default: derived from the name)")
    t.set_defaults(func=_token_create)
    t = tsub.add_parser("list", help="tokens, newest first (the start of each one's hash)")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--organization", default=None, metavar="ID",
                   help="only this organization's")
    t.set_defaults(func=_token_list)

    p = sub.add_parser("agents", help="enrolled agents")
    asub = p.add_subparsers(dest="agents_command", required=True)
    a = asub.add_parser("list")
    a.add_argument("--data-dir", required=True)
    a.add_argument("--offline-after", type=float, default=3,
                   help="heartbeat intervals of silence before an agent is offline")
    a.add_argument("--organization", default=None, metavar="ID",
                   help="only this organization's agents")
    a.set_defaults(func=_agents_list)
    a = asub.add_parser("show", help="one agent: enrollment record and last heartbeat (JSON)")
    a.add_argument("--data-dir", required=True)
    a.add_argument("agent_id")
    a.set_defaults(func=_agents_show)
    a = asub.add_parser("revoke", help="refuse an agent (all its certificates) or one "
                                       "certificate, on every collector of this CA")
    a.add_argument("--data-dir", required=True)
    a.add_argument("--config", default=None,
                   help="the collector's YAML config (default: DATA_DIR/collector.yml), "
                        "for pki.crl_path and Elasticsearch")
    a.add_argument("--serial", default=None, help="a certificate serial (hex) instead of an id")
    a.add_argument("agent_id", nargs="?", default=None)
    a.set_defaults(func=_agents_revoke)

    p = sub.add_parser("status", help="the running collector's health (written every 2 s)")
    p.add_argument("--data-dir", required=True)
    p.set_defaults(func=_status)

    p = sub.add_parser("run", help="serve enrollment and event streams")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--listen", default=None, help="events (mutual TLS), HOST:PORT")
    p.add_argument("--enroll-listen", default=None,
                   help="enrollment (server TLS), HOST:PORT; default: the events port + 1")
    p.add_argument("--rules", action="append", help="rules directory or file (repeatable)")
    p.add_argument("--print-alerts", action="store_true", default=None)
    p.add_argument("--es-url", action="append")
    p.add_argument("--es-api-key", help="visible in /proc: prefer --es-api-key-file or "
                                         "SISGUARD_ES_API_KEY")
    p.add_argument("--es-api-key-file", metavar="FILE", help="read the API key from FILE")
    p.add_argument("--es-user")
    p.add_argument("--es-password", help="visible in /proc: prefer --es-password-file or "
                                          "SISGUARD_ES_PASSWORD")
    p.add_argument("--es-password-file", metavar="FILE", help="read the password from FILE")
    p.add_argument("--es-ca")
    p.add_argument("--archive", choices=["on", "off"], default=None,
                   help="keep the JSONL archive (default: on unless Elasticsearch is set)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (default: "
                        "off; no authentication: bind to a private address)")
    p.set_defaults(func=_run)

    p = sub.add_parser("tenants", help="each organization's own view of the cluster")
    tsub = p.add_subparsers(dest="tenants_command", required=True)
    t = tsub.add_parser("sync", help="per-organization filtered aliases, roles and Kibana "
                                     "spaces (idempotent; docs/tenancy.md)")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--config", default=None,
                   help="the collector's YAML config (default: DATA_DIR/collector.yml), "
                        "for Elasticsearch")
    t.add_argument("--es-url", action="append", help="instead of the config's")
    t.add_argument("--es-api-key-file", metavar="FILE",
                   help="an administrator's API key instead of the config's credentials "
                        "(sync needs manage_index_templates, manage on PREFIX-*, "
                        "manage_security)")
    t.add_argument("--es-user", help="an administrator instead of the config's credentials")
    t.add_argument("--es-password-file", metavar="FILE",
                   help="--es-user's password (or SISGUARD_ES_PASSWORD)")
    t.add_argument("--organization", default=None, metavar="ID", help="only this one")
    t.add_argument("--dry-run", action="store_true", help="print what would be done")
    t.add_argument("--kibana-dir", default=None, metavar="DIR",
                   help="write each space and its saved objects here (default: "
                        "DATA_DIR/kibana)")
    t.add_argument("--kibana", default=None, metavar="URL",
                   help="also make the spaces and import their objects into this Kibana")
    t.add_argument("--kibana-api-key",
                   help="API key (base64 or id:key); or SISGUARD_KIBANA_API_KEY")
    t.add_argument("--kibana-user")
    t.add_argument("--kibana-password", help="or SISGUARD_KIBANA_PASSWORD")
    t.add_argument("--kibana-ca", help="CA certificate file for an https Kibana URL")
    t.set_defaults(func=_tenants_sync)

    p = sub.add_parser("kibana", help="Kibana data views, searches and dashboard")
    ksub = p.add_subparsers(dest="kibana_command", required=True)
    k = ksub.add_parser("import", help="import deploy/kibana/sisguard.ndjson (overwrites)")
    k.add_argument("--url", required=True, help="Kibana base URL, e.g. https://kibana:5601")
    k.add_argument("--space", default=None, help="Kibana space id (default: the default space)")
    k.add_argument("--api-key", help="API key (base64 or id:key); or SISGUARD_KIBANA_API_KEY")
    k.add_argument("--user")
    k.add_argument("--password", help="or SISGUARD_KIBANA_PASSWORD; asked for when missing")
    k.add_argument("--ca", help="CA certificate file for an https URL")
    k.add_argument("--file", help="NDJSON to import (default: deploy/kibana/sisguard.ndjson)")
    k.set_defaults(func=_kibana_import)
    add_config_parser(sub, program="sisguard-collector",
                      default_path="/etc/sisguard/collector.yml", check=_check_config,
                      load=_effective_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
