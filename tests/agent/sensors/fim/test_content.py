"""Content signatures (web shells, injected spam) and diffs of changed text files."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest

from agent.sensors.fim.config import NODIFF_DEFAULT
from agent.sensors.fim.content import ContentChecker, load_signatures, parse_signatures
from agent.sensors.fim.diff import is_nodiff, is_text, unified
from common.yamlconf import parse_yaml
from tests.agent.sensors.fim.test_sensor import SensorFactory, make_sensor  # noqa: F401


@pytest.fixture(scope="module")
def checker() -> ContentChecker:
    signatures, errors = load_signatures()
    assert errors == []
    return ContentChecker(signatures)


@pytest.mark.parametrize(("text", "name"), [
    ("<?php @eval($_POST['x']);?>", "webshell.eval_request"),
    ("<?php eval(base64_decode('ZWNobyAxOw=='));", "webshell.eval_base64"),
    ("<?php assert ( $_REQUEST['c'] );", "webshell.eval_request"),
    ('<?php system($_GET["cmd"]); ?>', "webshell.exec_request"),
    ("<% Runtime.getRuntime().exec(request.getParameter(\"c\")); %>", "webshell.jsp_exec"),
    ("var psi = new ProcessStartInfo(\"cmd.exe\");", "webshell.aspx_process"),
    ('<%@ Page Language="Jscript"%><%eval(Request.Item["z"],"unsafe");%>',
     "webshell.asp_eval_request"),
])
def test_web_shells(checker: ContentChecker, text: str, name: str) -> None:
    match = checker.check(text.encode(), "php")
    assert match is not None and name in match.signatures
    assert match.categories == ["webshell"]


def test_vietnamese_gambling_link_any_case_and_unicode_form(checker: ContentChecker) -> None:
    page = ('<div style="display: none"><a href="https://x.example/">'
            'NHÀ CÁI uy tín - Nổ Hũ đổi thưởng</a></div>')
    for form in ("NFC", "NFD"):
        match = checker.check(unicodedata.normalize(form, page).encode(), "html")
        assert match is not None, form
        assert {"spam.gambling", "spam.hidden_link"} <= set(match.signatures)
        assert match.categories == ["spam"]
        assert "nhà cái" in match.excerpt and len(match.excerpt) <= 200


def test_html_entities_do_not_hide_terms(checker: ContentChecker) -> None:
    match = checker.check(b"<p>c&#225; c&#432;&#7907;c b&#243;ng &#273;&#225;</p>", "html")
    assert match is not None and match.signatures == ["spam.gambling"]


def test_diacritics_matter_and_ordinary_pages_are_clean(checker: ContentChecker) -> None:
    ordinary = ("<p>Cổng thông tin điện tử tỉnh: thủ tục hành chính, cá nhân và tổ chức, "
                "nhà ở xã hội, cái cày, tài liệu, xử lý hồ sơ; time slot for meetings</p>")
    assert checker.check(ordinary.encode(), "html") is None
    # "cá cược" (betting) is spam; "các cuộc" (the meetings) is not
    assert checker.check("các cuộc họp".encode(), "html") is None


@pytest.mark.parametrize("page", [
    "<html><body><h1>Hacked by xXx Team</h1></body></html>",
    "<center>H4CK3D  BY  Ghost</center>",
    "<p>0wn3d by n00b - greetz to all</p>",
    "<h2>Trang web đã bị hack bởi nhóm X</h2>",
    "<marquee>DEFACED!!!</marquee>",
    "<title>Hacked-By Anonymous</title>", "<h1>HackedBy_Team</h1>",
    "<b>h4x0r3d by z</b>", "<b>Hax0red By z</b>", "<i>h@cked by z</i>",
    "<h1>Website bi hack boi nhom X</h1>",
])
def test_defacement_banners(checker: ContentChecker, page: str) -> None:
    for form in ("NFC", "NFD"):
        match = checker.check(unicodedata.normalize(form, page).encode(), "html")
        assert match is not None and "defacement" in match.categories, (form, page)


def test_ordinary_ownership_lines_are_no_defacement(checker: ContentChecker) -> None:
    page = ("<footer>This portal is owned by the Department of Information and "
            "Communications. Cổng thông tin thuộc sở hữu của Sở TT&TT.</footer>")
    assert checker.check(page.encode(), "html") is None


def test_signature_file_errors_name_the_place() -> None:
    text = "signatures:\n  - name: ok.one\n    category: spam\n    terms: [x]\n" \
           "  - name: bad.regex\n    category: spam\n    regex: ['(']\n"
    loaded, errors = parse_signatures(parse_yaml(text, "site.yml"), "site.yml")
    assert [s.name for s in loaded] == ["ok.one"]
    assert len(errors) == 1 and "site.yml:5" in str(errors[0])


def test_site_file_adds_and_overrides(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    site.write_text("signatures:\n  - name: spam.local_brand\n    category: spam\n"
                    "    terms: [siêu khuyến mãi]\n")
    signatures, errors = load_signatures(site)
    assert errors == []
    match = ContentChecker(signatures).check("SIÊU KHUYẾN MÃI".encode(), "html")
    assert match is not None and match.signatures == ["spam.local_brand"]


def test_unified_diff_and_nodiff_patterns() -> None:
    diff = unified("/var/www/a.html", b"one\ntwo\n", b"one\nthree\n", max_bytes=1000)
    assert diff.splitlines() == ["--- a/var/www/a.html", "+++ b/var/www/a.html",
                                 "@@ -1,2 +1,2 @@", " one", "-two", "+three"]
    cut = unified("/x", b"", b"".join(b"%d\n" % i for i in range(1000)), max_bytes=100)
    assert cut.endswith("... diff cut at 100 bytes\n") and len(cut) < 200
    patterns = ("/etc/shadow", "*.key", "id_rsa*")
    assert is_nodiff("/etc/shadow", patterns) and is_nodiff("/srv/tls/site.key", patterns)
    assert is_nodiff("/root/.ssh/id_rsa.pub", patterns)
    assert not is_nodiff("/etc/shadow.d/x", patterns) and not is_nodiff("/a/b.html", patterns)
    assert is_text("tiếng Việt".encode()) and not is_text(b"\x7fELF\0\0")


@pytest.mark.parametrize("path", [
    "/var/www/portal/.env", "/var/www/portal/.env.production", "/srv/wp/wp-config.php",
    "/usr/share/phpmyadmin/config.inc.php", "/var/www/joomla/configuration.php",
    "/var/www/drupal/sites/default/settings.php", "/var/www/admin/.htpasswd",
    "/etc/ssl/private/site.key", "/etc/ssl/site.pem", "/root/.ssh/id_ed25519",
    "/home/a/.ssh/id_rsa.pub", "/etc/shadow", "/etc/gshadow", "/etc/shadow-",
    "/var/backups/shadow"])
def test_secret_files_are_nodiff_by_default(path: str) -> None:
    assert is_nodiff(path, NODIFF_DEFAULT)


def test_ordinary_web_files_are_diffed_by_default() -> None:
    for path in ("/var/www/index.php", "/var/www/environment.php", "/var/www/.envrc.txt",
                 "/var/www/settings.html", "/etc/passwd", "/var/www/keys.php"):
        assert not is_nodiff(path, NODIFF_DEFAULT), path


def test_sensor_reports_diffs_content_and_never_diffs_secrets(
        make_sensor: SensorFactory, tmp_path: Path) -> None:  # noqa: F811
    www = tmp_path / "www"
    www.mkdir()
    page, key = www / "index.html", www / "server.key"
    page.write_text("<h1>Xin chào</h1>\n<p>Tin tức</p>\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    _, stub = make_sensor({"paths": [{"path": str(www), "report_changes": True,
                                      "content_checks": True}]})
    page.write_text("<h1>Xin chào</h1>\n<a href='//x'>tài xỉu online</a>\n")
    doc = stub.wait("updated", page)
    assert doc["sisguard"]["fim"]["diff"].splitlines()[2:] == [
        "@@ -1,2 +1,2 @@", " <h1>Xin chào</h1>", "-<p>Tin tức</p>",
        "+<a href='//x'>tài xỉu online</a>"]
    assert doc["sisguard"]["content"]["signatures"] == ["spam.gambling"]

    key.write_text("-----BEGIN PRIVATE KEY-----\nBBBB\n")
    doc = stub.wait("updated", key)
    assert "diff" not in doc["sisguard"]["fim"]
    assert "BBBB" not in str(doc) and "AAAA" not in str(doc)

    shell = www / "up.php"
    shell.write_text("<?php echo 1; eval(gzinflate(base64_decode('x'))); ?>")
    doc = stub.wait("created", shell)
    assert doc["sisguard"]["content"]["categories"] == ["webshell"]


def test_a_file_written_while_it_is_copied_still_gets_its_next_diff(tmp_path: Path) -> None:
    """The copy for diffs is read after the hash; a write in between must not make the
    next change diff against bytes the copy already holds (an empty diff, once seen in CI).
    """
    from agent.sensors.base import SensorContext, SensorHealth
    from agent.sensors.fim.config import FimConfig
    from agent.sensors.fim.sensor import open_reconciler
    from common.yamlconf import from_dict

    www = tmp_path / "www"
    www.mkdir()
    page = www / "index.html"
    page.write_text("<h1>a</h1>\n")
    events: list[dict[str, Any]] = []
    config = from_dict(FimConfig, {"paths": [{"path": str(www), "report_changes": True}]},
                       source="<test>", path="sensor.fim")
    r = open_reconciler(config, SensorContext(
        emit=events.append, health=SensorHealth("fim"), state_dir=tmp_path / "state",
        report_error=lambda message, fields: None))
    wp = config.watch_paths[0]

    hashed = r.reader.read(str(page))           # the scan hashes "<h1>a</h1>"...
    assert hashed is not None
    page.write_text("<h1>a</h1>\n<p>b</p>\n")    # ...the page grows...
    recorded = r.keep_copy(wp, hashed)          # ...and then the copy is read
    r.baseline.put(recorded)
    page.write_text("<h1>a</h1>\n<p>b</p>\n<p>c</p>\n")
    r.check(str(page))
    [doc] = events
    assert doc["event"]["action"] == "updated"
    assert doc["sisguard"]["fim"]["diff"].splitlines()[3:] == [
        " <h1>a</h1>", " <p>b</p>", "+<p>c</p>"]

    # the live path: written again between the event's hash and its copy
    page.write_text("<h1>a</h1>\n<p>b</p>\n<p>c</p>\n<p>d</p>\n")
    current = r.reader.read(str(page))
    assert current is not None
    page.write_text("<h1>a</h1>\n<p>b</p>\n<p>c</p>\n<p>d</p>\n<p>e</p>\n")
    r.record(str(page), current, detected_by="realtime")
    assert events[-1]["sisguard"]["fim"]["diff"].splitlines()[-2:] == ["+<p>d</p>", "+<p>e</p>"]
    assert events[-1]["file"]["size"] == page.stat().st_size   # the bytes it diffed
    r.check(str(page))     # the inotify event for the second write: already reported
    assert len(events) == 2
    r.baseline.close()
