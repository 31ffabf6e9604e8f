"""collector/sequence.py: marks, leaps, backwards, 0 and 2^64-1, one alert per window."""

from __future__ import annotations

from pathlib import Path

from collector.pipeline import AgentIdentity
from collector.sequence import MAX_SEQ, BatchCheck, SequenceMarks, SequencePolicy

AGENT = AgentIdentity("a1", "web1", "org", "1.0")
POLICY = SequencePolicy(max_gap=1000, max_rate=10.0, resend=100, anomaly_window=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(marks: SequenceMarks, seqs: list[int], *, floor: int = 0) -> BatchCheck:
    check = marks.begin("a1", floor=floor)
    for seq in seqs:
        check.refusal(seq)
    marks.commit(check, alerted=marks.anomaly_alert(AGENT, check) is not None)
    return check


def kinds(check: BatchCheck) -> list[str]:
    return [k for _, k in check.refused]


def test_first_batch_sets_the_mark_even_far_from_1() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    assert kinds(batch(marks, [50_000, 50_001])) == []   # e.g. after spool drops
    assert marks.mark("a1") == 50_001


def test_zero_and_above_2_63_are_refused_and_never_move_the_mark() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    assert kinds(batch(marks, [0, 2**64 - 1, MAX_SEQ + 1])) == ["zero", "out_of_range",
                                                                "out_of_range"]
    assert marks.mark("a1") is None
    assert kinds(batch(marks, [1, 2, 3])) == []
    assert marks.mark("a1") == 3


def test_leaps_spend_an_allowance_that_grows_with_time() -> None:
    clock = Clock()
    marks = SequenceMarks(None, POLICY, clock=clock)      # max_gap 1000, 10/s
    batch(marks, [10])
    assert kinds(batch(marks, [10 + 1002])) == ["leap"]   # skips 1001
    assert kinds(batch(marks, [10 + 1001])) == []         # skips 1000: all of it
    assert kinds(batch(marks, [1011 + 2])) == ["leap"]    # nothing left to skip
    clock.now += 100.0                                     # 100 s: 1000 more
    assert kinds(batch(marks, [1011 + 1002, 2**63 - 1])) == ["leap", "leap"]
    assert kinds(batch(marks, [1011 + 1001])) == []
    assert marks.mark("a1") == 2012


def test_a_rogue_cannot_ratchet_max_gap_per_batch() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    batch(marks, [1])
    assert kinds(batch(marks, [600])) == []                # skips 598: 402 left
    assert kinds(batch(marks, [1200])) == ["leap"]         # would skip 599
    check = batch(marks, [601, 602, 1100])                 # within one batch too
    assert kinds(check) == ["leap"] and marks.mark("a1") == 602
    assert kinds(batch(marks, [1004])) == []               # skips 401: 1 left


def test_contiguous_batches_spend_nothing() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    batch(marks, [1])
    for start in range(2, 20_000, 1000):
        assert kinds(batch(marks, list(range(start, start + 1000)))) == []


def test_backwards_beyond_a_resend_is_refused_a_resend_is_not() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    batch(marks, [500])
    resend = marks.begin("a1")
    assert resend.refusal(401) is None and resend.is_resend(401)
    reason = resend.refusal(400)
    assert reason is not None and "backwards" in reason
    assert not resend.is_resend(501)


def test_what_is_stored_is_the_floor_of_a_first_mark() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    assert kinds(batch(marks, [3], floor=5000)) == ["backwards"]
    assert marks.mark("a1") == 5000
    resend = marks.begin("a1", floor=5000)
    assert resend.refusal(4999) is None and resend.is_resend(4999)
    # forward of the floor, any distance (as on first sight: drops while it was away)
    assert kinds(batch(marks, [4999, 5000, 90_000], floor=5000)) == []
    assert marks.mark("a1") == 90_000
    assert kinds(batch(marks, [90_000 + 1002], floor=5000)) == ["leap"]   # a mark now


def test_a_lagging_mark_catches_up_with_the_archive() -> None:
    marks = SequenceMarks(None, POLICY, clock=Clock())
    batch(marks, [1000])
    check = marks.begin("a1", floor=4000)     # stored just before a crash, not yet saved
    assert check.is_resend(3999) and check.refusal(3999) is None
    assert check.refusal(4001) is None and check.credit == POLICY.max_gap


def test_one_alert_per_agent_per_window() -> None:
    clock = Clock()
    marks = SequenceMarks(None, POLICY, clock=clock)
    batch(marks, [100])
    check = marks.begin("a1")
    check.refusal(0)
    alert = marks.anomaly_alert(AGENT, check)
    assert alert is not None
    assert alert["rule"]["id"] == "builtin-sequence-anomaly"
    assert alert["event"]["kind"] == "alert" and alert["agent"]["id"] == "a1"
    assert alert["sisguard"]["sequence_anomaly"]["kinds"] == ["zero"]
    marks.commit(check, alerted=True)
    assert kinds(batch(marks, [0])) == ["zero"] and marks.alerts == 1
    clock.now += 61
    assert kinds(batch(marks, [0])) == ["zero"] and marks.alerts == 2
    assert marks.health()["refused"] == {"zero": 3}


def test_marks_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    marks = SequenceMarks(tmp_path / "sequence.json", POLICY, clock=clock)
    batch(marks, [42])
    marks.close()
    again = SequenceMarks(tmp_path / "sequence.json", POLICY, clock=clock)
    assert again.mark("a1") == 42
    assert kinds(batch(again, [42 + 1002])) == ["leap"]


def test_an_unreadable_marks_file_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "sequence.json"
    path.write_text('{"marks": {"a1": ["x"]}}')
    assert SequenceMarks(path, POLICY).mark("a1") is None
    path.write_text('{"marks": {"a1": [18446744073709551615, 0, 0]}}')   # never taken back
    assert SequenceMarks(path, POLICY).mark("a1") is None
