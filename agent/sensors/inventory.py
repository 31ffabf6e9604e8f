"""What is on the host (``sisguard.inventory``, ``event.kind: state``).

At start and every ``interval`` (default 12 h) the sensor collects host facts (OS,
kernel, addresses, MACs, boot time), local users and groups, and installed packages
(``/var/lib/dpkg/status`` read directly, or ``rpm -qa``). One document per item.

To stay cheap, the first run on a host sends everything (``sisguard.inventory.change:
initial``); later runs (including after a restart) send only what was ``added``,
``changed`` or ``removed`` since the last run, compared with a digest per item kept in
``state_dir/inventory.json``. The host document is sent on every run (it says the
inventory ran). ``emit: all`` sends everything every time.
"""

from __future__ import annotations

import enum
import grp
import hashlib
import json
import os
import platform
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from agent.ecs import Document, new_event, timestamp
from agent.sensors.base import Sensor, SensorContext
from agent.timer import Job
from common.logs import get_logger
from common.text import escape_bytes, os_text
from common.yamlconf import Duration

log = get_logger("sisguard.agent.inventory")

DATASET = "sisguard.inventory"


class Emit(enum.Enum):
    CHANGES = "changes"
    ALL = "all"


@dataclass(frozen=True)
class InventoryConfig:
    interval: Duration = Duration(12 * 3600)
    emit: Emit = Emit.CHANGES
    users: bool = True
    groups: bool = True
    packages: bool = True
    dpkg_status: Path = Path("/var/lib/dpkg/status")


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    facts: dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq:
                facts[key.strip()] = value.strip().strip('"')
    except OSError:
        pass
    return facts


def host_facts() -> tuple[dict[str, Any], str]:
    """ECS ``host.*`` and the boot time."""
    rel = os_release()
    uname = platform.uname()
    ips: list[str] = []
    macs: list[str] = []
    for _name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                ips.append(a.address.split("%", 1)[0])
            elif a.family == psutil.AF_LINK and a.address and a.address != "00:00:00:00:00:00":
                macs.append(a.address.upper().replace(":", "-"))
    boot = psutil.boot_time()
    return {
        "hostname": socket.gethostname(),
        "architecture": uname.machine,
        "os": {"type": uname.system.lower(), "kernel": uname.release,
               "name": rel.get("NAME", uname.system), "version": rel.get("VERSION_ID", ""),
               "platform": rel.get("ID", ""), "family": rel.get("ID_LIKE", rel.get("ID", "")),
               "full": rel.get("PRETTY_NAME", "")},
        "ip": sorted(set(ips)),
        "mac": sorted(set(macs)),
        "boot": {"id": _boot_id()},
        "uptime": int(time.time() - boot),
    }, timestamp(boot)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    """Installed packages from a dpkg status file."""
    packages = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
            packages.append({"name": fields["Package"], "version": fields.get("Version", ""),
                             "architecture": fields.get("Architecture", ""), "type": "deb"})
    return packages


def rpm_packages(run: Callable[[list[str]], str]) -> list[dict[str, str]]:
    out = run(["rpm", "-qa", "--queryformat", "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"])
    packages = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            packages.append({"name": parts[0], "version": parts[1], "architecture": parts[2],
                             "type": "rpm"})
    return packages


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


class InventorySensor(Sensor):
    name = "inventory"
    config: InventoryConfig

    def __init__(self, config: InventoryConfig, context: SensorContext, *,
                 host: Callable[[], tuple[dict[str, Any], str]] = host_facts,
                 run: Callable[[list[str]], str] = _run,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        super().__init__(config, context)
        self._host = host
        self._run = run
        self._which = which
        self._state_path = context.state_dir / "inventory.json"
        self._job: Job | None = None
        context.health.mode = "scheduled"

    def start(self) -> None:
        """Runs on the agent's timer thread (agent/timer.py): now, then every interval."""
        self._job = self.context.timer.every(float(self.config.interval), self._tick,
                                             name="inventory")

    def stop(self) -> None:
        super().stop()
        if self._job is not None:
            self._job.cancel(timeout=0)

    def join(self, timeout: float | None = None) -> None:
        if self._job is not None:
            self._job.cancel(timeout)

    def _tick(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.run_once()
        except Exception as e:
            self.context.report_error(f"inventory failed: {type(e).__name__}: {e}", {})

    def collect(self) -> dict[str, dict[str, Any]]:
        """Every item, keyed ``kind:name``."""
        items: dict[str, dict[str, Any]] = {}
        # user and group names are bytes from /etc/passwd and /etc/group: made valid here
        if self.config.users:
            for u in pwd.getpwall():
                name = os_text(u.pw_name)
                items[f"user:{name}"] = {
                    "user": {"name": name, "id": str(u.pw_uid),
                             "full_name": os_text(u.pw_gecos.split(",")[0]),
                             "group": {"id": str(u.pw_gid)}},
                    "sisguard": {"inventory": {"home": os_text(u.pw_dir),
                                               "shell": os_text(u.pw_shell)}}}
        if self.config.groups:
            for g in grp.getgrall():
                name = os_text(g.gr_name)
                items[f"group:{name}"] = {
                    "group": {"name": name, "id": str(g.gr_gid)},
                    "sisguard": {"inventory": {"members": sorted(os_text(m)
                                                                 for m in g.gr_mem)}}}
        if self.config.packages:
            for p in self._packages():
                items[f"package:{p['name']}:{p['architecture']}"] = {"package": p}
        return items

    def _packages(self) -> list[dict[str, str]]:
        try:
            return parse_dpkg_status(escape_bytes(self.config.dpkg_status.read_bytes()))
        except FileNotFoundError:
            pass
        except OSError as e:
            self.context.report_error(f"cannot read dpkg status: {e}", {})
            return []
        if self._which("rpm"):
            try:
                return rpm_packages(self._run)
            except (OSError, subprocess.SubprocessError) as e:
                self.context.report_error(f"rpm -qa failed: {e}", {})
        return []

    def _load(self) -> dict[str, str] | None:
        try:
            data = json.loads(self._state_path.read_text())
            return dict(data["digests"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def run_once(self) -> None:
        started = time.monotonic()
        host, boot_time = self._host()
        doc = new_event(DATASET, kind="state", category=["host"], type=["info"], action="host")
        doc["host"] = host
        doc["sisguard"] = {"inventory": {"boot_time": boot_time}}
        doc["message"] = f"host {host.get('hostname')}: {host.get('os', {}).get('full', '')}"
        self.emit(doc)
        items = self.collect()
        digests = {key: hashlib.sha256(json.dumps(item, sort_keys=True).encode(
                       "utf-8", "surrogatepass")).hexdigest() for key, item in items.items()}
        previous = self._load()
        sent = 0
        for key, item in items.items():
            if previous is None:
                change = "initial"
            elif key not in previous:
                change = "added"
            elif previous[key] != digests[key]:
                change = "changed"
            elif self.config.emit is Emit.ALL:
                change = "unchanged"
            else:
                continue
            try:   # one item that cannot be described costs only itself
                self.emit(self._document(key, item, change))
                sent += 1
            except Exception as e:
                self.context.report_error(f"cannot describe {key}: {type(e).__name__}: {e}",
                                          {"sisguard.inventory.key": key})
                log.exception("inventory item failed", key=key)
        for key in (previous or {}).keys() - items.keys():
            kind, name = key.split(":", 2)[:2]
            field = {"user": "user", "group": "group", "package": "package"}[kind]
            self.emit(self._document(key, {field: {"name": name}}, "removed"))
            sent += 1
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"digests": digests}))
        os.replace(tmp, self._state_path)
        log.info("inventory", items=len(items), sent=sent,
                 seconds=round(time.monotonic() - started, 3))

    @staticmethod
    def _document(key: str, item: dict[str, Any], change: str) -> Document:
        kind = key.split(":", 1)[0]
        if kind == "package":
            ptype = {"initial": "info", "unchanged": "info", "added": "installation",
                     "changed": "change", "removed": "deletion"}[change]
            doc = new_event(DATASET, kind="state", category=["package"], type=[ptype],
                            action="package")
        else:
            itype = {"initial": "info", "unchanged": "info", "added": "creation",
                     "changed": "change", "removed": "deletion"}[change]
            doc = new_event(DATASET, kind="state", category=["iam"], type=[kind, itype],
                            action=kind)
        for field, value in item.items():
            doc[field] = json.loads(json.dumps(value))
        doc.setdefault("sisguard", {}).setdefault("inventory", {})["change"] = change
        return doc
