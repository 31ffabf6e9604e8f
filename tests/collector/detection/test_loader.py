"""Loading: every problem reported with file:line, unsupported constructs named."""

from __future__ import annotations

from pathlib import Path

from collector.detection import load_rules
from tests.collector.detection.detection_helpers import engine_for, load_text, proc, rule


def test_errors_name_file_line_and_every_problem(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "bad_modifier.yml").write_text(
        "title: t\nlogsource:\n  product: linux\n  category: process_creation\n"
        "detection:\n  sel:\n    Image: x\n    CommandLine|nosuch: y\n  condition: sel\n")
    (folder / "bad_level.yml").write_text(
        "title: t\nlevel: extreme\nlogsource:\n  product: linux\n"
        "  category: process_creation\ndetection:\n  sel:\n    Image: x\n  condition: sel\n")
    (folder / "bad_yaml.yml").write_text("title: [unclosed\n")
    (folder / "good.yml").write_text(rule("sel:\n    Image: x\ncondition: sel"))
    result = load_rules([folder])
    assert len(result.rules) == 1
    where = {Path(e.where.path).name: (e.where.line, e.message) for e in result.errors}
    assert where["bad_modifier.yml"][0] == 8
    assert "nosuch" in where["bad_modifier.yml"][1]
    assert where["bad_level.yml"][0] == 2
    assert where["bad_yaml.yml"][0] is not None
    assert str(result.errors[0]).startswith(str(folder))


def test_unknown_sigma_field_is_refused_at_its_line(tmp_path: Path) -> None:
    result = load_text(tmp_path, rule("sel:\n    Image: x\n    GrandParentImage: y\n"
                                      "condition: sel"))
    assert not result.rules
    (error,) = result.errors
    assert error.where.line == 10
    assert "GrandParentImage" in error.message


def test_unsupported_modifier_is_named(tmp_path: Path) -> None:
    result = load_text(tmp_path, rule("sel:\n    Image: x\n    process.start|hour: 3\n"
                                      "condition: sel"))
    (error,) = result.errors
    assert "|hour" in error.message and error.where.line == 10


def test_legacy_count_aggregation_refused_with_correlation_equivalent(tmp_path: Path) -> None:
    text = rule("sel:\n    Image: x\ntimeframe: 5m\ncondition: sel | count() by host.name > 5")
    result = load_text(tmp_path, text)
    (error,) = result.errors
    assert "count() by" in error.message
    assert "type: event_count" in error.message and "group-by: [host.name]" in error.message
    assert "timespan: 5m" in error.message and "condition: {gt: 5}" in error.message
    assert error.where.line == 11


def test_logsource_we_do_not_emit_is_refused(tmp_path: Path) -> None:
    result = load_text(tmp_path, rule("sel:\n    a: x\ncondition: sel",
                                      "product: windows\n    category: registry_set"))
    (error,) = result.errors
    assert "logsource" in error.message and error.where.line == 4


def test_ecs_field_names_work_directly(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, rule("sel:\n    process.name: nc\ncondition: sel"))
    assert engine.process(proc(process={"name": "nc"}))


FILTER = """
title: Site tuning
logsource:
    product: linux
    category: process_creation
filter:
    rules: {rules}
    selection:
        CommandLine|contains: 'backup.sh'
    condition: not selection
"""


def test_filter_tunes_out_false_positives_without_editing_rule(tmp_path: Path) -> None:
    text = rule("sel:\n    Image|endswith: '/tar'\ncondition: sel").replace(
        "title: Test rule", "title: Tar\nname: tar_use")
    for rules in ("any", "[tar_use]"):
        engine = engine_for(tmp_path, text, filters=FILTER.format(rules=rules))
        assert engine.process(proc("tar czf x", "/usr/bin/tar"))
        assert not engine.process(proc("tar czf x /opt/backup.sh", "/usr/bin/tar"))


def test_filter_naming_unknown_rule_is_reported(tmp_path: Path) -> None:
    result = load_text(tmp_path, rule("sel:\n    Image: x\ncondition: sel"),
                       filters=FILTER.format(rules="[no_such_rule]"))
    assert any("no_such_rule" in e.message for e in result.errors)
