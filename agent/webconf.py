"""What the nginx and Apache parsers share: what they find, and a bounded config reader.

Web server configurations are root's, but they are still input: a config a local user
could have written or swapped (not owned by root or by us, writable by group/others, a
link another user owns, in a directory others may write) is not read, nor one that is
not a regular file; every file is opened non-blocking and read within a
cap; includes are bounded in depth, in files and in glob matches, and a cycle is an error.
Problems are collected (``file:line: message``), never raised: one bad file costs itself.
"""

from __future__ import annotations

import glob
import itertools
import os
import stat
from dataclasses import dataclass, field

from common.text import os_text


@dataclass(frozen=True)
class Limits:
    max_files: int = 256            # config files read per server
    max_depth: int = 8              # include nesting
    max_file_bytes: int = 1024 * 1024
    max_total_bytes: int = 8 * 1024 * 1024
    max_line_bytes: int = 16 * 1024   # a line (Apache) or a token (nginx)
    max_glob_matches: int = 256       # files one include pattern may name
    max_found: int = 256              # roots, and logs, per server


@dataclass(frozen=True)
class WebRoot:
    path: str
    server: str                 # nginx, apache
    vhost: str | None           # the first server_name / ServerName of its server block
    directive: str              # root, alias, DocumentRoot, Alias, ScriptAlias
    source: str                 # file:line


@dataclass(frozen=True)
class WebLog:
    path: str
    kind: str                   # access, error
    format: str                 # a hint: "combined", "nginx:json", a format name
    server: str
    vhost: str | None
    source: str
    format_string: str | None = None   # the log_format / LogFormat string, when defined


@dataclass
class Found:
    server: str
    limits: Limits
    roots: list[WebRoot] = field(default_factory=list)
    logs: list[WebLog] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)   # config read -> mtime_ns
    errors: list[str] = field(default_factory=list)

    def root(self, root: WebRoot) -> None:
        if len(self.roots) >= self.limits.max_found:
            self.error(root.source, f"more than {self.limits.max_found} web roots: ignored")
        elif root.path not in {r.path for r in self.roots}:
            self.roots.append(root)

    def log(self, entry: WebLog) -> None:
        if len(self.logs) >= self.limits.max_found:
            self.error(entry.source, f"more than {self.limits.max_found} logs: ignored")
        elif (entry.path, entry.kind) not in {(x.path, x.kind) for x in self.logs}:
            self.logs.append(entry)

    def error(self, where: str, message: str) -> None:
        if len(self.errors) < 100:
            self.errors.append(f"{where}: {message}")


class ConfigReader:
    """Reads the files of one server's configuration, bounded, cycles refused."""

    def __init__(self, found: Found) -> None:
        self.found = found
        self.limits = found.limits
        self.total = 0
        self.chain: list[tuple[int, int]] = []   # (dev, ino) of the files being parsed

    def expand(self, pattern: str, where: str) -> list[str]:
        """The files an include names (a glob, sorted as the servers do), capped."""
        if not glob.has_magic(pattern):
            return [pattern]
        # the first names in sorted order, as nginx and httpd read them: sorted from a
        # bounded sample (a directory of millions of names is never listed in full)
        cap = self.limits.max_glob_matches
        matches = sorted(itertools.islice(glob.iglob(pattern), 16 * cap + 1))
        if len(matches) > cap:
            self.found.error(where, f"include {pattern!r}: over "
                                    f"{self.limits.max_glob_matches} files, the rest ignored")
            matches = matches[:self.limits.max_glob_matches]
        return [m for m in matches if not os.path.isdir(m)]

    def read(self, path: str, where: str) -> tuple[bytes, tuple[int, int]] | None:
        """The bytes of ``path`` if it may be read; else None and an error recorded."""
        found, limits = self.found, self.limits
        if len(self.chain) >= limits.max_depth:
            found.error(where, f"include {path}: nested deeper than {limits.max_depth}")
            return None
        if len(found.files) >= limits.max_files:
            found.error(where, f"include {path}: over {limits.max_files} config files")
            return None
        problem = _untrusted_place(path)
        if problem is not None:
            found.error(where, f"{path}: {problem}: not read")
            return None
        try:
            # sites-enabled/* are links to sites-available: followed (root's tree), but
            # never a FIFO or device, never blocking on one
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as e:
            found.error(where, f"{path}: {e.strerror}")
            return None
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            problem = _untrusted(st, limits.max_file_bytes)
            if problem is None and key in self.chain:
                problem = "include cycle"
            if problem is None and self.total + st.st_size > limits.max_total_bytes:
                problem = f"over the {limits.max_total_bytes} bytes read in all"
            if problem is not None:
                found.error(where, f"{path}: {problem}: not read")
                return None
            data = os.read(fd, limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:   # grew since fstat
                found.error(where, f"{path}: over {limits.max_file_bytes} bytes: not read")
                return None
        except OSError as e:
            found.error(where, f"{path}: {e.strerror}")
            return None
        finally:
            os.close(fd)
        self.total += len(data)
        found.files[path] = st.st_mtime_ns
        return data, key


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _untrusted_place(path: str) -> str | None:
    """Why ``path`` may have been put there by someone else: a link another user owns, or
    a directory (where the name is, or where the link leads) others may write in (then
    they could swap the file, or add one an include glob picks up)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and not _trusted_owner(st):
            return f"a link owned by uid {st.st_uid}"
        for directory in dict.fromkeys((os.path.dirname(os.path.abspath(path)),
                                        os.path.dirname(os.path.realpath(path)))):
            dst = os.stat(directory)
            if not _trusted_owner(dst) or dst.st_mode & 0o022:
                return f"in {directory}, which uid {dst.st_uid} owns or others may write"
    except OSError as e:
        return e.strerror or str(e)
    return None


def _untrusted(st: os.stat_result, max_bytes: int) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not _trusted_owner(st):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_size > max_bytes:
        return f"{st.st_size} bytes, over the {max_bytes} bytes cap"
    return None


def text(data: bytes) -> str:
    """Config bytes as text whose paths round-trip to the file system (surrogateescape);
    shown through ``shown`` only."""
    return os.fsdecode(data)


def shown(value: str) -> str:
    """A config string for a log line or an event: valid text, odd bytes escaped."""
    return os_text(os.fsencode(value))


# system trees never taken for a web root, whatever a config says (watching / or /proc
# would cost the agent everything); their subdirectories may be (/usr/share/nginx/html)
NEVER_ROOTS = frozenset({"/", "/proc", "/sys", "/dev", "/run", "/usr", "/etc", "/var",
                         "/boot", "/home", "/root", "/tmp", "/srv", "/opt", "/usr/share",
                         "/var/lib", "/var/log", "/lib", "/bin", "/sbin", "/usr/lib"})


def clean_root(path: str) -> str | None:
    """An absolute, normalized directory path for a web root, or None if unusable: a
    path with a variable is cut before its first ``$`` component."""
    if "$" in path:
        parts = path.split("/")
        path = "/".join(itertools.takewhile(lambda p: "$" not in p, parts))
    if not path.startswith("/") or "\x00" in path:
        return None
    path = os.path.normpath(path)
    if path.startswith("//"):
        path = path[1:]
    return None if path in NEVER_ROOTS else path
