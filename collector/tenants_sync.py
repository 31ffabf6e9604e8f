"""``sisguard-collector tenants sync``: apply collector/tenants.py's plan.

The organizations are those the store knows (tokens and agents); Elasticsearch is the
collector's (its config, credentials from collector/credentials.py). Each organization's
Kibana space and saved objects are written to a directory (``space-<id>.json`` and
``space-<id>.ndjson``) and, with ``--kibana URL``, made in that Kibana.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from collector.kibana import (
    API_KEY_ENV,
    PASSWORD_ENV,
    KibanaTarget,
    default_file,
    load_ndjson,
    summary,
)
from collector.store import Store
from collector.tenants import KINDS, Organization, alias_name, check_org_id, plan, probe, space_id
from common.errors import SisguardError

# --------------------------------------------------------------------------- Kibana

def space_body(space_id: str, organization_name: str) -> dict[str, Any]:
    """The Kibana space of one organization (``POST /api/spaces/space``)."""
    return {"id": space_id, "name": organization_name[:1024],
            "description": f"sisguard: {organization_name}'s events and alerts only",
            "disabledFeatures": []}


def tenant_objects(objects: list[dict[str, Any]], aliases: Mapping[str, str],
                   organization_name: str) -> list[dict[str, Any]]:
    """The shipped saved objects for one organization's space: each data view whose title
    is ``*-events-*`` or ``*-alerts-*`` points at that kind's alias (``aliases``: kind ->
    alias); other data views, and what refers to them, are left out."""
    out: list[dict[str, Any]] = []
    kept: set[tuple[str, str]] = set()
    for obj in objects:
        if obj.get("type") != "index-pattern":
            continue
        title = str(obj.get("attributes", {}).get("title", ""))
        kind = next((k for k in aliases if title.endswith(f"-{k}-*")), None)
        if kind is None:
            continue
        copy = json.loads(json.dumps(obj))
        copy["attributes"]["title"] = aliases[kind]
        copy["attributes"]["name"] = f"{organization_name}: {kind}"
        out.append(copy)
        kept.add(("index-pattern", str(obj["id"])))
    rest = [o for o in objects if o.get("type") != "index-pattern"]
    changed = True
    while changed:   # keep an object once everything it refers to is kept
        changed = False
        for obj in rest:
            key = (str(obj.get("type")), str(obj.get("id")))
            if key in kept:
                continue
            if all((r["type"], r["id"]) in kept for r in obj.get("references", [])):
                out.append(json.loads(json.dumps(obj)))
                kept.add(key)
                changed = True
    return out


def dump_ndjson(objects: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(o, ensure_ascii=False, sort_keys=True).encode() + b"\n"
                    for o in objects)


# --------------------------------------------------------------------------- sync

def organizations(store: Store, only: str | None) -> list[Organization]:
    """The store's organizations (one id, one name: a conflict is an error); only the
    one whose id is ``only`` when given."""
    found = store.organizations()
    names = Counter(o.id for o in found)
    doubled = sorted(i for i, n in names.items() if n > 1)
    if doubled:
        raise SisguardError(
            "organization ids with more than one name in the store (tokens or agents made "
            f"before ids, whose names fold to the same id): {', '.join(doubled)}; they would "
            "share one view: re-enroll one of them with a token of another --org-id")
    if only is not None:
        check_org_id(only, where="--organization")
        found = [o for o in found if o.id == only]
        if not found:
            raise SisguardError(f"--organization {only}: no token or agent names it")
    return found


def kibana_files(organizations: list[Organization], prefix: str,
                 objects: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], bytes]]:
    """space id -> (space body, its saved objects as NDJSON)."""
    files = {}
    for org in organizations:
        sid = space_id(prefix, org.id)
        aliases = {kind: alias_name(prefix, kind, org.id) for kind in KINDS}
        files[sid] = (space_body(sid, org.name),
                      dump_ndjson(tenant_objects(objects, aliases, org.name)))
    return files


def _elasticsearch(args: argparse.Namespace) -> Any:
    from collector.config import load_config
    from collector.credentials import resolve_elasticsearch
    from collector.server import DataDir

    data = DataDir(Path(args.data_dir))
    path = Path(args.config) if args.config else data.config if data.config.exists() else None
    config = load_config(path, {"data_dir": args.data_dir}).elasticsearch
    if args.es_url:
        config = dataclasses.replace(config, url=tuple(args.es_url))
    if args.es_api_key_file:      # an administrator's, not the collector's
        config = dataclasses.replace(config, api_key_file=Path(args.es_api_key_file),
                                     api_key=None, username=None, password=None,
                                     password_file=None)
    elif args.es_user:
        config = dataclasses.replace(
            config, username=args.es_user, api_key=None, api_key_file=None, password=None,
            password_file=Path(args.es_password_file) if args.es_password_file else None)
    if not config.url:
        raise SisguardError("no Elasticsearch: set elasticsearch.url in the config or give "
                            "--es-url")
    return resolve_elasticsearch(config, os.environ)


def sync_command(args: argparse.Namespace, store: Store) -> int:
    from elasticsearch import ApiError, TransportError

    from collector.outputs.elasticsearch import connect_client
    from collector.outputs.es_indices import IndexNames

    everyone = organizations(store, None)
    orgs = organizations(store, args.organization)
    config = _elasticsearch(args)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)   # a line per request
    client = connect_client(config)
    names = IndexNames(config.index_prefix)
    dry = "would do: " if args.dry_run else ""
    try:
        cluster = probe(client, names)
        steps, notes = plan(client, names, everyone, cluster, shards=config.shards,
                            replicas=config.replicas, selected=orgs)
        for step in steps:
            print(f"{dry}{step.what}")
            if not args.dry_run:
                step.run()
    except (ApiError, TransportError) as e:
        raise SisguardError(f"Elasticsearch at {', '.join(config.url)}: {e}") from e
    finally:
        client.close()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    _kibana(args, orgs, config.index_prefix, dry)
    print(f"{'dry run: ' if args.dry_run else ''}{len(orgs)} organizations: "
          + ", ".join(f"{o.id} ({o.name})" for o in orgs))
    return 0


def _kibana(args: argparse.Namespace, orgs: list[Organization], prefix: str, dry: str) -> None:
    shipped = default_file()
    objects = load_ndjson(shipped.read_bytes(), source=str(shipped))
    files = kibana_files(orgs, prefix, objects)
    directory = Path(args.kibana_dir) if args.kibana_dir else Path(args.data_dir) / "kibana"
    target = None
    if args.kibana:
        if args.kibana_user is not None and args.kibana_api_key:
            raise SisguardError("give either --kibana-api-key or --kibana-user, not both")
        api_key = args.kibana_api_key or (os.environ.get(API_KEY_ENV)
                                          if args.kibana_user is None else None)
        target = KibanaTarget(args.kibana, api_key=api_key, user=args.kibana_user,
                              password=args.kibana_password or os.environ.get(PASSWORD_ENV),
                              ca=args.kibana_ca)
    for sid, (space, ndjson) in files.items():
        print(f"{dry}Kibana space {sid}: {directory / f'space-{sid}.json'} and "
              f"{directory / f'space-{sid}.ndjson'}"
              + (f", made in {target.where}" if target else ""))
        if dry:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"space-{sid}.json").write_text(
            json.dumps(space, ensure_ascii=False, indent=2) + "\n")
        (directory / f"space-{sid}.ndjson").write_bytes(ndjson)
        if target is not None:
            done = target.put_space(space)
            answer = target.import_objects(ndjson, space=sid)
            if not answer.get("success"):
                raise SisguardError(f"Kibana space {sid}: {summary(answer)}")
            print(f"Kibana space {sid} {done}: {summary(answer)}")
