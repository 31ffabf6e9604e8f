"""The Apache config parser on a Debian-like tree written in tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.webconf_apache import arguments, parse_apache

APACHE2_CONF = """\
# This is the main Apache server configuration file.
DefaultRuntimeDir ${APACHE_RUN_DIR}
PidFile ${APACHE_PID_FILE}
Timeout 300
User ${APACHE_RUN_USER}
ErrorLog ${APACHE_LOG_DIR}/error.log
LogLevel warn
IncludeOptional mods-enabled/*.load
Include ports.conf
<Directory /var/www/>
\tOptions Indexes FollowSymLinks
\tAllowOverride None
</Directory>
LogFormat "%v:%p %h %l %u %t \\"%r\\" %>s %O \\"%{Referer}i\\" \\"%{User-Agent}i\\"" \\
          vhost_combined
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{Referer}i\\" \\"%{User-Agent}i\\"" combined
LogFormat "%h %l %u %t \\"%r\\" %>s %O" common
IncludeOptional conf-enabled/*.conf
IncludeOptional sites-enabled/*.conf
"""

ENVVARS = """\
# envvars - default environment variables for apache2ctl
unset HOME
if [ "${APACHE_CONFDIR##/etc/apache2-}" != "${APACHE_CONFDIR}" ] ; then
\tSUFFIX="-${APACHE_CONFDIR##/etc/apache2-}"
else
\tSUFFIX=
fi
export APACHE_RUN_USER=www-data
export APACHE_RUN_DIR=/var/run/apache2$SUFFIX
export APACHE_PID_FILE=/var/run/apache2$SUFFIX/apache2.pid
export APACHE_LOG_DIR=/var/log/apache2$SUFFIX
export EVIL=$(id)
"""

DEFAULT_SITE = """\
<VirtualHost *:80>
\tServerName sogd.example.gov.vn
\tServerAlias www.sogd.example.gov.vn
\tServerAdmin webmaster@localhost
\tDocumentRoot "/var/www/sogd"
\tAlias /tai-lieu "/srv/tai lieu"
\tScriptAlias /cgi-bin/ /usr/lib/cgi-bin/
\t# CustomLog ${APACHE_LOG_DIR}/commented.log combined
\tErrorLog ${APACHE_LOG_DIR}/sogd-error.log
\tCustomLog ${APACHE_LOG_DIR}/sogd-access.log combined
\tCustomLog "|/usr/bin/rotatelogs /var/log/x 86400" common
</VirtualHost>
<VirtualHost *:8080>
\tDocumentRoot /var/www/intranet
\tCustomLog /var/log/apache2/intranet.log "%h %t %r %>s"
</VirtualHost>
"""


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def debian_tree(root: Path) -> Path:
    write(root / "apache2.conf", APACHE2_CONF)
    write(root / "envvars", ENVVARS)
    write(root / "ports.conf", "Listen 80\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n")
    write(root / "mods-enabled" / "alias.load", "# LoadModule alias_module x.so\n")
    write(root / "conf-enabled" / "security.conf", "ServerTokens OS\n")
    write(root / "sites-available" / "000-default.conf", DEFAULT_SITE)
    (root / "sites-enabled").mkdir()
    os.symlink(root / "sites-available" / "000-default.conf",
               root / "sites-enabled" / "000-default.conf")
    return root / "apache2.conf"


def test_a_debian_tree_gives_every_root_and_log_with_its_vhost(tmp_path: Path) -> None:
    found = parse_apache(str(debian_tree(tmp_path / "apache2")))
    roots = {(r.path, r.vhost, r.directive) for r in found.roots}
    assert roots == {("/var/www/sogd", "sogd.example.gov.vn", "DocumentRoot"),
                     ("/srv/tai lieu", "sogd.example.gov.vn", "Alias"),
                     ("/usr/lib/cgi-bin", "sogd.example.gov.vn", "ScriptAlias"),
                     ("/var/www/intranet", None, "DocumentRoot")}
    logs = {(x.path, x.kind, x.format, x.vhost) for x in found.logs}
    assert logs == {
        ("/var/log/apache2/error.log", "error", "apache:error", None),
        ("/var/log/apache2/sogd-error.log", "error", "apache:error", "sogd.example.gov.vn"),
        ("/var/log/apache2/sogd-access.log", "access", "combined", "sogd.example.gov.vn"),
        ("/var/log/apache2/intranet.log", "access", "apache:custom", None)}
    combined = next(x for x in found.logs if x.format == "combined")
    assert combined.format_string == '%h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"'
    assert combined.source.endswith("sites-enabled/000-default.conf:10")
    assert found.errors == [], found.errors


def test_envvars_are_read_never_run(tmp_path: Path) -> None:
    conf = debian_tree(tmp_path / "apache2")
    write(conf, "ErrorLog ${EVIL}/x.log\nDocumentRoot /srv/${APACHE_RUN_USER}\n")
    found = parse_apache(str(conf))
    assert found.logs == [] and [r.path for r in found.roots] == ["/srv/www-data"]
    assert any("EVIL" in e and "not defined" in e for e in found.errors), found.errors


def test_server_root_define_and_relative_paths(tmp_path: Path) -> None:
    conf = write(tmp_path / "conf" / "httpd.conf",
                 f'ServerRoot "{tmp_path}"\nDefine SITE portal\nInclude conf.d/*.conf\n'
                 'ErrorLog logs/error_log\n')
    write(tmp_path / "conf.d" / "a.conf",
          "<VirtualHost *:80>\nServerName ${SITE}.example\nDocumentRoot /srv/${SITE}\n"
          "</VirtualHost>\n")
    found = parse_apache(str(conf))
    assert [(r.path, r.vhost) for r in found.roots] == [("/srv/portal", "portal.example")]
    assert [x.path for x in found.logs] == [str(tmp_path / "logs" / "error_log")]
    assert found.errors == []


def test_an_include_cycle_and_a_missing_include(tmp_path: Path) -> None:
    conf = write(tmp_path / "apache2.conf", "Include a.conf\nInclude missing.conf\n"
                 "IncludeOptional nothing/*.conf\nDocumentRoot /srv/www\n")
    write(tmp_path / "a.conf", "Include apache2.conf\n")
    found = parse_apache(str(conf))
    assert [r.path for r in found.roots] == ["/srv/www"]
    text = "\n".join(found.errors)
    assert "include cycle" in text and "missing.conf" in text and "nothing" not in text


def test_a_huge_file_and_an_endless_line(tmp_path: Path) -> None:
    conf = write(tmp_path / "apache2.conf", "Include huge.conf\nInclude long.conf\n"
                 "DocumentRoot /srv/ok\n")
    write(tmp_path / "huge.conf", "#\n" * 600_000)
    write(tmp_path / "long.conf", "DocumentRoot /srv/" + "a\\\n" * 20_000 + "\n"
          "DocumentRoot /srv/after\n")
    found = parse_apache(str(conf))
    assert [r.path for r in found.roots] == ["/srv/after", "/srv/ok"]
    assert len(found.errors) == 2, found.errors


def test_arguments_keep_quoted_spaces_and_escaped_quotes() -> None:
    assert arguments('"/srv/a b" c "d \\"e\\""') == ["/srv/a b", "c", 'd "e"']


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_as_a_config_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                           data: bytes) -> None:
    conf = tmp_path_factory.mktemp("fuzz") / "apache2.conf"
    conf.write_bytes(data)
    found = parse_apache(str(conf))
    assert all(r.path.startswith("/") for r in found.roots)
    assert len(found.errors) <= 100
