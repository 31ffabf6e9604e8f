"""FIM configuration: global settings and one entry per watched path.

``paths`` accepts plain strings (``--watch PATH``) or mappings::

    sensor:
      fim:
        paths:
          - /etc
          - path: /var/www/portal
            report_changes: true
            content_checks: true
            protect: restore
            scan_interval: 10m
            exclude: ["cache/*", "*.log"]

Entries are normalized into ``WatchPath`` by ``FimConfig.__post_init__``.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.errors import ConfigError, Location
from common.yamlconf import Duration, PositionedDict, Size, from_dict

INTERNAL_PREFIX = ".sisguard-"   # our own temporary files (protection restores)
HASHES = ("sha256", "sha1", "md5", "sha512")  # ECS file.hash.* names
# files whose content must never leave the host in a diff: web-app database passwords
# (.env, WordPress, phpMyAdmin, Joomla, Drupal), basic-auth hashes, keys, shadow files
NODIFF_DEFAULT = (".env", ".env.*", "wp-config.php", "config.inc.php", "configuration.php",
                  "settings.php", ".htpasswd", "*.key", "*.pem", "*.p12", "*.pfx", "*.kdbx",
                  "id_*", "shadow", "shadow-", "gshadow", "gshadow-")


class Protect(enum.Enum):
    OFF = "off"
    RESTORE = "restore"


@dataclass(frozen=True)
class WatchPath:
    path: Path
    recursive: bool = True
    report_changes: bool = False     # unified diffs of text files in sisguard.fim.diff
    content_checks: bool = False     # web-shell / spam signatures on web content
    protect: Protect = Protect.OFF
    scan_interval: Duration | None = None   # default: FimConfig.scan_interval
    include: tuple[str, ...] = ()    # files must match one (empty: all)
    exclude: tuple[str, ...] = ()    # added to FimConfig.exclude
    tags: tuple[str, ...] = ()       # copied into each event's ECS `tags` (e.g. web_root)

    @functools.cached_property
    def root(self) -> str:  # asked for every file a scan sees: computed once
        return os.path.abspath(os.fspath(self.path))

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class FimConfig:
    paths: tuple[str | WatchPath, ...] = ()  # a path, or a mapping; normalized to WatchPath
    exclude: tuple[str, ...] = ("*.swp", "*~", "*.tmp", ".#*", "4913")
    hashes: tuple[str, ...] = ("sha256",)
    xattrs: bool = True              # a digest of extended attributes (incl. POSIX ACLs)
    settle: Duration = Duration(0.2)
    max_delay: Duration = Duration(1.0)
    hash_max_bytes: Size = Size(256 * 1024 * 1024)
    scan_interval: Duration = Duration(6 * 3600.0)
    unwatched_scan_interval: Duration = Duration(60.0)  # dirs past max_watches
    scan_bytes_per_second: Size = Size(50 * 1024 * 1024)  # 0: unthrottled
    scan_files_per_second: int = 0                         # 0: unthrottled
    scan_workers: int = 2            # helper processes hashing a baseline scan (0: none)
    full_rehash: bool = False        # reconciliation scans rehash unchanged-looking files
    initial_scan_events: bool = False
    max_watches: int = 0             # 0: up to the kernel's limit
    # secrets: no diff, no copy (a name pattern matches anywhere; setting it replaces it)
    nodiff: tuple[str, ...] = NODIFF_DEFAULT
    diff_max_file: Size = Size(1024 * 1024)
    diff_max_bytes: Size = Size(64 * 1024)
    diff_store_max: Size = Size(256 * 1024 * 1024)
    content_max_bytes: Size = Size(2 * 1024 * 1024)
    # protection: content kept per approved file (restorable), copied per quarantined
    # file across file systems (past it: recorded and removed, never read)
    protect_max_bytes: Size = Size(64 * 1024 * 1024)
    content_extensions: tuple[str, ...] = ("html", "htm", "shtml", "php", "php3", "php4",
                                           "php5", "php7", "phtml", "phar", "inc", "asp",
                                           "aspx", "ashx", "asmx", "jsp", "jspx", "js", "txt",
                                           "cgi", "pl", "py")
    signatures: Path | None = None   # a site signature file, added to the shipped one
    yara_rules: tuple[Path, ...] = ()   # YARA rule files for content checks (fim/yara_rules.py)
    yara_timeout: Duration = Duration(5.0)   # per file scanned (whole seconds, at least 1)
    quarantine_dir: Path | None = None  # default: <state dir>/quarantine

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(_watch_path(e, i)
                                                for i, e in enumerate(self.paths)))
        bad = [h for h in self.hashes if h not in HASHES]
        if bad or not self.hashes:
            raise ConfigError(f"sensor.fim.hashes: {bad or 'empty'} (allowed: "
                              f"{', '.join(HASHES)})", location=Location("<config>"))

    @property
    def watch_paths(self) -> tuple[WatchPath, ...]:
        return tuple(p for p in self.paths if isinstance(p, WatchPath))

    def interval(self, wp: WatchPath) -> float:
        return float(wp.scan_interval if wp.scan_interval is not None else self.scan_interval)


WEB_ROOT_TAG = "web_root"


def with_web_roots(config: FimConfig, roots: Iterable[str]) -> FimConfig:
    """``config`` watching the discovered web ``roots`` too (existing directories only),
    each tagged ``web_root`` with content checks. Explicit config wins: a path given in
    the config keeps its settings; one equal to or inside a web root gains the tag (and
    content checks, when it was given as a bare path, as ``--watch`` gives it)."""
    found = [os.path.abspath(r) for r in roots]
    found = [r for r in dict.fromkeys(found) if os.path.isdir(r)]
    paths: list[WatchPath] = []
    for wp in config.watch_paths:
        inside = any(wp.root == r or wp.root.startswith(r.rstrip("/") + "/") for r in found)
        if inside and WEB_ROOT_TAG not in wp.tags:
            bare = wp == WatchPath(path=wp.path)
            wp = replace(wp, tags=(*wp.tags, WEB_ROOT_TAG),
                         content_checks=True if bare else wp.content_checks)
        paths.append(wp)
    explicit = {wp.root for wp in paths}
    paths += [WatchPath(path=Path(r), content_checks=True, tags=(WEB_ROOT_TAG,))
              for r in found if r not in explicit]
    return replace(config, paths=tuple(paths))


def _watch_path(entry: Any, index: int) -> WatchPath:
    where = f"sensor.fim.paths[{index}]"
    if isinstance(entry, WatchPath):
        return entry
    if isinstance(entry, (str, Path)):
        return WatchPath(path=Path(entry))
    if isinstance(entry, dict):
        source = "<config>"
        if isinstance(entry, PositionedDict) and entry.start:
            source = f"<config>:{entry.start[0]}:{entry.start[1]}"
        return from_dict(WatchPath, entry, source=source, path=where)
    raise ConfigError(f"{where}: expected a path or a mapping, got {type(entry).__name__}",
                      location=Location("<config>"))


def _regex(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class Rules:
    """Which paths under which root are watched (include/exclude, longest root wins)."""

    def __init__(self, config: FimConfig) -> None:
        self.config = config
        self.paths = sorted(config.watch_paths, key=lambda w: len(w.root), reverse=True)
        self._patterns: dict[str, tuple[re.Pattern[str] | None, re.Pattern[str] | None,
                                        re.Pattern[str] | None]] = {}

    def root_of(self, path: str) -> WatchPath | None:
        for wp in self.paths:
            root = wp.root
            if path == root:
                return wp
            if path.startswith(root.rstrip("/") + "/"):
                if not wp.recursive and os.path.dirname(path) != root:
                    continue
                return wp
        return None

    def excluded(self, wp: WatchPath, path: str, *, is_dir: bool) -> bool:
        """True when ``path`` (under ``wp``) is not to be watched or recorded. A pattern
        without a slash matches the name, one with a slash the path below the root."""
        if path == wp.root:
            return False
        name = path[path.rfind("/") + 1:]
        if name.startswith(INTERNAL_PREFIX):
            return True
        by_name, by_rel, include = self._compiled(wp)
        rel = path[len(wp.root.rstrip("/")) + 1:]
        if (by_name is not None and by_name.match(name)) or (
                by_rel is not None and by_rel.match(rel)):
            return True
        if include is not None and not is_dir:
            return not (include.match(name) or include.match(rel))
        return False

    def _compiled(self, wp: WatchPath) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None,
                                                re.Pattern[str] | None]:
        found = self._patterns.get(wp.root)
        if found is None:
            patterns = (*self.config.exclude, *wp.exclude)
            found = (_regex([p for p in patterns if "/" not in p]),
                     _regex([p for p in patterns if "/" in p]), _regex(list(wp.include)))
            self._patterns[wp.root] = found
        return found

    def wanted(self, path: str, *, is_dir: bool) -> WatchPath | None:
        """The root ``path`` belongs to, unless it or a directory above it is excluded."""
        wp = self.root_of(path)
        if wp is None or self.excluded(wp, path, is_dir=is_dir):
            return None
        parent = os.path.dirname(path)
        while len(parent) > len(wp.root):
            if self.excluded(wp, parent, is_dir=True):
                return None
            parent = os.path.dirname(parent)
        return wp
