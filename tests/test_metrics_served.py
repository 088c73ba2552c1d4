"""GET /metrics of a gateway under gunicorn (config/gunicorn.conf.py, two workers of two
threads): the counters add up every worker's calls, whichever worker answers the scrape; an
earlier run's values in PROMETHEUS_MULTIPROC_DIR are not added; a killed worker's calls stop
being in flight."""

from __future__ import annotations

import json
import re
import threading

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway, wait_until
from tests.test_metrics import samples

WORKERS, THREADS = 2, 2
TOKEN = "served-metrics-token-4b1c"
# An access line of a GET /api: (pid, request id).
API_ACCESS = re.compile(
    r"^\[[^]]+\] \[(\d+)\] \[INFO\] \[(gw-1\.[0-9a-f]{16})\] 127\.0\.0\.1 \"GET /api ", re.MULTILINE
)
CHAT = {"method": "v1/chat/completions", "upstream": "default"}


@pytest.fixture(scope="module")
def slow_stub():
    server = StubServer(slow_seconds=0.5, hang_seconds=30.0).start()
    yield server
    server.stop()  # wakes a call still hanging


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, slow_stub):
    workdir = tmp_path_factory.mktemp("metrics")
    folder = workdir / "metrics-values"
    folder.mkdir()
    plant_earlier_runs_count(folder, 1000)
    served = ServedGateway.on_stub(
        workdir,
        slow_stub,
        workers=WORKERS,
        GUNICORN_THREADS=str(THREADS),
        METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(folder),
    )
    served.account = served.flask_json("accounts", "create", "scraped")
    served.start()
    yield served
    served.stop()


def plant_earlier_runs_count(folder, count: float) -> None:
    """A value file as a worker of an earlier gunicorn run left it: `count` chat calls."""
    values = MmapedDict(str(folder / "counter_999999.db"))
    labels = ("door", "method", "code", "upstream")
    row = ("api", "v1/chat/completions", "0000", "default")
    values.write_value(mmap_key("gateway_calls", "gateway_calls_total", labels, row, ""), count, 0)
    values.close()


def scrape(gateway) -> dict:
    response = requests.get(
        gateway.base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert response.status_code == 200
    return samples(response.text)


def calls_total(gateway, door: str, code: str, **labels) -> float:
    key = ("gateway_calls_total", frozenset({"door": door, "code": code, **CHAT, **labels}.items()))
    return scrape(gateway).get(key, 0.0)


def api_get(gateway, model: str = "stub-slow", **params):
    query = {
        "key": gateway.account["key"],
        "secret": gateway.account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps({**CHAT_ARGS, "model": model}),
        "cache": "no",
        **params,
    }
    return requests.get(gateway.base + "/api", params=query, timeout=60)


def slow_calls_at_once(gateway, count: int) -> list[str]:
    """`count` stub-slow /api calls released together; their request ids."""
    barrier = threading.Barrier(count)
    request_ids = [""] * count

    def one(index: int) -> None:
        barrier.wait()
        response = api_get(gateway)
        assert response.json()["error_code"] == "0000"
        request_ids[index] = response.headers["X-Request-Id"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return request_ids


def test_the_counters_add_up_the_calls_of_every_worker(gateway):
    request_ids = slow_calls_at_once(gateway, 2 * WORKERS * THREADS)
    refused = api_get(gateway, secret="wrong").json()
    sdk = requests.post(
        gateway.base + "/v1/chat/completions",
        json=CHAT_ARGS,
        headers={"Authorization": f"Bearer {gateway.account['key']}:{gateway.account['secret']}"},
        timeout=60,
    )
    assert (refused["error_code"], sdk.status_code) == ("4005", 200)
    wait_until(lambda: set(request_ids) <= set(workers_of(gateway)), message="no access line")
    served_by = {workers_of(gateway)[rid] for rid in request_ids}
    assert len(served_by) == WORKERS  # the calls were spread over both workers
    for _ in range(4):  # each scrape, whichever worker answers it, adds up both
        found = scrape(gateway)
        assert found[("gateway_calls_total", labels("api", "0000"))] == 2 * WORKERS * THREADS
        assert found[("gateway_calls_total", labels("v1", "0000"))] == 1
        assert found[("gateway_calls_total", labels("api", "4005", upstream=""))] == 1
        refusals = frozenset({"door": "api", "code": "4005"}.items())
        assert found[("gateway_admission_refusals_total", refusals)] == 1
        overhead = frozenset({"door": "api"}.items())
        assert found[("gateway_overhead_seconds_count", overhead)] == 2 * WORKERS * THREADS + 1


def labels(door: str, code: str, **extra: str) -> frozenset:
    return frozenset({"door": door, "code": code, **CHAT, **extra}.items())


def workers_of(gateway) -> dict[str, str]:
    """request id -> pid of the worker that served it (its access line)."""
    return {request_id: pid for pid, request_id in API_ACCESS.findall(gateway.log_text())}


def test_metrics_of_a_served_gateway_without_the_token_is_404(gateway):
    assert requests.get(gateway.base + "/metrics", timeout=30).status_code == 404


def test_a_killed_workers_call_is_no_longer_in_flight_and_its_counts_stay(gateway):
    in_flight = ("gateway_calls_in_flight", frozenset({"door": "api"}.items()))
    counted = calls_total(gateway, "api", "0000")
    cut: list[str] = []
    hanging = threading.Thread(target=_call_cut_by_the_kill, args=(gateway, cut))
    hanging.start()
    wait_until(lambda: scrape(gateway).get(in_flight) == 1.0, message="never in flight")
    old_workers = set(gateway.worker_pids())
    gateway.kill_workers()
    wait_until(
        lambda: _new_workers_serve(gateway, old_workers), timeout=120, message="no new workers"
    )
    hanging.join()
    assert cut == ["no answer"]
    after = scrape(gateway)
    assert after.get(in_flight, 0.0) == 0.0
    assert after.get(("gateway_calls_total", labels("api", "0000")), 0.0) == counted


def _call_cut_by_the_kill(gateway, outcome: list[str]) -> None:
    try:
        outcome.append(api_get(gateway, model="stub-hang").text)
    except requests.RequestException:
        outcome.append("no answer")


def _new_workers_serve(gateway, old_workers: set[int]) -> bool:
    pids = set(gateway.worker_pids())
    if len(pids) != WORKERS or pids & old_workers:
        return False
    try:
        return requests.get(gateway.base + "/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False
