"""The shipped rule set lints clean and passes every one of its own test cases."""

from __future__ import annotations

from tests.harness import REPO, cli


def test_shipped_rules_lint_clean() -> None:
    result = cli("rules", "lint", str(REPO / "rules"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_rules_pass_their_tests() -> None:
    result = cli("rules", "test", str(REPO / "rules"), check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    summary = [line for line in result.stdout.splitlines() if " passed, " in line]
    assert summary and " 0 failed" in summary[-1]
    passed = int(summary[-1].split(" passed")[0].split()[-1])
    assert passed >= 64, "at least 32 rules x (one positive + one negative)"
