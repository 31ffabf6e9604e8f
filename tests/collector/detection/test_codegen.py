"""The generated matchers agree with the rules' closures, and their helpers with lookup()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.detection import DetectionEngine, load_rules
from collector.detection.alerts import json_copy
from collector.detection.codegen import closure_matcher, generate
from collector.detection.getters import field_getter
from collector.detection.logsources import event_kind, kind_key
from collector.detection.matcher import lookup, number_test, numbers_test
from tests.collector.detection.detection_helpers import engine_for, proc, rule

REPO = Path(__file__).resolve().parents[3]
SIGMA_LINUX = REPO.parent / "shared/data/sigma/linux"
RULES = load_rules([REPO / "rules", *([SIGMA_LINUX] if SIGMA_LINUX.is_dir() else [])])
ENGINE = DetectionEngine(RULES)

PIECES = ["/usr/bin/", "/tmp/", "/var/www/html/", "/etc/", "passwd", "shadow", "crontab", " -l",
          "base64 -d", "chmod +x ", "nc ", " -e ", "/dev/tcp/", "curl ", "wget ", "| sh", "bash",
          "python", "-c", "history -c", "useradd", "iptables", "xmrig", "stratum+tcp://",
          "sudoers", ".ssh/authorized_keys", ".php", ".bash_history", "systemd/system/",
          "Ü", "ß", "X", " ", "|", ";", "root", "www-data", "sshd", "failure", "success"]
_text = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)
_value = st.one_of(_text, st.integers(-5, 70000), st.none(), st.booleans(),
                   st.lists(_text, max_size=3))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    dataset, action, types = draw(st.sampled_from([
        ("sisguard.process", "exec", ["start"]),
        ("sisguard.fim", draw(st.sampled_from(["created", "updated", "deleted", "renamed",
                                               "attributes_modified"])), ["change"]),
        ("sisguard.network", draw(st.sampled_from(["outbound_connection", "listen_opened"])),
         ["connection", "start"]),
        ("sisguard.auth", draw(st.sampled_from(["ssh_login", "user_created", "sudo"])),
         ["start"]),
    ]))
    doc: dict[str, Any] = {
        "event": {"dataset": dataset, "action": action, "type": types,
                  "outcome": draw(st.sampled_from(["success", "failure"]))},
        "process": {"executable": "/usr/bin/" + draw(_text), "command_line": draw(_text),
                    "name": draw(st.sampled_from(["sshd", "sudo", "bash"])),
                    "parent": {"executable": draw(_text), "command_line": draw(_text)}},
        "file": {"path": draw(_text), "mode": draw(st.sampled_from(["0644", "4755", "2755"]))},
        "destination": {"ip": draw(st.sampled_from(["10.1.2.3", "203.0.113.9", "::1", "x"])),
                        "port": draw(st.sampled_from([443, 3333, "4444", 14444.0, True]))},
        "user": {"name": draw(_text)},
        "message": draw(_text),
    }
    for path in draw(st.lists(st.sampled_from(
            ["process.command_line", "file.path", "user.name", "process.executable",
             "sisguard.content.categories", "destination.port"]), max_size=3)):
        top, _, rest = path.partition(".")
        if draw(st.booleans()):  # the same field as a dotted key, or an odd value
            doc.pop(top, None)
            doc[path] = draw(_value)
        else:
            doc.setdefault(top, {})[rest] = draw(_value)
    return doc


_CLOSURES: dict[int, Any] = {}
_HITS: list[int] = []


@settings(max_examples=400, deadline=None)
@given(events())
def test_generated_code_matches_the_closures(event: dict[str, Any]) -> None:
    candidates = ENGINE._snapshot.rules_for(event_kind(event))
    rules = candidates.rules
    reference_matcher = _CLOSURES.get(id(candidates))
    if reference_matcher is None:
        reference_matcher = _CLOSURES[id(candidates)] = closure_matcher(rules)
    generated, failed = candidates.match(event)
    reference, ref_failed = reference_matcher(event)
    _HITS.append(len(reference))
    assert [r.meta.id for r in generated] == [r.meta.id for r in reference]
    assert failed == ref_failed == []
    chosen = {id(r) for r in generated}
    assert [r for r in rules if id(r) in chosen] == generated  # in the order of rules


def test_the_generated_events_do_match_rules() -> None:
    """The comparison above is worth something only if some events match some rules."""
    if _HITS:
        assert sum(1 for n in _HITS if n) > len(_HITS) / 20


_key = st.sampled_from(["a", "b", "a.b", "b.c", "a.b.c", "c"])
_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(_key, inner, max_size=4)),
                     max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_key, _json, max_size=5), st.sampled_from(["a", "a.b", "a.b.c", "c.a"]))
def test_field_getter_is_lookup(doc: dict[str, Any], path: str) -> None:
    assert field_getter(path)(doc) == lookup(doc, path)


@given(st.lists(st.integers(0, 70000) | st.floats(allow_nan=False), min_size=1, max_size=5),
       _json | st.floats())
def test_numbers_test_is_any_number_test(numbers: list[float], raw: Any) -> None:
    assert numbers_test(numbers)(raw) == any(number_test(n)(raw) for n in numbers)


@given(_json | st.dictionaries(st.integers(), st.text(max_size=2), max_size=2))
def test_json_copy_is_a_json_round_trip(value: Any) -> None:
    assert json_copy(value) == json.loads(json.dumps(value, default=str))


@given(events(), events())
def test_equal_kind_keys_mean_equal_kinds(first: dict[str, Any], second: dict[str, Any]) -> None:
    if kind_key(first) == kind_key(second):
        assert event_kind(first) == event_kind(second)


def test_rule_values_reach_the_source_only_as_literals(tmp_path: Path) -> None:
    nasty = "x'); import os; os.system('true'); ('"
    engine = engine_for(tmp_path, rule(f"""
        sel:
            CommandLine|contains: "{nasty}"
            Image|endswith: ["/a\\\\'b", '/c"d']
        condition: sel
        """))
    rules = engine._snapshot.result.detections
    source, _ = generate(rules)
    assert "import os" not in source.replace(repr(nasty.lower()), "")
    assert len(engine.process(proc(f"run {nasty}", "/bin/a\\'b"))) == 1
    assert engine.process(proc("run", "/bin/a\\'b")) == []


def test_generation_failure_falls_back_to_the_closures(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    from collector.detection import engine as engine_module

    def broken(rules: Any) -> Any:
        raise SyntaxError("generator bug")
    monkeypatch.setattr(engine_module, "build_matcher", broken)
    engine = engine_for(tmp_path, rule("sel: {CommandLine|contains: 'nc -e'}\ncondition: sel"))
    assert len(engine.process(proc("nc -e sh"))) == 1
    assert engine.process(proc("ls")) == []
