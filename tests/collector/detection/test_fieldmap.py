"""Sigma taxonomy -> ECS per log source, and which events satisfy which log source."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.detection.logsources import event_kind, satisfied_keys
from tests.collector.detection.detection_helpers import (
    _event,
    engine_for,
    fim,
    net,
    proc,
    rule,
    ssh,
)


@pytest.mark.parametrize(("field", "value", "event"), [
    ("Image", "/usr/bin/nc", proc(executable="/usr/bin/nc")),
    ("CommandLine", "nc -l", proc("nc -l")),
    ("ParentImage", "/bin/sh", proc(process={"parent": {"executable": "/bin/sh"}})),
    ("ParentCommandLine", "sh -c x", proc(process={"parent": {"command_line": "sh -c x"}})),
    ("User", "www-data", proc(user={"name": "www-data"})),
    ("CurrentDirectory", "/tmp", proc(process={"working_directory": "/tmp"})),
    ("ProcessId", 4242, proc(process={"pid": 4242})),
    ("LogonId", 0, proc(user={"id": "0"})),
])
def test_process_creation_fields(tmp_path: Path, field: str, value: object,
                                 event: dict[str, object]) -> None:
    engine = engine_for(tmp_path, rule(f"sel:\n    {field}: {value!r}\ncondition: sel"))
    assert engine.process(event)


def test_file_and_network_fields(tmp_path: Path) -> None:
    files = engine_for(tmp_path, rule("sel:\n    TargetFilename|endswith: '.php'\ncondition: sel",
                                      "product: linux\n    category: file_event"))
    assert files.process(fim("created", "/var/www/x.php"))
    conn = engine_for(tmp_path, rule(
        "sel:\n    Initiated: 'true'\n    DestinationHostname|endswith: '.ngrok.io'\n"
        "    DestinationPort: 443\ncondition: sel",
        "product: linux\n    category: network_connection"))
    assert conn.process(net(domain="x.ngrok.io"))
    assert not conn.process(net(domain="x.example.org"))


def test_initiated_false_matches_accepted_connections(tmp_path: Path) -> None:
    accepted = _event("sisguard.network", "connection_accepted", ["connection", "start"],
                      source={"ip": "10.77.0.2", "port": 40000},
                      destination={"ip": "10.77.0.1", "port": 22},
                      network={"direction": "ingress", "transport": "tcp"},
                      process={"executable": "/usr/sbin/sshd"})
    inbound = engine_for(tmp_path, rule(
        "sel:\n    Initiated: 'false'\n    DestinationPort: 22\ncondition: sel",
        "product: linux\n    category: network_connection"))
    assert inbound.process(accepted)
    assert not inbound.process(net(port=22))    # an outbound one is Initiated: true
    outbound = engine_for(tmp_path, rule(
        "sel:\n    Initiated: 'true'\n    DestinationPort: 22\ncondition: sel",
        "product: linux\n    category: network_connection"))
    assert outbound.process(net(port=22)) and not outbound.process(accepted)


@pytest.mark.parametrize(("event", "category"), [
    (fim("updated", "/etc/passwd"), "file_change"),
    (fim("attributes_modified", "/etc/passwd"), "file_change"),
    (fim("deleted", "/etc/passwd"), "file_delete"),
    (fim("renamed", "/etc/passwd"), "file_rename"),
])
def test_file_categories(event: dict[str, object], category: str) -> None:
    keys = satisfied_keys(event_kind(event))
    assert ("linux", category, None) in keys
    assert ("linux", "file_event", None) in keys
    assert ("linux", "process_creation", None) not in keys


def test_auth_services_filter_by_program() -> None:
    sshd = satisfied_keys(event_kind(ssh("failure")))
    assert ("linux", None, "sshd") in sshd and ("linux", None, "auth") in sshd
    assert ("linux", None, "sudo") not in sshd
    exit_event = proc()
    exit_event["event"]["type"] = ["end"]
    assert ("linux", "process_creation", None) not in satisfied_keys(event_kind(exit_event))


def test_rule_is_only_tried_on_events_of_its_logsource(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, rule("sel:\n    user.name: root\ncondition: sel",
                                       "product: linux\n    service: sshd"))
    assert engine.process(ssh("failure"))
    assert not engine.process(proc(user={"name": "root"}))
