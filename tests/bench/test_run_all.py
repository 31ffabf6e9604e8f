"""bench/run-all: RESULT lines, medians, ratios and the report, on a stand-in benchmark."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench.conftest import load_script
from tests.harness import REPO

run_all: Any = load_script("run-all")


def test_a_result_line_is_read_with_its_peers_label_and_target() -> None:
    r = run_all.parse_line("RESULT name=scan.sisguard value=1.5e3 unit=files/s peers=a,b "
                           "label='baseline scan: sisguard' target=1000", "fim run 1 line 3")
    assert (r.name, r.value, r.unit, r.better, r.peers, r.label, r.target) == (
        "scan.sisguard", 1500.0, "files/s", "higher", ("a", "b"), "baseline scan: sisguard",
        1000.0)
    assert run_all.parse_line("PEER name=aide version=0.18.3", "x") == ("aide", "0.18.3")
    assert run_all.parse_line("scan took 3 s", "x") is None
    assert run_all.parse_line("RESULTS are below", "x") is None


@pytest.mark.parametrize("line, problem", [
    ("RESULT name=a value=x unit=s", "could not convert"),
    ("RESULT name=a value=nan unit=s", "must be finite"),
    ("RESULT name=a unit=s", "missing value"),
    ("RESULT name=a value=1 unit=s speed=9", "unknown key(s) speed"),
    ("RESULT name=a value=1 unit=s better=faster", "better='faster'"),
    ("RESULT name=a name=b value=1 unit=s", "name given twice"),
    ("RESULT name=a value=1 unit=s label='open", "No closing quotation"),
    ("RESULT name=a value=1 unit=s oops", "'oops' is not key=value"),
    ("PEER name=aide", "PEER takes name= and version= only"),
])
def test_a_malformed_line_says_where_and_what(line: str, problem: str) -> None:
    with pytest.raises(run_all.ResultError) as e:
        run_all.parse_line(line, "fim run 2 line 7")
    assert str(e.value).startswith("fim run 2 line 7: ") and problem in str(e.value)


def test_ratio_is_how_many_times_better_ours_is() -> None:
    fast = run_all.Result("a", 0, "files/s")
    small = run_all.Result("b", 0, "MiB", better="lower")
    assert run_all.ratio(fast, 300.0, 100.0) == 3.0
    assert run_all.ratio(small, 50.0, 100.0) == 2.0
    assert run_all.ratio(fast, 300.0, 0.0) is None


STAND_IN = """import os, sys
n = int(open(sys.argv[1]).read() or 0) + 1
open(sys.argv[1], "w").write(str(n))
print("warming up")
print(f"RESULT name=ours value={100 * n} unit=events/s peers=theirs target=250 label='ours'")
print(f"RESULT name=theirs value=50 unit=events/s")
print(f"RESULT name=rss value={10 + n} unit=MiB better=lower")
print("PEER name=theirs version=1.2.3")
print("RESULT name=broken value=fast unit=x")
"""


def test_medians_ratios_and_report_from_real_runs(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "stand-in"
    script.write_text(STAND_IN)
    counter = tmp_path / "count"
    counter.write_text("")
    quiet = tmp_path / "quiet"
    quiet.write_text("print('figures: 12 things/s')\n")
    failing = tmp_path / "failing"
    failing.write_text("import sys; print('RESULT name=x value=1 unit=s'); "
                       "sys.exit('engine unreachable')\n")
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    monkeypatch.setattr(run_all, "BENCHES", (
        run_all.Bench("standin", (str(script), str(counter)), (str(script), str(counter))),
        run_all.Bench("quiet", (str(quiet),), (str(quiet),), runs=1),
        run_all.Bench("failing", (str(failing),), (str(failing),)),
        run_all.Bench("missing", ("bench/nothing",), ("bench/nothing",)),
        run_all.Bench("search", (str(quiet), "{es}"), (str(quiet),), needs_es=True)))
    monkeypatch.delenv("SISGUARD_BENCH_ES_URL", raising=False)
    monkeypatch.delenv("SISGUARD_TEST_ES_URLS", raising=False)
    out = tmp_path / "RESULTS.md"
    assert run_all.main(["--runs", "3", "--out", str(out)]) == 1   # the failing one
    text = out.read_text()
    assert counter.read_text() == "3"                              # three real runs
    # median of 100, 200, 300 = 200; ratio 200 / 50 = 4.00; target 250 missed
    assert ("| standin | ours | 200 | events/s | 3 | 4.00x theirs (50) | ≥ 250: **missed** |"
            in text)
    assert "| standin | rss | 12 | MiB | 3 |  |  |" in text
    assert "| standin | theirs |" not in text            # only in the row it is compared in
    assert "* `theirs`: 50, 50, 50 events/s" in text
    assert "theirs 1.2.3" in text and f"Python {sys.version.split()[0]}" in text
    assert "standin run 1 line 6: could not convert string to float: 'fast'" in text
    assert "No RESULT lines" in text and "figures: 12 things/s" in text   # quiet: its tail
    assert "failing run 1: exit 1: engine unreachable" in text
    assert "Skipped: bench/nothing is not in this checkout." in text
    assert "Skipped: no Elasticsearch URL" in text
    assert f"{os.cpu_count()} cores" in text and "load average (1, 5, 15 min)" in text
    start, end = text.index("<!-- summary:start -->"), text.index("<!-- summary:end -->")
    assert start < text.index("| standin | ours") < end


def test_an_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--only", "fim,nope"])
    assert "unknown benchmark(s) nope" in capsys.readouterr().err


def test_every_bench_entry_gives_only_options_its_script_declares() -> None:
    """A full and a --quick run of each BENCHES entry: every --option in its arguments is
    one that the script's argparse declares (read from its source, nothing imported)."""
    for bench in run_all.BENCHES:
        source = (REPO / bench.argv[0]).read_text(encoding="utf-8")
        declared = {option for line in source.splitlines() if "add_argument(" in line
                    for option in re.findall(r"[\"'](--[\w-]+)[\"']", line)}
        for argv in (bench.argv, bench.quick):
            assert argv[0] == bench.argv[0], bench.name
            given = {a for a in argv[1:] if a.startswith("--")}
            assert given <= declared, (bench.name, argv, given - declared)
