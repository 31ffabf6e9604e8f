"""A SigmaHQ rule, unmodified, fires on a real process event from a real agent."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import SHARED, Agent, Collector, in_ci, wait_for

RULE = SHARED / "data" / "sigma" / "linux" / "process_creation" / \
    "proc_creation_lnx_base64_decode.yml"

pytestmark = pytest.mark.service


def test_sigmahq_base64_decode_rule_fires_end_to_end(
        collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    if not RULE.exists():
        if in_ci():
            pytest.fail(f"{RULE} is missing: CI must have ../shared")
        pytest.skip(f"{RULE} is missing (../shared not beside the repo)")
    collector = collector_factory("--rules", str(RULE))
    agent = agent_factory(collector, "--sensors", "process")
    # base64 waits on its input for 0.3 s: long enough for /proc to be read under load
    subprocess.run(["/bin/sh", "-c", "(sleep 0.3; echo c2lzZ3VhcmQ=) | base64 -d >/dev/null"],
                   check=True)

    def fired() -> list[dict[str, Any]]:
        return [a for a in collector.alerts() if a["rule"]["name"] == "Decode Base64 Encoded Text"]

    alerts = wait_for(fired, timeout=15, message="the SigmaHQ alert")
    alert = alerts[0]
    assert alert["agent"]["id"] == agent.agent_id
    assert alert["sisguard"]["alert"]["level"] == "low"
    by_id = {e["event"]["id"]: e for e in collector.events()}
    (trigger,) = [by_id[i] for i in alert["sisguard"]["alert"]["event_ids"]]
    assert trigger["event"]["action"] == "exec"
    assert trigger["process"]["executable"].endswith("/base64")
    assert trigger["process"]["command_line"] == "base64 -d"
    assert trigger["process"]["parent"]["executable"] in ("/usr/bin/dash", "/bin/dash")
