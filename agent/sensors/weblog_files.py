"""Which file a request names: the join between the web side and the file side.

A FIM event names a file by its absolute path (``file.path``). An access-log line names
a URL path on a vhost. When the agent knows the document root the log's requests are
served from (the ``root`` / ``DocumentRoot`` of that vhost, found in the web server
config or given as ``root:`` in the sensor config), the web document carries
``file.path``: that root joined with the URL path the way nginx and Apache map it
(percent-decoded, ``.``/``..`` and repeated slashes resolved, a ``PATH_INFO`` tail after a
script name cut off), made text with the same escaping as FIM's (``common.text``). The
same file therefore has the same ``file.path`` on both sides, and a correlation can group
on it (rules/web/web_script_created_then_requested.yml).

It is what the request names, not what the server ran: a rewrite (``try_files``, a front
controller such as WordPress's ``index.php``, ``mod_rewrite``), an ``alias``/``Alias``
location, a location with a root of its own or a request proxied elsewhere name a file
that is not the one served. Those requests still carry a ``file.path``; it simply
joins nothing.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from agent.webconf import WebLog, WebRoot
from common.text import os_text, unescape

MAX_URL_PATH = 4096
# a segment with one of these extensions is the script; what follows is its PATH_INFO
SCRIPT_EXTENSIONS = frozenset({
    b"php", b"php3", b"php4", b"php5", b"php7", b"phtml", b"phar", b"jsp", b"jspx", b"asp",
    b"aspx", b"ashx", b"asmx", b"cgi", b"pl", b"py", b"sh"})
ROOT_DIRECTIVES = ("root", "DocumentRoot")


def served_path(root: str, url_path: str) -> str | None:
    """The file under ``root`` that ``url_path`` (as logged: valid text) names, or None:
    not an absolute path, a directory (``/`` or a trailing slash: its index is the
    server's choice), a NUL byte, or ``..`` climbing above the root."""
    if not root or not url_path.startswith("/") or len(url_path) > MAX_URL_PATH:
        return None
    raw = unquote_to_bytes(unescape(url_path))
    if b"\x00" in raw:
        return None
    parts: list[bytes] = []
    segments = raw.split(b"/")
    info = False
    for i, segment in enumerate(segments):
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(segment)
        ext = segment.rpartition(b".")[2].lower() if b"." in segment[1:] else b""
        if ext in SCRIPT_EXTENSIONS and i < len(segments) - 1:
            info = True   # /x.php/extra: the server runs x.php
            break
    directory = raw.endswith(b"/") or segments[-1] in (b".", b"..")
    if not parts or (directory and not info):
        return None
    base = os.fsencode(root).rstrip(b"/")
    return os_text(base + b"/" + b"/".join(parts))


def root_of_log(log: WebLog, roots: Iterable[WebRoot]) -> str:
    """The document root a discovered log's requests are served from: the one ``root`` /
    ``DocumentRoot`` of the log's vhost (of its server, for a log outside any vhost);
    "" when there is none or more than one (the file is then not named)."""
    found = {posixpath.normpath(r.path) for r in roots
             if r.directive in ROOT_DIRECTIVES and r.server == log.server
             and (log.vhost is None or r.vhost == log.vhost)}
    return found.pop() if len(found) == 1 else ""
