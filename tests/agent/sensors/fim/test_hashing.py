"""Hash workers: helper processes that hash files for baseline scans."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from agent.platform.linux.saferead import NotRegular, Replaced, Tree
from agent.sensors.fim.hashing import HashWorkers, Item, as_error, digest_file, xattr_digest


def _items(paths: list[str]) -> list[Item]:
    return [Item.of(p, os.lstat(p)) if os.path.lexists(p) else Item(p, 0, 0, 0o100644)
            for p in paths]


def test_digests_match_hashlib_for_small_large_and_growing_files(tmp_path: Path) -> None:
    small, large = tmp_path / "small.html", tmp_path / "large.bin"
    small.write_bytes(b"<h1>xin chao</h1>\n")
    large.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    with Tree(str(tmp_path)) as tree:
        for path in (small, large):
            data = path.read_bytes()
            assert digest_file(tree, str(path), ("sha256", "sha1"), 1 << 40) == {
                "sha256": hashlib.sha256(data).hexdigest(),
                "sha1": hashlib.sha1(data).hexdigest()}
        assert digest_file(tree, str(large), ("sha256",), 1024) == {}   # over the cap
        link = tmp_path / "link"
        link.symlink_to(small)
        with pytest.raises(OSError, match="Too many levels"):      # never follows a symlink
            digest_file(tree, str(link), ("sha256",), 1 << 40)
        fifo = tmp_path / "fifo.php"
        os.mkfifo(fifo)
        with pytest.raises(NotRegular, match="fifo"):              # never blocks on a FIFO
            digest_file(tree, str(fifo), ("sha256",), 1 << 40)
        with pytest.raises(Replaced):                              # only the inode seen
            digest_file(tree, str(small), ("sha256",), 1 << 40, os.lstat(large))


def test_workers_return_what_this_process_computes_in_order(tmp_path: Path) -> None:
    paths = []
    for i in range(300):
        p = tmp_path / f"f{i}.txt"
        p.write_bytes(os.urandom(i * 97))
        paths.append(str(p))
    odd = tmp_path / os.fsdecode(b"t\xeat-kh\xf4ng-utf8.php")   # a name that is not UTF-8
    odd.write_bytes(b"<?php echo 1;")
    os.setxattr(odd, "user.sisguard", b"x")
    paths += [str(odd), str(tmp_path / "gone.html"), str(tmp_path)]
    root = str(tmp_path)
    with HashWorkers(2, ("sha256",), 1 << 40, True) as pool:
        assert len(pool) == 2
        futures = [pool.submit(root, _items(paths[i:i + 50])) for i in range(0, len(paths), 50)]
        results = [r for f in futures for r in f.result(timeout=30)]
    with Tree(root) as tree:
        for path, result in zip(paths[:-2], results):
            st = os.lstat(path)
            assert result == (digest_file(tree, path, ("sha256",), 1 << 40),
                              xattr_digest(tree, path, st))
    assert results[300][1] is not None                        # the xattr was read
    gone, directory = results[-2:]
    assert isinstance(gone[0], int) and isinstance(directory[0], int)
    assert isinstance(as_error(gone, paths[-2]), FileNotFoundError)
    assert directory[0] == errno.EINVAL                       # not a regular file: not read


def test_workers_import_nothing_from_the_working_directory_or_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root running ``fim scan`` from a directory a user can write: a planted
    ``hashlib.py`` there (or on PYTHONPATH) is never imported by a helper."""
    plant = tmp_path / "plant"
    plant.mkdir()
    flag = tmp_path / "imported"
    (plant / "hashlib.py").write_text(f"open({str(flag)!r}, 'w').write('pwned')\n")
    (plant / "agent").mkdir()   # and a fake agent package beside it
    (plant / "agent" / "__init__.py").write_text(f"open({str(flag)!r}, 'w').write('agent')\n")
    page = tmp_path / "page.html"
    page.write_text("<p>x</p>")
    monkeypatch.chdir(plant)
    monkeypatch.setenv("PYTHONPATH", str(plant))
    with HashWorkers(1, ("sha256",), 1 << 40, False) as pool:
        result = pool.submit(str(tmp_path), _items([str(page)])).result(timeout=30)
    assert result[0][0] == {"sha256": hashlib.sha256(b"<p>x</p>").hexdigest()}
    assert not flag.exists()


def test_a_dead_worker_fails_its_requests_instead_of_hanging(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    items = _items([str(tmp_path / "a")])
    with HashWorkers(1, ("sha256",), 1 << 40, False) as pool:
        assert pool.submit(str(tmp_path), items).result(timeout=30)[0][0]
        pool._procs[0].kill()
        pool._procs[0].wait()
        with pytest.raises(OSError, match="hash worker"):
            pool.submit(str(tmp_path), items).result(timeout=30)


def test_a_baseline_scan_whose_workers_die_still_records_every_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from concurrent.futures import Future

    from agent.sensors.base import SensorContext, SensorHealth
    from agent.sensors.fim.config import FimConfig
    from agent.sensors.fim.scan import Scanner
    from agent.sensors.fim.sensor import open_reconciler
    from common.yamlconf import from_dict

    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    for i in range(50):
        (www / "sub" / f"p{i}.html").write_text(f"<p>{i}</p>")
    calls: list[int] = []

    def dead(self: HashWorkers, root: str, items: list[Item]) -> Future[object]:
        calls.append(len(items))
        future: Future[object] = Future()
        future.set_exception(OSError("hash worker 1 exited (-9)"))
        return future

    monkeypatch.setattr(HashWorkers, "submit", dead)
    config = from_dict(FimConfig, {"paths": [str(www)]}, source="<test>", path="sensor.fim")
    health = SensorHealth("fim")
    r = open_reconciler(config, SensorContext(
        emit=lambda doc: None, health=health, state_dir=tmp_path / "state",
        report_error=lambda message, fields: None))
    stats = Scanner(r, threading.Event()).scan(config.watch_paths[0], reason="test")
    assert calls and stats.completed and stats.hashed == 50 and stats.errors == 0
    page = r.baseline.get(str(www / "sub" / "p7.html"))
    assert page is not None
    assert page.hashes["sha256"] == hashlib.sha256(b"<p>7</p>").hexdigest()
    r.baseline.close()


def test_many_large_requests_in_flight_neither_block_nor_mix(tmp_path: Path) -> None:
    """Requests and answers larger than a pipe (64 KiB) both ways, all sent before any
    answer is read: the writer must never wait on the lock the answer reader needs."""
    paths = []
    for i in range(1500):
        p = tmp_path / (f"{i:05d}-" + "x" * 180)
        p.write_text(str(i))
        paths.append(str(p))
    with HashWorkers(1, ("sha256", "sha512"), 1 << 40, False) as pool:
        futures = [pool.submit(str(tmp_path), _items(paths[k:] + paths[:k]))
                   for k in range(0, 1500, 150)]
        for k, future in zip(range(0, 1500, 150), futures):
            results = future.result(timeout=60)
            first = results[0][0]
            assert isinstance(first, dict)
            assert first["sha256"] == hashlib.sha256(str(k).encode()).hexdigest()
            assert len(results) == 1500


def test_a_large_sparse_file_is_not_hashed_a_small_one_is(tmp_path: Path) -> None:
    """``truncate -s 200M`` costs a user nothing; hashing it would read 200 MiB."""
    from agent.sensors.fim.state import Reader

    big, small = tmp_path / "big.php", tmp_path / "small.php"
    for path, size in ((big, 200 << 20), (small, 1 << 20)):
        with open(path, "wb") as f:
            f.truncate(size)
    with Tree(str(tmp_path)) as tree:
        assert digest_file(tree, str(big), ("sha256",), 1 << 40) == {}
        assert digest_file(tree, str(small), ("sha256",), 1 << 40) == {
            "sha256": hashlib.sha256(bytes(1 << 20)).hexdigest()}
    state = Reader(roots=(str(tmp_path),)).read(str(big))
    assert state is not None and state.hashes == {}
    assert state.hash_skipped == f"sparse: {os.lstat(big).st_blocks * 512} of {200 << 20} " \
        "bytes allocated"
