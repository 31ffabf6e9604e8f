"""The nginx config parser on a Debian-like tree written in tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.webconf import Limits
from agent.webconf_nginx import TokenError, parse_nginx, tokens

NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
include /etc/nginx/modules-enabled/*.conf;   # absent here: nothing matches

events { worker_connections 768; }

http {
    include mime.types;
    log_format json_log escape=json '{"t":"$time_iso8601","uri":"$request_uri",'
                                    '"st":$status}';
    access_log /var/log/nginx/access.log;
    error_log /var/log/nginx/error.log;
    include conf.d/*.conf;
    include sites-enabled/*;
}
"""

PORTAL = """\
# the provincial portal
server {
    listen 80 default_server;
    server_name portal.example.gov.vn www.portal.example.gov.vn;
    root "/srv/portal/public";          # quoted
    index index.php index.html;
    access_log /var/log/nginx/portal.access.log json_log;
    error_log  /var/log/nginx/portal.error.log warn;
    location /static/ { alias /srv/portal/static/; }
    location ~ \\.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
    }
    location /files { root /data/files/$host; }   # a variable: cut before it
    location = /x { return 200 'a } { ; # not syntax'; }
}
"""


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    etc = tmp_path / "nginx"
    write(etc / "nginx.conf", NGINX_CONF)
    write(etc / "mime.types", "types { text/html html; }\n")
    write(etc / "conf.d" / "status.conf",
          "server { listen 8080; server_name _; root /var/www/status; }\n")
    write(etc / "sites-available" / "portal", PORTAL)
    write(etc / "snippets" / "fastcgi-php.conf", "fastcgi_index index.php;\n")
    (etc / "sites-enabled").mkdir()
    os.symlink(etc / "sites-available" / "portal", etc / "sites-enabled" / "portal")
    return etc


def test_a_debian_tree_gives_every_root_and_log_with_its_vhost(etc: Path) -> None:
    found = parse_nginx(str(etc / "nginx.conf"))
    roots = {(r.path, r.vhost, r.directive) for r in found.roots}
    assert roots == {("/var/www/status", None, "root"),
                     ("/srv/portal/public", "portal.example.gov.vn", "root"),
                     ("/srv/portal/static", "portal.example.gov.vn", "alias"),
                     ("/data/files", "portal.example.gov.vn", "root")}
    logs = {(x.path, x.kind, x.format, x.vhost) for x in found.logs}
    assert logs == {
        ("/var/log/nginx/access.log", "access", "combined", None),
        ("/var/log/nginx/error.log", "error", "nginx:error", None),
        ("/var/log/nginx/portal.access.log", "access", "nginx:json", "portal.example.gov.vn"),
        ("/var/log/nginx/portal.error.log", "error", "nginx:error", "portal.example.gov.vn")}
    portal = next(x for x in found.logs if x.format == "nginx:json")
    assert portal.format_string == '{"t":"$time_iso8601","uri":"$request_uri","st":$status}'
    assert portal.source.endswith("sites-enabled/portal:7")
    assert str(etc / "sites-enabled" / "portal") in found.files
    assert found.errors == [], found.errors


def test_relative_paths_are_below_the_prefix(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf",
                 "http { server { root html; access_log logs/a.log; } }\n")
    found = parse_nginx(str(conf), prefix="/usr/share/nginx")
    assert [r.path for r in found.roots] == ["/usr/share/nginx/html"]
    assert [x.path for x in found.logs] == ["/usr/share/nginx/logs/a.log"]


def test_off_syslog_and_system_trees_are_not_taken(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf", "http { access_log off; error_log stderr;\n"
                 "access_log syslog:server=10.0.0.1; server { root /; }\n"
                 "server { root /etc/; } server { alias /proc; } }\n")
    found = parse_nginx(str(conf))
    assert found.roots == [] and found.logs == []
    assert len(found.errors) == 3 and all("not usable" in e for e in found.errors)


def test_an_include_cycle_is_an_error_not_a_hang(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf", "include a.conf;\nhttp { server { root /srv/a; } }\n")
    write(tmp_path / "a.conf", "include b.conf;\n")
    write(tmp_path / "b.conf", "include nginx.conf;\n")
    found = parse_nginx(str(conf))
    assert [r.path for r in found.roots] == ["/srv/a"]
    assert any("include cycle" in e and "b.conf:1" in e for e in found.errors), found.errors


def test_a_huge_file_is_not_read_and_costs_only_itself(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf",
                 "http { include huge.conf; server { root /srv/ok; } }\n")
    write(tmp_path / "huge.conf", "# x\n" * 400_000)   # 1.6 MB
    found = parse_nginx(str(conf))
    assert [r.path for r in found.roots] == ["/srv/ok"]
    assert any("huge.conf" in e and "cap" in e for e in found.errors), found.errors


def test_limits_on_files_glob_matches_and_depth(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf", "include d/*.conf;\ninclude deep0.conf;\n")
    for i in range(20):
        write(tmp_path / "d" / f"{i:02}.conf", f"server {{ root /srv/s{i}; }}\n")
    for i in range(12):
        write(tmp_path / f"deep{i}.conf", f"include deep{i + 1}.conf;\n")
    found = parse_nginx(str(conf), limits=Limits(max_glob_matches=5, max_depth=4))
    assert [r.path for r in found.roots] == [f"/srv/s{i}" for i in range(5)]
    assert any("over 5 files" in e for e in found.errors)
    assert any("nested deeper than 4" in e for e in found.errors)


def test_only_root_owned_regular_files_are_read(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf", "include evil.conf;\ninclude fifo.conf;\n"
                 "include writable.conf;\n")
    evil = write(tmp_path / "evil.conf", "server { root /srv/evil; }\n")
    os.chown(evil, 65534, 65534)
    os.mkfifo(tmp_path / "fifo.conf")   # would block a plain open: opened O_NONBLOCK
    writable = write(tmp_path / "writable.conf", "server { root /srv/w; }\n")
    os.chmod(writable, 0o666)
    found = parse_nginx(str(conf))
    assert found.roots == []
    text = "\n".join(found.errors)
    assert "owned by uid 65534" in text and "not a regular file" in text
    assert "writable by group or others" in text


def test_tokenizer_quotes_escapes_comments() -> None:
    got = [t.value for t in tokens('a "b c\\" d" \'e;f\' # g ;\nh;', 100)]
    assert got == ["a", 'b c" d', "e;f", "h", ";"]
    with pytest.raises(TokenError, match="unterminated"):
        list(tokens('root "/srv', 100))
    with pytest.raises(TokenError, match="over 10 bytes"):
        list(tokens("x" * 50, 10))


def test_deep_braces_and_bad_syntax_cost_only_their_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "nginx.conf", "include bad.conf;\ninclude deep.conf;\n"
                 "http { server { root /srv/ok; } }\n")
    write(tmp_path / "bad.conf", 'server { root "/srv/bad; }\n')
    write(tmp_path / "deep.conf", "a {" * 10_000)
    found = parse_nginx(str(conf))
    assert [r.path for r in found.roots] == ["/srv/ok"]
    assert len(found.errors) == 2, found.errors


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab /;{}#"\'\\\n$*\t')), max_size=200))
def test_any_text_tokenizes_or_fails_with_the_line(source: str) -> None:
    try:
        toks = list(tokens(source, 50))
    except TokenError as e:
        assert str(e).startswith("line ") or "over" in str(e)
        return
    assert all(len(t.value) <= 51 for t in toks)
    assert all(1 <= t.line <= source.count("\n") + 1 for t in toks)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_as_a_config_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                           data: bytes) -> None:
    conf = tmp_path_factory.mktemp("fuzz") / "nginx.conf"
    conf.write_bytes(data)
    found = parse_nginx(str(conf))
    assert len(found.roots) <= found.limits.max_found
    assert all(r.path.startswith("/") for r in found.roots)
