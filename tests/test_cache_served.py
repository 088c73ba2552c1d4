"""The answer cache of the embedded default (no Redis) under gunicorn: both workers share it,
so `cache=yes` answers the same whichever worker takes the call.

Each worker has one thread, so a worker busy with a call accepts no other: calls fired
together land on both workers (the access log names the worker of each request id)."""

from __future__ import annotations

import json
import re
import threading
import uuid

import pytest
import requests

from tests.served import ServedGateway, wait_until

WORKERS = 2
# pid, request id
ACCESS_LINE = re.compile(r'\[(\d+)\] \[INFO\] \[([^\]]+)\] 127\.0\.0\.1 "GET /api HTTP/1\.1" 200 ')


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stub):
    workdir = tmp_path_factory.mktemp("cache-served")
    served = ServedGateway.on_stub(workdir, stub, workers=WORKERS, GUNICORN_THREADS="1")
    served.account = served.flask_json("accounts", "create", "cache")
    served.start()
    yield served
    served.stop()


def o_args_texts(content: str, model: str) -> list[str]:
    """The same `_o_args` written three ways: key order and spacing differ."""
    return [
        json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}),
        json.dumps({"messages": [{"content": content, "role": "user"}], "model": model}),
        f'{{ "messages" : [ {{ "role" : "user", "content" : {json.dumps(content)} }} ],\n'
        f' "model" : "{model}" }}',
    ]


def get(gateway, o_args: str) -> requests.Response:
    """GET /api on a fresh connection (no session: each call is a new TCP connection)."""
    params = {
        "key": gateway.account["key"],
        "secret": gateway.account["secret"],
        "method": "v1/chat/completions",
        "_o_args": o_args,
        "cache": "yes",
    }
    response = requests.get(gateway.base + "/api", params=params, timeout=60)
    assert response.status_code == 200
    return response


def fire_together(gateway, texts: list[str]) -> list[requests.Response]:
    barrier = threading.Barrier(len(texts))
    answers: list = [None] * len(texts)

    def one(index: int) -> None:
        barrier.wait()
        answers[index] = get(gateway, texts[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def workers_of(gateway, answers: list[requests.Response]) -> set[str]:
    """The pids of the workers that answered."""
    request_ids = {answer.headers["X-Request-Id"] for answer in answers}

    def logged() -> dict[str, str]:
        return {rid: pid for pid, rid in ACCESS_LINE.findall(gateway.log_text())}

    wait_until(lambda: request_ids <= set(logged()), message="an access line is missing")
    pids = logged()
    return {pids[rid] for rid in request_ids}


def upstream_calls(stub, content: str) -> int:
    return sum(
        1
        for seen in stub.requests_seen("/v1/chat/completions")
        if (seen["body"] or {}).get("messages", [{}])[0].get("content") == content
    )


def test_second_identical_call_is_a_hit_whichever_worker_answers(gateway, stub):
    content = f"shared cache {uuid.uuid4().hex}"
    texts = o_args_texts(content, "gpt-4o-mini")
    first = get(gateway, texts[0]).json()
    assert (first["error_code"], first["cache"]) == ("0000", 0)
    answers: list[requests.Response] = []
    # Hits are quick: one worker may take a whole burst; fire until both have answered.
    while len(answers) < 200 and len(workers_of(gateway, answers)) < WORKERS:
        answers += fire_together(gateway, [texts[i % len(texts)] for i in range(19)])
    envelopes = [answer.json() for answer in answers]
    assert [e["cache"] for e in envelopes] == [1] * len(envelopes)
    assert all(e["response"] == first["response"] for e in envelopes)
    assert upstream_calls(stub, content) == 1
    assert len(workers_of(gateway, answers)) == WORKERS  # both workers answered hits


def test_identical_concurrent_misses_in_both_workers_make_one_upstream_call(gateway, stub):
    content = f"single flight {uuid.uuid4().hex}"
    texts = o_args_texts(content, "stub-slow")  # the stub holds each answer 0.3 s
    answers = fire_together(gateway, [texts[i % len(texts)] for i in range(4)])
    envelopes = [answer.json() for answer in answers]
    assert sorted(e["cache"] for e in envelopes) == [0, 1, 1, 1]
    assert len({json.dumps(e["response"]) for e in envelopes}) == 1
    assert upstream_calls(stub, content) == 1
    assert len(workers_of(gateway, answers)) == WORKERS
