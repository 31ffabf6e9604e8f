"""Reads beneath a root: openat2 and the O_NOFOLLOW walk behave the same."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.platform.linux import saferead
from agent.platform.linux.saferead import (
    NotRegular,
    Outside,
    Replaced,
    Tree,
    open_beneath,
    read_capped,
)


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "openat2":
        if not saferead.openat2_available():
            pytest.skip("this kernel has no openat2")
    else:
        monkeypatch.setattr(saferead._openat2, "available", False)
    yield str(request.param)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "page.html").write_text("<p>page</p>")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "page.html").write_text("root only")
    (root / "link").symlink_to(private)
    (root / "a" / "up").symlink_to("..")
    os.mkfifo(root / "pipe.php")
    return root


def test_a_link_anywhere_on_the_way_is_refused(site: Path, resolver: str) -> None:
    with Tree(str(site)) as tree:
        assert tree.read(str(site / "a" / "b" / "page.html"), 100)[0] == b"<p>page</p>"
        for path in (site / "link" / "page.html", site / "a" / "up" / "a" / "b" / "page.html"):
            with pytest.raises(OSError) as e:
                tree.read(str(path), 100)
            assert e.value.errno == errno.ELOOP
            assert tree.lstat_or_none(str(path)) is None
        with pytest.raises(OSError) as e:   # the final link itself is not followed either
            tree.open_file(str(site / "link"))
        assert e.value.errno in (errno.ELOOP, errno.ENOTDIR)
        assert tree.readlink(str(site / "link")) == str(site.parent / "private")
        with pytest.raises(Outside):
            tree.rel(str(site.parent / "private" / "page.html"))
        with pytest.raises(Outside):
            open_beneath(tree.fd, "a/../../private/page.html")


def test_a_directory_swapped_for_a_link_is_not_listed(site: Path, resolver: str) -> None:
    with Tree(str(site)) as tree:
        with tree.listing(str(site / "a")) as entries:
            assert sorted(p for p, _ in entries) == [str(site / "a" / "b"),
                                                     str(site / "a" / "up")]
        os.rename(site / "a", site / "a_old")
        (site / "a").symlink_to(site.parent / "private")
        with pytest.raises(OSError) as e, tree.listing(str(site / "a")) as entries:
            list(entries)
        assert e.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_a_fifo_is_never_opened_for_reading_and_the_inode_must_match(
        site: Path, resolver: str) -> None:
    with Tree(str(site)) as tree:
        fifo = str(site / "pipe.php")
        st = tree.lstat(fifo)
        with pytest.raises(NotRegular, match="fifo"):
            tree.open_file(fifo, st)
        with pytest.raises(NotRegular, match="fifo"):   # found a FIFO where a file was
            tree.open_file(fifo)
        page = str(site / "a" / "b" / "page.html")
        before = tree.lstat(page)
        os.rename(page, page + ".old")
        Path(page).write_text("other")
        with pytest.raises(Replaced):
            tree.open_file(page, before)
        with pytest.raises(Replaced):
            tree.open_file(page, ino=before.st_ino)


def test_reads_are_capped_and_a_file_root_is_reached_through_its_parent(
        tmp_path: Path, resolver: str) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(10 << 30)   # sparse
    with Tree(str(big)) as tree:
        fd = tree.open_file(str(big))
        try:
            assert len(read_capped(fd, 3 << 20)) == 3 << 20
        finally:
            os.close(fd)
        with pytest.raises(Outside):
            tree.lstat(str(tmp_path / "other"))


def test_an_openat2_refused_by_seccomp_falls_back_to_the_walk(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old container profiles answer EPERM (not ENOSYS) to a syscall they do not know."""
    calls: list[str] = []

    def refused(dir_fd: int, rel: str, flags: int) -> int:
        calls.append(rel)
        raise PermissionError(errno.EPERM, "Operation not permitted", rel)

    monkeypatch.setattr(saferead._openat2, "available", True)
    monkeypatch.setattr(saferead._openat2, "verified", False)
    monkeypatch.setattr(saferead._Openat2, "__call__", lambda self, *a: refused(*a))
    with Tree(str(site)) as tree:
        assert tree.read(str(site / "a" / "b" / "page.html"), 100)[0] == b"<p>page</p>"
        assert not saferead.openat2_available() and calls == ["a/b/page.html"]
        with pytest.raises(OSError) as e:   # and the walk still refuses links
            tree.read(str(site / "link" / "page.html"), 100)
        assert e.value.errno == errno.ELOOP
