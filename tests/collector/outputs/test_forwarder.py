"""What every export shares: publish returns once queued, drops when full are counted,
alerted (rate-limited, through the publisher) and never counted as stored."""

from __future__ import annotations

import threading
from pathlib import Path

from collector.outputs.diskqueue import Item
from collector.outputs.forwarder import (
    DROP_RULE_ID,
    Delivery,
    DeliveryFailed,
    FilterConfig,
    QueueConfig,
    QueuedOutput,
)
from collector.outputs.registry import OutputContext
from collector.records import Kind, Outcome, Record
from common.yamlconf import Duration, Size
from tests.harness import wait_for


class Blocked(QueuedOutput):
    """A destination that is down until ``up`` is set, then takes everything."""

    def __init__(self, tmp_path: Path, emitted: list[Record], **queue: object) -> None:
        self.up = threading.Event()
        self.attempts = 0
        self.got: list[str] = []

        def emit(records: list[Record]) -> None:   # what the publisher does: every output
            emitted.extend(records)
            self.publish(records)

        super().__init__("soc", queue=QueueConfig(**queue),  # type: ignore[arg-type]
                         filter=FilterConfig(), context=OutputContext(tmp_path, emit))

    def type_name(self) -> str:
        return "test"

    def deliver(self, items: list[Item]) -> Delivery:
        self.attempts += 1
        if not self.up.is_set():
            raise DeliveryFailed("down")
        self.got.extend(i.id for i in items)
        return Delivery(taken=items)


def alerts(n: int, start: int = 0) -> list[Record]:
    return [Record(Kind.ALERT, f"alert-{i}", {"event": {"id": f"alert-{i}"},
                                              "pad": "x" * 900})
            for i in range(start, start + n)]


def test_full_queue_drops_newest_alerts_once_and_delivers_the_rest(tmp_path: Path) -> None:
    emitted: list[Record] = []
    out = Blocked(tmp_path, emitted, max_bytes=Size(10_000), backoff_initial=Duration(0.02),
                  backoff_max=Duration(0.05), drop_alert_every=Duration(3600.0))
    out.connect()
    try:
        first = out.publish(alerts(8))
        second = out.publish(alerts(8, start=8))
        assert first.outcomes == [Outcome.STORED] * 8
        assert second.count(Outcome.STORED) == 2 and second.count(Outcome.DEAD_LETTERED) == 6
        assert "queue full" in second.reasons[2]
        wait_for(lambda: emitted, message="the queue-full alert")
        out.publish(alerts(3, start=16))        # more drops: no second alert this hour
        alert = emitted[0]
        assert len(emitted) == 1 and alert.document["rule"]["id"] == DROP_RULE_ID
        assert alert.document["sisguard"]["export"] == {
            "output": "soc", "dropped": 6, "dropped_total": 6, "max_bytes": 10_000}
        assert out.health()["dropped"] == 9
        assert out.attempts >= 2 and out.health()["outage_since"] is not None
        out.up.set()
        wait_for(lambda: out.health()["queue_depth"] == 0, message="drained")
        # the oldest ten, then the alert (it had the queue's reserve), in order
        assert out.got == [f"alert-{i}" for i in range(10)] + [alert.doc_id]
    finally:
        out.close()


def test_a_record_over_max_record_bytes_is_dead_lettered_not_queued(tmp_path: Path) -> None:
    out = Blocked(tmp_path, [], max_record_bytes=Size(500))
    out.connect()
    try:
        result = out.publish(alerts(1))
        assert result.outcomes == [Outcome.DEAD_LETTERED]
        assert "max_record_bytes" in result.reasons[0]
        assert out.health()["queue_depth"] == 0 and out.health()["too_large"] == 1
    finally:
        out.close()


def test_queue_survives_a_restart_of_the_output(tmp_path: Path) -> None:
    out = Blocked(tmp_path, [])
    out.connect()
    out.publish(alerts(4))
    out.close()
    again = Blocked(tmp_path, [])
    again.up.set()
    again.connect()
    try:
        wait_for(lambda: len(again.got) == 4, message="the four after a restart")
    finally:
        again.close()


def test_the_examples_in_docs_export_md_are_valid_configs() -> None:
    import re
    import textwrap

    from collector.outputs.registry import parse_outputs
    from common.yamlconf import parse_yaml
    from tests.harness import REPO

    text = (REPO / "docs" / "export.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    entries = [b for b in blocks if b.startswith("outputs:")]
    assert len(entries) == 2
    for block in entries:
        spec, = parse_outputs(parse_yaml(block, "docs/export.md")["outputs"],
                              source="docs/export.md")
        assert spec.type.name in ("syslog", "https")
    # the filter: and queue: fragments fit under any export
    fragments = "".join(textwrap.dedent(b) for b in blocks if not b.startswith("outputs:"))
    extra = parse_yaml(fragments, "docs/export.md")
    spec, = parse_outputs({"soc": {"type": "https", "url": "https://soc/", **extra}},
                          source="docs/export.md")
    assert spec.config.filter.min_severity == 47 and spec.config.queue.max_bytes == 256 << 20
