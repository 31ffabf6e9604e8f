"""YARA rules in content checks: compiled once with errors that say where, matched on the
bytes the content check read, a slow rule costing only its timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sensors.fim import yara_rules as fim_yara
from agent.sensors.fim.content import ContentChecker, load_signatures
from agent.sensors.fim.yara_rules import YaraScanner, compile_rules
from tests.agent.sensors.fim.test_sensor import SensorFactory, make_sensor  # noqa: F401

# two web-shell rules of the usual kind, written for these tests
PHP_SHELLS = r"""
rule php_exec_request : webshell php
{
    meta:
        description = "PHP passing a request parameter to a command"
    strings:
        $php = "<?php" nocase
        $exec = /(system|passthru|shell_exec|exec|popen)\s*\(\s*\$_(GET|POST|REQUEST)\s*\[/ nocase
    condition:
        $php and $exec
}

rule tiny_eval_shell
{
    meta:
        category = "webshell"
    strings:
        $a = "eval($_POST" nocase
    condition:
        filesize < 200 and $a
}

rule gambling_page
{
    meta:
        category = "spam"
    strings:
        $a = "casino888" nocase
    condition:
        $a
}
"""
SHELL = b"<?php\n// upload helper\nsystem($_GET['cmd']);\n?>\n"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "shells.yar"
    path.write_text(PHP_SHELLS)
    return path


@pytest.fixture
def scanner(rules_file: Path) -> Iterator[YaraScanner]:
    compiled, errors = compile_rules([rules_file])
    assert errors == [] and compiled is not None
    scanner = YaraScanner(compiled, timeout=2)
    yield scanner
    scanner.close()


def test_matches_name_rule_namespace_tags_and_category(scanner: YaraScanner) -> None:
    found, error = scanner.scan(SHELL)
    assert error == ""
    assert [(m.rule, m.namespace, m.tags, m.category) for m in found] == [
        ("php_exec_request", "shells", ("webshell", "php"), "webshell")]
    assert scanner.scan(b"<?php echo 'xin chao'; ?>") == ([], "")


def test_the_checker_reports_yara_beside_the_signatures(scanner: YaraScanner) -> None:
    signatures, _ = load_signatures()
    checker = ContentChecker(signatures, yara=scanner)
    match = checker.check(b"<p>Bonus CASINO888 moi ngay</p>", "html")
    assert match is not None
    assert match.signatures == ["yara:shells.gambling_page"] and match.categories == ["spam"]
    assert match.fields()["yara"] == [
        {"rule": "gambling_page", "namespace": "shells", "tags": []}]
    assert "casino888" in match.excerpt.lower()
    both = checker.check(b"<?php eval($_POST['z']); ?>", "php")
    assert both is not None
    assert both.signatures[0] == "yara:shells.tiny_eval_shell"
    assert "webshell.eval_request" in both.signatures and both.categories == ["webshell"]
    assert checker.check(b"<p>Tin tuc</p>", "html") is None


def test_a_broken_file_is_named_with_its_line_and_the_others_load(
        tmp_path: Path, rules_file: Path) -> None:
    broken = tmp_path / "broken.yara"
    broken.write_text('rule fine { condition: true }\n\nrule bad {\n  strings: $a = "x"\n'
                      '  condition: $b\n}\n')
    missing = tmp_path / "missing.yar"
    compiled, errors = compile_rules([broken, rules_file, missing])
    assert compiled is not None
    # YARA names the line where it found the rule wrong: its closing brace
    assert [(e.location.path, e.location.line) for e in errors if e.location] == [
        (str(broken), 6), (str(missing), None)]
    assert 'undefined string "$b"' in str(errors[0])
    scanner = YaraScanner(compiled, timeout=2)
    try:
        assert [m.rule for m in scanner.scan(SHELL)[0]] == ["php_exec_request"]
    finally:
        scanner.close()
    assert compile_rules([broken])[0] is None


def test_a_slow_rule_costs_its_timeout_then_scanning_goes_on(
        tmp_path: Path, rules_file: Path) -> None:
    """/a+/ over 2 MiB of 'a' ran 50 s past YARA's own 2 s timeout, unbounded: the helper
    now ends it (killed at timeout + grace, or out of its memory), and the next file gets
    a new helper."""
    slow = tmp_path / "slow.yar"
    slow.write_text("rule slow { strings: $a = /a+/ condition: $a }\n")
    compiled, errors = compile_rules([slow, rules_file])
    assert errors == [] and compiled is not None
    scanner = YaraScanner(compiled, timeout=1)
    try:
        found, error = scanner.scan(b"a" * (2 << 20))
        # which limit ends it first depends on the machine: timeout, kill or memory
        assert found == [] and error.startswith(("yara scan stopped", "yara scan timed",
                                                 "yara scan failed")), error
        assert [m.rule for m in scanner.scan(SHELL)[0]] == ["slow", "php_exec_request"]
    finally:
        scanner.close()


def test_a_helper_that_does_not_answer_is_killed_at_timeout_plus_grace(
        monkeypatch: pytest.MonkeyPatch, scanner: YaraScanner) -> None:
    """YARA stuck past its own timeout, as a helper that reads and never answers."""
    real = fim_yara.BOOTSTRAP
    monkeypatch.setattr(fim_yara, "BOOTSTRAP", "import sys, time; time.sleep(60)")
    found, error = scanner.scan(SHELL)
    assert (found, error, scanner.timeouts) == ([], "yara scan stopped after 3 s", 1)
    monkeypatch.setattr(fim_yara, "BOOTSTRAP", real)
    assert [m.rule for m in scanner.scan(SHELL)[0]] == ["php_exec_request"]


def test_repeated_timeouts_rest_yara_and_fim_goes_on(
        monkeypatch: pytest.MonkeyPatch, scanner: YaraScanner) -> None:
    for _ in range(fim_yara.BREAKER_TIMEOUTS):
        scanner._timed_out()
    found, error = scanner.scan(SHELL)
    assert found == [] and "resting" in error and scanner.skipped == 1
    monkeypatch.setattr(scanner, "_rest_until", 0.0)
    assert [m.rule for m in scanner.scan(SHELL)[0]] == ["php_exec_request"]


def test_the_sensor_flags_a_shell_by_yara_and_reports_a_broken_rule_file(
        make_sensor: SensorFactory, tmp_path: Path, rules_file: Path) -> None:  # noqa: F811
    www = tmp_path / "www"
    www.mkdir()
    broken = tmp_path / "broken.yar"
    broken.write_text("rule {\n")
    _, stub = make_sensor({"paths": [{"path": str(www), "content_checks": True}],
                           "yara_rules": [str(broken), str(rules_file)],
                           "yara_timeout": "2s"})
    assert any(str(broken) in m and ":1" in m for m, _ in stub.errors), stub.errors
    shell = www / "x.php"
    shell.write_bytes(SHELL)
    doc = stub.wait("created", shell)
    content = doc["sisguard"]["content"]
    assert content["categories"] == ["webshell"]
    assert content["yara"] == [{"rule": "php_exec_request", "namespace": "shells",
                                "tags": ["webshell", "php"]}]
    assert "yara:shells.php_exec_request" in content["signatures"]
    assert "system($_get['cmd'])" in content["excerpt"]   # the signatures' normalized text


def test_a_rule_matching_every_byte_fails_alone_within_the_helpers_memory(
        tmp_path: Path, rules_file: Path) -> None:
    """Unbounded, YARA keeps 10^6 matches per string here (360 MB); the helper's address
    space is capped, so this one scan fails and the next one works."""
    greedy = tmp_path / "greedy.yar"
    greedy.write_text('rule greedy { strings: $a = "a" $b = "aa" $c = "aaa" '
                      'condition: any of them }\n')
    compiled, errors = compile_rules([greedy, rules_file])
    assert errors == [] and compiled is not None
    scanner = YaraScanner(compiled, timeout=2)
    try:
        found, error = scanner.scan(b"a" * (2 << 20))
        assert found == [] and error.startswith("yara scan "), error
        assert "greedy" in [m.rule for m in scanner.scan(SHELL)[0]]
    finally:
        scanner.close()


def test_yara_reads_no_link_only_the_bytes_saferead_gives(
        make_sensor: SensorFactory, tmp_path: Path, rules_file: Path) -> None:  # noqa: F811
    """A link in the web root to a shell outside it: YARA never sees the target."""
    www, outside = tmp_path / "www", tmp_path / "outside.php"
    www.mkdir()
    outside.write_bytes(SHELL)
    _, stub = make_sensor({"paths": [{"path": str(www), "content_checks": True}],
                           "yara_rules": [str(rules_file)]})
    link = www / "l.php"
    link.symlink_to(outside)
    doc = stub.wait("created", link)
    assert "content" not in doc["sisguard"]
