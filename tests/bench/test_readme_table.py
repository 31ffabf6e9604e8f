"""bench/readme-table: README's table between its markers, from RESULTS.md's summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bench.conftest import load_script

readme_table: Any = load_script("readme-table")

RESULTS = """# Benchmark results

* date: 2026-12-02 01:50 UTC; the whole run took 24.0 min
* machine: Some CPU, 2 cores, 7.8 GiB memory, kernel 6.1

<!-- summary:start -->
| benchmark | figure | median |
| --- | --- | --- |
| fim | scan | 1,200 |
<!-- summary:end -->
"""


def write(tmp_path: Path, readme: str) -> tuple[Path, Path]:
    (tmp_path / "RESULTS.md").write_text(RESULTS)
    (tmp_path / "README.md").write_text(readme)
    return tmp_path / "RESULTS.md", tmp_path / "README.md"


def test_the_table_replaces_what_lies_between_the_markers(tmp_path: Path) -> None:
    results, readme = write(tmp_path, "# sisguard\n\n## Benchmarks\n<!-- bench-table:start -->\n"
                                      "old table\n<!-- bench-table:end -->\nafter\n")
    assert readme_table.main([str(results), str(readme), "--check"]) == 1
    assert readme_table.main([str(results), str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.endswith("<!-- bench-table:end -->\nafter\n")
    assert ("<!-- bench-table:start -->\nMeasured by `bench/run-all` on 2026-12-02 01:50 UTC, "
            "Some CPU, 2 cores, 7.8 GiB memory, kernel 6.1;") in text
    assert "| fim | scan | 1,200 |\n<!-- bench-table:end -->" in text
    assert readme_table.main([str(results), str(readme), "--check"]) == 0   # idempotent
    assert readme_table.main([str(results), str(readme)]) == 0
    assert readme.read_text() == text


@pytest.mark.parametrize("readme, problem", [
    ("# no markers\n", "README.md: marker line '<!-- bench-table:start -->' not found"),
    ("<!-- bench-table:start -->\n", "marker line '<!-- bench-table:end -->' not found"),
    ("<!-- bench-table:end -->\n<!-- bench-table:start -->\n", "README.md:1: "),
    ("<!-- bench-table:start -->\n<!-- bench-table:start -->\n<!-- bench-table:end -->\n",
     "on lines 1, 2: give it once"),
])
def test_missing_or_misplaced_markers_fail_clearly(tmp_path: Path, readme: str, problem: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    results, path = write(tmp_path, readme)
    assert readme_table.main([str(results), str(path)]) == 2
    assert problem in capsys.readouterr().err
    assert path.read_text() == readme


def test_a_results_file_without_its_summary_fails(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    results, readme = write(tmp_path, "<!-- bench-table:start -->\n<!-- bench-table:end -->\n")
    results.write_text("# Benchmark results\n")
    assert readme_table.main([str(results), str(readme)]) == 2
    assert "RESULTS.md: marker line '<!-- summary:start -->' not found" in capsys.readouterr().err
