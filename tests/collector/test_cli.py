"""collector/cli.py: token list and the --organization filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import cli
from collector.server import DataDir
from collector.store import Store


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:]]


def test_token_and_agents_lists_filter_by_organization(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert cli.main(["init", "--data-dir", data]) == 0
    for org, org_id in (("Health", "syt"), ("Info", "stt"), ("Info", "stt")):
        assert cli.main(["token", "create", "--data-dir", data, "--org", org,
                         "--org-id", org_id]) == 0
    # an id names one organization: refused, saying why
    assert cli.main(["token", "create", "--data-dir", data, "--org", "Other",
                     "--org-id", "stt"]) != 0
    store = Store(DataDir(Path(data)).db)
    store.add_agent(hostname="web-h", organization="Health", organization_id="syt",
                    version="", os="", serial="")
    store.add_agent(hostname="web-i", organization="Info", organization_id="stt",
                    version="", os="", serial="")
    store.close()
    out, err = capsys.readouterr()
    assert "already name" in err

    assert cli.main(["token", "list", "--data-dir", data, "--organization", "stt"]) == 0
    out, _ = capsys.readouterr()
    assert [r[1:3] for r in _rows(out)] == [["stt", "Info"], ["stt", "Info"]]
    assert all("sgt_" not in line for line in out.splitlines())   # never the token
    assert cli.main(["token", "list", "--data-dir", data]) == 0
    assert len(_rows(capsys.readouterr()[0])) == 3

    assert cli.main(["agents", "list", "--data-dir", data, "--organization", "syt"]) == 0
    out, _ = capsys.readouterr()
    assert [r[1:4] for r in _rows(out)] == [["web-h", "syt", "Health"]]
    assert cli.main(["agents", "list", "--data-dir", data, "--organization", "nobody"]) == 0
    assert _rows(capsys.readouterr()[0]) == []
    assert cli.main(["agents", "list", "--data-dir", data, "--organization", "Not An Id"]) != 0
    assert "--organization" in capsys.readouterr()[1]
