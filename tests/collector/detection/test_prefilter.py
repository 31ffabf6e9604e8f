"""The prefilter never drops a rule that would match."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.detection import load_rules
from collector.detection.matcher import EventView
from collector.detection.prefilter import Prefilter
from tests.collector.detection.detection_helpers import proc

SIGMA_LINUX = Path(__file__).resolve().parents[3].parent / "shared/data/sigma/linux"
RULES = load_rules([SIGMA_LINUX / "process_creation"]).detections if SIGMA_LINUX.is_dir() else []
PREFILTER = Prefilter([r.anchor for r in RULES])
PIECES = ["/usr/bin/", "base64 -d", "crontab", " -l", "chmod", "+x ", "/tmp/", "nc ", " -e ",
          "curl", "wget", "|", " sh", "python", "-c", "history", "useradd", "iptables", "Ü",
          "/dev/tcp/", "BASE64", "apt", "install", "ß", "x"]


def test_most_sigmahq_rules_have_an_anchor() -> None:
    if not RULES:
        return
    anchored = sum(1 for r in RULES if r.anchor is not None)
    assert anchored / len(RULES) > 0.8


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=8), st.sampled_from(PIECES))
def test_candidates_include_every_matching_rule(cmd_parts: list[str], exe: str) -> None:
    event = proc("".join(cmd_parts), "/usr/bin/" + exe.strip("/ |"))
    view = EventView(event)
    chosen = set(PREFILTER.candidates(view))
    for position, rule in enumerate(RULES):
        if rule.match(view):
            assert position in chosen, rule.meta.title


def test_known_attack_is_a_candidate_and_benign_event_skips_most_rules() -> None:
    if not RULES:
        return
    view = EventView(proc("crontab -l", "/usr/bin/crontab"))
    chosen = set(PREFILTER.candidates(view))
    matching = {i for i, r in enumerate(RULES) if r.match(view)}
    assert matching and matching <= chosen
    benign = EventView(proc("/usr/sbin/nginx -g daemon off;", "/usr/sbin/nginx"))
    assert len(PREFILTER.candidates(benign)) < len(RULES) / 3
