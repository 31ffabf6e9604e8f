"""The one publisher: retry while an output is unavailable, ack only once every output
has stored, dead letters once, nothing lost for any producer (ingest, monitor, emit)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.monitor import Monitor
from collector.outputs.archive import JsonlArchive
from collector.outputs.base import Output, OutputUnavailable
from collector.publisher import DEAD_LETTERS, Publisher
from collector.records import Kind, Outcome, PublishResult, Record
from collector.store import Store


class Flaky(Output):
    """An output that is down for its first ``down`` calls (a stand-in for a cluster
    outage: the real engine's outage is tested in tests/e2e/test_metrics.py)."""

    counts_duplicates = False

    def __init__(self, name: str, *, down: int = 0, dead_letters: bool = False) -> None:
        self.name = name
        self.down = down
        self.calls = 0
        self.stored: list[str] = []
        self.kept: list[dict[str, Any]] = []
        if dead_letters:
            self.dead_letter = self._dead_letter

    def connect(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _fail(self) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise OutputUnavailable(f"{self.name} is down (call {self.calls})")

    def publish(self, records: Sequence[Record]) -> PublishResult:
        self._fail()
        self.stored.extend(r.doc_id for r in records)
        return PublishResult([Outcome.STORED] * len(records))

    def _dead_letter(self, entries: Sequence[dict[str, Any]]) -> None:
        self._fail()
        self.kept.extend(entries)


class Meter:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.stored_records: list[Record] = []
        self.pending: dict[str, int] = {}

    def failed(self, output: str) -> None:
        self.log.append(("failed", output))

    def succeeded(self, output: str) -> None:
        self.log.append(("succeeded", output))

    def waiting(self, output: str, delta: int) -> None:
        self.pending[output] = self.pending.get(output, 0) + delta

    def took(self, output: str, seconds: float) -> None:
        self.log.append(("took", output))

    def stored(self, records: Sequence[Record]) -> None:
        self.stored_records.extend(records)


def events(agent: str, seqs: Sequence[int]) -> list[Record]:
    return [Record(Kind.EVENT, f"{agent}-{s}", {
        "@timestamp": "2026-01-01T00:00:00Z",
        "event": {"id": f"{agent}-{s}", "sequence": s, "ingested": "2026-01-01T00:00:00Z",
                  "kind": "event", "dataset": "test"},
        "agent": {"id": agent}}, agent_id=agent, seq=s) for s in seqs]


def dead(agent: str, seq: int) -> dict[str, Any]:
    return {"agent": {"id": agent}, "sequence": seq, "reason": "bad", "document": "{x"}


def publisher(*outputs: Output, meter: Meter | None = None) -> Publisher:
    return Publisher(outputs, stopping=threading.Event(), meter=meter, first_retry=0.001,
                     max_retry=0.002)


def test_an_unavailable_output_is_retried_until_it_stores(tmp_path: Path) -> None:
    meter = Meter()
    flaky = Flaky("soc", down=3)
    pub = publisher(flaky, meter=meter)
    seen_outage: list[float | None] = []

    def alive() -> bool:   # asked between retries
        seen_outage.append(pub.outage_since)
        return True

    delivery = pub.delivery(events("a", [1, 2]))
    assert pub.deliver(delivery, alive=alive)
    assert flaky.calls == 4 and flaky.stored == ["a-1", "a-2"]
    assert seen_outage and all(t is not None for t in seen_outage), "an outage while down"
    assert pub.outage_since is None and pub.outages() == {}
    assert meter.log.count(("failed", "soc")) == 3 and ("succeeded", "soc") in meter.log
    assert meter.pending == {"soc": 0}
    assert [r.doc_id for r in meter.stored_records] == ["a-1", "a-2"]


def test_not_acked_until_every_output_stored_and_a_resend_loses_nothing(
        tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    archive.connect()
    flaky = Flaky("soc", down=2)
    pub = publisher(archive, flaky)
    records = events("a", [1, 2, 3])
    # the agent goes away while the second output is down: no ack
    attempts = iter([True, False])
    first = pub.deliver(pub.delivery(records), alive=lambda: next(attempts))
    assert first is False
    assert flaky.stored == [] and archive.high_water_mark("a") == 3
    assert pub.outage_since is not None
    # the agent resends the unacked batch: the archive counts them duplicates, the
    # output that was down gets every record, and the ack says 3 duplicates
    again = pub.delivery(records)
    assert pub.deliver(again)
    assert flaky.stored == ["a-1", "a-2", "a-3"]
    assert again.duplicates == 3
    archive.close()
    lines = (tmp_path / "events-2026-01-01.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"]["id"] for line in lines] == ["a-1", "a-2", "a-3"]


def test_stopping_ends_the_retry_without_an_ack() -> None:
    pub = publisher(Flaky("soc", down=10**9))
    pub.stopping.set()
    assert pub.deliver(pub.delivery(events("a", [1]))) is False


def test_dead_letters_are_kept_once_even_when_the_batch_is_resent() -> None:
    keeper = Flaky("archive-like", dead_letters=True)
    keeper.down = 1   # its first call (the dead letters) fails
    pub = publisher(keeper, Flaky("other", dead_letters=True))
    letters = [dead("a", 5), dead("a", 6)]
    first = pub.delivery(events("a", [4]), letters)
    assert pub.deliver(first)
    assert keeper.kept == letters, "retried until kept, by the first output that keeps them"
    resent = pub.delivery(events("a", [4]), letters)
    assert resent.dead_letters == []
    assert pub.deliver(resent)
    assert keeper.kept == letters, "a resent batch does not write its dead letters again"
    assert pub.dead_letters is keeper


def test_a_failing_output_costs_no_records_and_the_others_are_not_sent_twice() -> None:
    good, bad = Flaky("good"), Flaky("bad", down=2)
    pub = publisher(good, bad)
    delivery = pub.delivery(events("a", [1, 2]))
    assert not pub.attempt(delivery)
    assert not pub.attempt(delivery)
    assert pub.attempt(delivery)
    assert good.stored == ["a-1", "a-2"], "stored once, not at every attempt"
    assert bad.stored == ["a-1", "a-2"]
    assert delivery.done == {"good", "bad"}


def test_duplicates_come_from_the_first_output_that_counts_them(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    archive.connect()
    console = Flaky("console")   # says STORED for everything: it does not count
    pub = publisher(console, archive)
    assert pub.duplicates_from is archive
    assert pub.deliver(pub.delivery(events("a", [1, 2])))
    resent = pub.delivery(events("a", [2, 3]))
    assert pub.deliver(resent)
    assert resent.duplicates == 1
    archive.close()


def test_emit_resumes_where_it_stopped() -> None:
    good, bad = Flaky("good"), Flaky("bad", down=1)
    pub = publisher(good, bad)
    alert = [Record(Kind.ALERT, "x", {"event": {"id": "x"}})]
    with pytest.raises(OutputUnavailable, match="bad"):
        pub.emit(alert)
    pub.emit(alert)
    assert good.stored == ["x"] and bad.stored == ["x"]


def test_the_floor_asks_a_local_output_always_and_a_remote_one_once() -> None:
    class Marks(Flaky):
        def __init__(self, name: str, *, local: bool, mark: int, down: bool = False) -> None:
            super().__init__(name)
            self.marks_local = local
            self.mark = mark
            self.asked = 0
            self.unreachable = down

        def high_water_mark(self, agent_id: str) -> int:
            self.asked += 1
            if self.unreachable:
                raise OutputUnavailable("no cluster")
            return self.mark

    remote = Marks("es", local=False, mark=7)
    assert publisher(remote).floor("a", has_mark=False) == 7
    assert publisher(remote).floor("a", has_mark=True) == 0
    assert remote.asked == 1
    local = Marks("archive", local=True, mark=9)
    assert publisher(remote, local).floor("a", has_mark=True) == 9
    assert publisher(Marks("es", local=False, mark=7, down=True)).floor("a",
                                                                       has_mark=False) == 0


def test_output_names_are_unique() -> None:
    with pytest.raises(ValueError, match="soc"):
        publisher(Flaky("soc"), Flaky("soc"))
    with pytest.raises(ValueError, match=DEAD_LETTERS):
        publisher(Flaky(DEAD_LETTERS))


def test_the_monitors_records_are_retried_not_lost(tmp_path: Path) -> None:
    store = Store(tmp_path / "collector.db")
    store.import_agent(agent_id="agent-1", hostname="web1", organization="org",
                       serial="1")
    store.seen("agent-1", address="peer")
    archive = JsonlArchive(tmp_path / "archive")
    archive.connect()
    es = Flaky("elasticsearch", down=2)
    detected: list[str] = []

    def detect(event: dict[str, Any]) -> list[dict[str, Any]]:
        detected.append(event["event"]["id"])
        return [{"event": {"id": "alert-1", "kind": "alert"}, "rule": {"id": "r"}}]

    monitor = Monitor(store=store, publisher=publisher(archive, es), detect=detect,
                      offline_after=1, health=dict, health_path=tmp_path / "health.json")
    later = time.time() + 3600
    assert monitor.check_agents(later) == []     # elasticsearch down: not yet offline
    assert store.agent("agent-1").offline_since is None  # type: ignore[union-attr]
    assert monitor.check_agents(later + 2) == []
    assert monitor.check_agents(later + 4) == ["agent-1"]
    assert store.agent("agent-1").offline_since == later  # type: ignore[union-attr]
    assert len(detected) == 1, "detection ran once, not at every retry"
    assert len(es.stored) == 2 and es.stored[1] == "alert-1"
    archive.close()
    archived = (tmp_path / "archive").glob("*.jsonl")
    lines = [line for f in archived for line in f.read_text().splitlines()]
    assert len(lines) == 2, "the archive got the event and the alert once each"
    assert monitor.check_agents(later + 6) == [], "reported once per silence"
    store.close()
