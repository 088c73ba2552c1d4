"""The answer cache's store on one machine (proxy/local_store.py): a SQLite file that every
worker opens. Several LocalAnswerCache instances on one directory stand for several
workers (each has its own in-process locks); subprocesses for real ones."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import stat
import time

import pytest

from proxy.local_store import FILE_NAME, LocalAnswerCache
from tests.conftest import concurrent_misses


def cache_in(directory, **options) -> LocalAnswerCache:
    return LocalAnswerCache(str(directory), **{"ttl_seconds": 60, "max_bytes": 10_000, **options})


def test_round_trip_is_exact_and_stored_as_compact_json(tmp_path):
    cache = cache_in(tmp_path)
    value = {"text": "你好 world", "n": [1, 2.5, None, True], "nested": {"a": {"b": ""}}}
    cache.set("k", value)
    assert cache.get("k") == value
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        stored = db.execute("SELECT value FROM answers WHERE key = 'k'").fetchone()[0]
    assert stored == '{"text":"你好 world","n":[1,2.5,null,true],"nested":{"a":{"b":""}}}'.encode()
    assert cache.get("missing") is None


def test_two_workers_see_each_others_entries(tmp_path):
    one, two = cache_in(tmp_path), cache_in(tmp_path)
    one.set("k", {"from": "one"})
    assert two.get_or_compute("k", lambda: pytest.fail("computed")) == ({"from": "one"}, True)


def test_entry_expires_after_its_ttl(tmp_path):
    cache = cache_in(tmp_path, ttl_seconds=1)
    cache.set("k", {"a": 1})
    assert cache.get("k") == {"a": 1}
    time.sleep(1.05)
    assert cache.get("k") is None


def test_store_is_bounded_by_bytes_and_drops_the_oldest_first(tmp_path):
    cache = cache_in(tmp_path, max_bytes=100)
    for index in range(10):
        cache.set(f"k{index}", {"text": "x" * 30})  # 41 bytes each
    held = [index for index in range(10) if cache.get(f"k{index}") is not None]
    assert held == [8, 9]
    assert cache.describe()["entries"] == 2 and cache.describe()["bytes"] == 82


def test_entry_larger_than_the_store_is_not_stored(tmp_path):
    cache = cache_in(tmp_path, max_bytes=10)
    cache.set("big", {"text": "x" * 100})
    assert cache.get("big") is None


def test_uncacheable_answer_is_returned_not_stored(tmp_path):
    cache = cache_in(tmp_path)
    assert cache.get_or_compute("k", lambda: ({"error": 1}, False)) == ({"error": 1}, False)
    assert cache.get("k") is None


def test_directory_and_file_are_the_owners_only(tmp_path):
    cache = cache_in(tmp_path / "answers")
    cache.set("k", {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "answers").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "answers" / FILE_NAME).st_mode) == 0o600


def test_identical_concurrent_misses_of_four_workers_compute_once(tmp_path):
    calls, results = concurrent_misses([cache_in(tmp_path) for _ in range(4)])
    assert calls == 1
    assert sorted(hit for _, hit in results) == [False] + [True] * 3
    assert all(value == {"answer": 1} for value, _ in results)


def _miss_in_a_process(directory: str, start, computed) -> None:
    cache = cache_in(directory)
    start.wait(10)

    def compute():
        computed.put(os.getpid())
        time.sleep(0.3)
        return {"answer": 1}, True

    cache.get_or_compute("same", compute)


def test_identical_concurrent_misses_of_three_processes_compute_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    start, computed = context.Event(), context.Queue()
    processes = [
        context.Process(target=_miss_in_a_process, args=(str(tmp_path), start, computed))
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert computed.qsize() == 1


def test_fill_lock_of_a_dead_filler_only_delays_the_others_until_it_expires(tmp_path):
    dead = cache_in(tmp_path, fill_lock_seconds=0.3)
    assert dead.local_store.take_fill_lock("same", "a worker that was killed", 0.3)
    cache = cache_in(tmp_path, fill_lock_seconds=0.3)
    started = time.monotonic()
    assert cache.get_or_compute("same", lambda: ({"a": 1}, True)) == ({"a": 1}, False)
    assert 0.2 < time.monotonic() - started < 3
    assert cache.get("same") == {"a": 1}


def test_store_that_cannot_be_opened_fails_open_and_logs_once(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cache = cache_in(blocker)
    with caplog.at_level(logging.WARNING, logger="proxy"):
        assert cache.get("k") is None
        cache.set("k", {"a": 1})  # skipped, does not raise
        assert cache.get_or_compute("k", lambda: ({"answer": 42}, True)) == ({"answer": 42}, False)
    assert len(caplog.records) == 1
    assert f"answer cache: the answer store {blocker}" in caplog.text
    assert cache.describe()["state"] == "failing"


def test_damaged_store_file_fails_open(tmp_path, caplog):
    (tmp_path / FILE_NAME).write_bytes(b"this is not a SQLite database" * 100)
    cache = cache_in(tmp_path)
    with caplog.at_level(logging.WARNING, logger="proxy"):
        assert cache.get_or_compute("k", lambda: ({"answer": 42}, True)) == ({"answer": 42}, False)
    assert "DatabaseError" in caplog.text
    assert cache.describe()["state"] == "failing"


def test_store_that_answers_again_is_logged_once(tmp_path, caplog):
    directory = tmp_path / "later"
    directory.write_text("in the way")
    cache = cache_in(directory)
    with caplog.at_level(logging.INFO, logger="proxy"):
        assert cache.get("k") is None
        directory.unlink()
        assert cache.get("k") is None
        assert cache.get("k") is None
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert caplog.records[1].getMessage() == (
        f"answer cache: the answer store {directory / FILE_NAME} answers again"
    )
