"""The file a request names (``file.path`` on web documents) is the path FIM gives the
same file, and it never leaves the document root."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sensors.fim.events import path_fields
from agent.sensors.weblog import discovered_paths
from agent.sensors.weblog_document import DocumentBuilder
from agent.sensors.weblog_files import root_of_log, served_path
from agent.sensors.weblog_formats import compile_format
from agent.webconf import WebLog, WebRoot

ROOT = "/var/www/portal"


@pytest.mark.parametrize(("url", "expected"), [
    ("/uploads/x.php", "/uploads/x.php"),
    ("/a//b/./../uploads/x.php", "/a/uploads/x.php"),       # as nginx merges and resolves
    ("/uploads/%78.php", "/uploads/x.php"),                  # percent-decoded
    ("/a%2Fx.php", "/a/x.php"),                              # %2F is a slash once decoded
    ("/x.php/extra/path", "/x.php"),                         # PATH_INFO after the script
    ("/caf%C3%A9.php", "/café.php"),
    ("/", None), ("/uploads/", None), ("/uploads/.", None),  # directories: index unknown
    ("/../etc/passwd", None), ("/a/%2e%2e/%2e%2e/etc/passwd", None),  # above the root
    ("/x%00.php", None), ("x.php", None), ("", None),
])
def test_a_url_path_names_a_file_under_the_root(url: str, expected: str | None) -> None:
    assert served_path(ROOT, url) == (None if expected is None else ROOT + expected)
    assert served_path(ROOT + "/", url) == served_path(ROOT, url)


def test_the_same_file_has_the_same_path_on_both_sides() -> None:
    """FIM's file.path (os_text of the OS name) and the web side's, for a name with an
    invalid UTF-8 byte, a backslash and a non-ASCII letter."""
    name = b"/var/www/portal/up\\x41 \xff caf\xc3\xa9.php"
    fim = path_fields(os.fsdecode(name))["path"]
    web = served_path(ROOT, "/up%5Cx41%20%FF%20caf%C3%A9.php")
    assert web == fim


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/.%2eEfF0a\\x", max_size=40))
def test_never_outside_the_root(tail: str) -> None:
    served = served_path(ROOT, "/" + tail)
    if served is not None:
        assert served.startswith(ROOT + "/") and "/../" not in served + "/"


def test_the_root_of_a_log_is_its_vhosts_one_root() -> None:
    roots = [WebRoot("/srv/a", "nginx", "a.test", "root", "n.conf:3"),
             WebRoot("/srv/a/img", "nginx", "a.test", "alias", "n.conf:5"),
             WebRoot("/srv/b", "nginx", "b.test", "root", "n.conf:9"),
             WebRoot("/srv/c", "apache", "c.test", "DocumentRoot", "a.conf:2")]

    def log(vhost: str | None, server: str = "nginx") -> WebLog:
        return WebLog("/l.log", "access", "combined", server, vhost, "n.conf:1")

    assert root_of_log(log("a.test"), roots) == "/srv/a"      # an alias is no root
    assert root_of_log(log(None), roots) == ""                # two vhosts: which one?
    assert root_of_log(log(None, "apache"), roots) == "/srv/c"  # the server's only one
    assert root_of_log(log("z.test"), roots) == ""
    paths = {str(p.path): p for p in discovered_paths(
        [log("b.test"), WebLog("/e.log", "error", "nginx:error", "nginx", "b.test", "x")],
        roots)}
    assert paths["/l.log"].root == "/srv/b"
    assert paths["/e.log"].root == ""     # error logs name no file


def test_access_documents_carry_the_file_error_documents_do_not() -> None:
    line = ('203.0.113.9 - - [01/Dec/2026:10:00:00 +0000] "GET /uploads/x.php?cmd=id '
            'HTTP/1.1" 200 12 "-" "curl/8"')
    builder = DocumentBuilder(compile_format("combined"), path="/l", root=ROOT)
    doc = builder.document(line, builder.fmt.parse(line))
    assert doc["file"] == {"path": ROOT + "/uploads/x.php"}
    assert doc["sisguard"]["web"]["root"] == ROOT
    plain = DocumentBuilder(compile_format("combined"), path="/l")
    assert "file" not in plain.document(line, plain.fmt.parse(line))
    error = ('2026/12/01 10:00:00 [error] 7#7: *1 open() "/srv/x.php" failed (2: No such '
             'file or directory), client: 203.0.113.9, server: a, request: "GET /x.php '
             'HTTP/1.1", host: "a"')
    errors = DocumentBuilder(compile_format("nginx_error"), path="/e", root=ROOT)
    fields = errors.fmt.parse(error)
    assert fields is not None
    assert "file" not in errors.document(error, fields)


def test_a_configured_root_must_be_absolute() -> None:
    from pathlib import Path

    from agent.sensors.weblog import WebLogPath
    assert WebLogPath(Path("/l"), root="/srv/www").root == "/srv/www"
    with pytest.raises(TypeError, match="root 'srv/www' is not an absolute path"):
        WebLogPath(Path("/l"), root="srv/www")
