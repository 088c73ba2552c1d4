"""Redis-backed concurrency slots and answer cache, against a real redis-server on loopback
(tests/servers.py): exact limits across threads and processes, slots of dead holders expire,
an outage fails the limiter closed and the cache open, pending releases drain on recovery."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import time
import uuid

import pytest

from proxy.redis_store import (
    LimiterUnavailable,
    RedisAnswerCache,
    RedisConcurrency,
    make_redis_client,
)
from tests.conftest import concurrent_misses
from tests.servers import RedisServer, free_port


@pytest.fixture
def prefix():
    """A key prefix of this test's own, so tests sharing the session server never collide."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def client(redis_server):
    client = make_redis_client(patient_url(redis_server.url))
    yield client
    client.close()


@pytest.fixture
def limiter(client, prefix):
    return RedisConcurrency(client, slot_ttl_seconds=60, prefix=prefix + "slots:")


@pytest.fixture
def cache(client, prefix):
    return RedisAnswerCache(client, ttl_seconds=60, max_entry_bytes=1000, prefix=prefix)


@pytest.fixture
def private_redis():
    """A redis-server of this test's own, to stop and start."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def dead_url():
    """A Redis URL (with a password) where nothing listens: connections are refused."""
    return f"redis://:s3cret-password@127.0.0.1:{free_port()}/0"


def token() -> str:
    return uuid.uuid4().hex


def wait_until(condition, timeout: float) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not true after {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def patient_url(url: str) -> str:
    """The URL with 5 s timeouts: exactness tests must not fail on a loaded machine's 0.5 s
    timeouts (options in the URL override make_redis_client's)."""
    return f"{url}?socket_timeout=5&socket_connect_timeout=5"


def acquire_all_at_once(url: str, prefix: str, threads: int, barrier, limit: int = 5):
    """`threads` threads, each with its own client, acquire together; how many got a slot
    (an error counts as a refusal, so exactness cannot hide one)."""
    clients = [make_redis_client(patient_url(url)) for _ in range(threads)]
    results = []

    def worker(client):
        limiter = RedisConcurrency(client, slot_ttl_seconds=60, prefix=prefix)
        barrier.wait(timeout=30)
        try:
            results.append(limiter.acquire(7, limit, token()))
        except LimiterUnavailable as error:
            results.append(error)

    workers = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    for client in clients:
        client.close()
    assert len(results) == threads and all(isinstance(r, bool) for r in results), results
    return sum(results)


def _acquire_in_child(url, prefix, threads, barrier, counts) -> None:
    try:
        counts.put(acquire_all_at_once(url, prefix, threads, barrier))
    except BaseException as error:  # reported to the parent instead of a silent exit
        counts.put(repr(error))


# -- concurrency slots ---------------------------------------------------------------------


def test_limit_refuses_the_slot_beyond_it_until_one_is_released(limiter):
    first, second = token(), token()
    assert limiter.acquire(1, 2, first)
    assert limiter.acquire(1, 2, second)
    assert not limiter.acquire(1, 2, token())
    assert limiter.in_flight(1) == 2
    limiter.release(1, first)
    assert limiter.acquire(1, 2, token())
    assert limiter.pending_releases == 0


def test_exactly_limit_of_40_simultaneous_threads_get_a_slot(redis_server, prefix, client):
    barrier = threading.Barrier(40)
    assert acquire_all_at_once(redis_server.url, prefix, 40, barrier) == 5
    assert RedisConcurrency(client, slot_ttl_seconds=60, prefix=prefix).in_flight(7) == 5


def test_exactly_limit_of_4_processes_by_10_threads_get_a_slot(redis_server, prefix, client):
    # fork: a spawned child would import the Flask app package again (seconds each)
    context = multiprocessing.get_context("fork")
    barrier, counts = context.Barrier(40), context.Queue()
    children = [
        context.Process(
            target=_acquire_in_child, args=(redis_server.url, prefix, 10, barrier, counts)
        )
        for _ in range(4)
    ]
    for child in children:
        child.start()
    granted = [counts.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert all(isinstance(count, int) for count in granted), granted
    assert sum(granted) == 5
    assert RedisConcurrency(client, slot_ttl_seconds=60, prefix=prefix).in_flight(7) == 5


def test_slot_of_a_holder_that_never_releases_expires(client, prefix):
    limiter = RedisConcurrency(client, slot_ttl_seconds=0.3, prefix=prefix)
    assert limiter.acquire(1, 1, token())  # the holder dies without releasing
    assert not limiter.acquire(1, 1, token())
    time.sleep(0.35)
    assert limiter.in_flight(1) == 0
    assert limiter.acquire(1, 1, token())


def test_idle_account_key_disappears_after_the_slot_ttl(client, prefix):
    limiter = RedisConcurrency(client, slot_ttl_seconds=0.3, prefix=prefix)
    held = token()
    assert limiter.acquire(1, 1, held)
    assert 0 < client.pttl(prefix + "1") <= 300
    limiter.release(1, held)
    time.sleep(0.35)
    assert client.exists(prefix + "1") == 0


def test_slots_of_one_account_do_not_count_for_another(limiter):
    assert limiter.acquire(1, 1, token())
    assert not limiter.acquire(1, 1, token())
    assert limiter.acquire(2, 1, token())
    assert (limiter.in_flight(1), limiter.in_flight(2)) == (1, 1)


def test_outage_fails_acquire_and_the_pending_release_drains_after_restart(private_redis):
    limiter = RedisConcurrency(
        make_redis_client(private_redis.url), slot_ttl_seconds=60, retry_interval_seconds=0.1
    )
    held = token()
    assert limiter.acquire(1, 2, held)
    private_redis.stop(save=True)

    started = time.monotonic()
    with pytest.raises(LimiterUnavailable, match=f"127.0.0.1:{private_redis.port} is unreach"):
        limiter.acquire(1, 2, token())
    failed_after = time.monotonic() - started
    assert failed_after < 3

    limiter.release(1, held)  # does not raise
    assert limiter.pending_releases == 1

    private_redis.start()  # same port, the saved slot is back
    drained_after = wait_until(lambda: limiter.pending_releases == 0, timeout=5)
    assert limiter.in_flight(1) == 0
    print(
        f"\noutage: acquire failed after {failed_after:.3f}s; pending release drained "
        f"{drained_after:.3f}s after the restart"
    )


def test_silent_server_costs_a_call_about_half_a_second(prefix):
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        limiter = RedisConcurrency(make_redis_client(url), slot_ttl_seconds=0.5, prefix=prefix)
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable, match="is unreachable"):
            limiter.acquire(1, 1, token())
        failed_after = time.monotonic() - started
        assert failed_after < 3  # the socket timeout is 0.5 s; generous for a loaded machine
        print(f"\nsilent server: acquire failed after {failed_after:.3f}s")
        # the script may have run with its answer lost: its slot is given back later
        assert limiter.pending_releases == 1


def test_unavailable_message_names_the_address_never_the_password(dead_url):
    limiter = RedisConcurrency(make_redis_client(dead_url), slot_ttl_seconds=60)
    with pytest.raises(LimiterUnavailable) as raised:
        limiter.acquire(1, 1, token())
    assert dead_url.split("@")[1].removesuffix("/0") in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_outage_logs_one_warning_not_one_per_call(dead_url, caplog):
    limiter = RedisConcurrency(make_redis_client(dead_url), slot_ttl_seconds=60)
    with caplog.at_level(logging.WARNING, logger="proxy"):
        for _ in range(3):
            with pytest.raises(LimiterUnavailable):
                limiter.acquire(1, 1, token())
            limiter.release(1, token())
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert "s3cret" not in caplog.text


def test_pending_release_is_dropped_once_its_slot_has_expired_anyway(dead_url):
    limiter = RedisConcurrency(
        make_redis_client(dead_url), slot_ttl_seconds=0.3, retry_interval_seconds=0.05
    )
    limiter.release(1, token())
    assert limiter.pending_releases == 1
    wait_until(lambda: limiter.pending_releases == 0, timeout=5)
    wait_until(lambda: limiter._retrier is None, timeout=5)  # the retrier thread has exited


def test_renewal_keeps_a_live_slot_past_its_ttl_and_puts_back_a_lost_one(client, prefix):
    limiter = RedisConcurrency(client, slot_ttl_seconds=0.5, prefix=prefix)
    held = token()
    assert limiter.acquire(1, 1, held)
    time.sleep(0.3)
    limiter.renew({1: [held]})
    time.sleep(0.3)  # past the first expiry
    assert limiter.in_flight(1) == 1
    client.delete(prefix + "1")
    limiter.renew({1: [held]})
    assert limiter.in_flight(1) == 1


def test_slots_lost_by_a_flush_are_put_back_from_the_live_holders_before_counting(
    private_redis,
):
    live: dict[int, list[str]] = {}
    limiter = RedisConcurrency(
        make_redis_client(private_redis.url), slot_ttl_seconds=60, live_slots=lambda: live
    )
    held = [token(), token()]
    assert all(limiter.acquire(1, 2, one) for one in held)
    live[1] = held  # their reservations
    private_redis.command("FLUSHALL")
    assert not limiter.acquire(1, 2, token())
    assert limiter.in_flight(1) == 2


def test_restart_from_saved_data_puts_back_the_slots_taken_after_the_save(private_redis):
    live: dict[int, list[str]] = {}
    limiter = RedisConcurrency(
        make_redis_client(private_redis.url), slot_ttl_seconds=60, live_slots=lambda: live
    )
    held = [token(), token()]
    assert limiter.acquire(1, 2, held[0])
    private_redis.command("SAVE")
    assert limiter.acquire(1, 2, held[1])
    live[1] = held  # their reservations
    private_redis.stop(save=False)
    private_redis.start()  # with the first slot only
    assert not limiter.acquire(1, 2, token())
    assert limiter.in_flight(1) == 2


# -- answer cache --------------------------------------------------------------------------


def test_cache_round_trip_is_exact_and_stored_as_compact_json(cache, client, prefix):
    value = {"text": "你好 world", "n": [1, 2.5, None, True], "nested": {"a": {"b": ""}}}
    cache.set("k", value)
    assert cache.get("k") == value
    assert client.get(prefix + "k") == (
        '{"text":"你好 world","n":[1,2.5,null,true],"nested":{"a":{"b":""}}}'.encode()
    )
    assert cache.get("missing") is None


def test_cache_entry_expires_after_its_ttl(client, prefix):
    cache = RedisAnswerCache(client, ttl_seconds=1, max_entry_bytes=1000, prefix=prefix)
    cache.set("k", {"a": 1})
    assert cache.get("k") == {"a": 1}
    time.sleep(1.05)
    assert cache.get("k") is None


def test_cache_entry_larger_than_max_bytes_is_not_stored(cache):
    assert cache.max_bytes == 1000
    cache.set("big", {"text": "x" * 1000})
    assert cache.get("big") is None


def test_two_processes_see_each_others_entries(redis_server, prefix):
    one, two = (
        RedisAnswerCache(
            make_redis_client(redis_server.url), ttl_seconds=60, max_entry_bytes=1000, prefix=prefix
        )
        for _ in range(2)
    )
    one.set("k", {"from": "one"})
    assert two.get("k") == {"from": "one"}
    assert two.get_or_compute("k", lambda: pytest.fail("computed")) == ({"from": "one"}, True)


def test_uncacheable_answer_is_returned_not_stored(cache):
    assert cache.get_or_compute("k", lambda: ({"error": 1}, False)) == ({"error": 1}, False)
    assert cache.get("k") is None


def test_cache_fails_open_when_redis_is_down(dead_url, caplog):
    cache = RedisAnswerCache(make_redis_client(dead_url), ttl_seconds=60, max_entry_bytes=1000)
    computed = []

    def compute():
        computed.append(1)
        return {"answer": 42}, True

    with caplog.at_level(logging.WARNING, logger="proxy"):
        assert cache.get("k") is None
        cache.set("k", {"a": 1})  # skipped, does not raise
        assert cache.get_or_compute("k", compute) == ({"answer": 42}, False)
    assert computed == [1]
    assert len(caplog.records) == 1 and "s3cret" not in caplog.text
    assert cache.ping() is False
    assert cache.describe()["state"] == "unreachable"


def test_ping_and_describe_when_reachable(cache):
    assert cache.ping() is True
    assert cache.describe()["state"] == "ok"


def test_identical_concurrent_misses_in_one_process_compute_once(cache):
    calls, results = concurrent_misses([cache] * 6)
    assert calls == 1
    assert sorted(hit for _, hit in results) == [False] + [True] * 5
    assert all(value == {"answer": 1} for value, _ in results)


def test_identical_concurrent_misses_across_processes_compute_once(redis_server, prefix):
    caches = [
        RedisAnswerCache(
            make_redis_client(redis_server.url), ttl_seconds=60, max_entry_bytes=1000, prefix=prefix
        )
        for _ in range(4)
    ]  # four instances: four workers' caches, no shared in-process lock
    calls, results = concurrent_misses(caches)
    assert calls == 1
    assert sorted(hit for _, hit in results) == [False] + [True] * 3


def test_fill_lock_of_a_dead_filler_only_delays_the_others_until_it_expires(client, prefix):
    cache = RedisAnswerCache(
        client, ttl_seconds=60, max_entry_bytes=1000, prefix=prefix, fill_lock_seconds=0.3
    )
    client.set(prefix + "same:fill", "a worker that was killed", px=300)
    started = time.monotonic()
    assert cache.get_or_compute("same", lambda: ({"a": 1}, True)) == ({"a": 1}, False)
    assert 0.2 < time.monotonic() - started < 3
    assert cache.get("same") == {"a": 1}
