"""The catalog as a user meets it: gunicorn (2 workers) on a real socket, the bundled stub as
the default upstream and a second stub registered in UPSTREAMS_FILE for qwen-* models, and a
PHP curl client calling every method with a GET URL; an image job submitted, polled and
finished, and one whose worker is killed mid-job ending failed, not stuck."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from stub_upstream import StubServer
from tests.conftest import TINY_PNG_B64
from tests.php_judge import run_php
from tests.served import ServedGateway, wait_until

# One GET per line of stdin ("method <TAB> _o_args JSON"); prints one JSON line per call:
# the error_code and the response, as json_decode gives them.
PHP_CLIENT = r"""<?php
[$_, $base, $key, $secret] = $argv;
while (($line = fgets(STDIN)) !== false) {
    [$method, $args] = explode("\t", rtrim($line, "\n"), 2);
    $url = $base . '/api?key=' . urlencode($key) . '&secret=' . urlencode($secret)
        . '&cache=no&method=' . urlencode($method) . '&_o_args=' . urlencode($args);
    $ch = curl_init($url);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($ch, CURLOPT_TIMEOUT, 60);
    $body = curl_exec($ch);
    if ($body === false || curl_getinfo($ch, CURLINFO_HTTP_CODE) !== 200) { exit(2); }
    $envelope = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
    echo json_encode(['method' => $method, 'error_code' => $envelope['error_code'],
        'reason' => $envelope['reason'], 'response' => $envelope['response']],
        JSON_UNESCAPED_UNICODE), "\n";
}
"""

QWEN_MODELS = ("qwen-plus", "qwen-turbo")


@pytest.fixture(scope="module")
def slow_stub():
    server = StubServer(slow_seconds=60.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def qwen_stub():
    server = StubServer(models=QWEN_MODELS, owned_by="qwen").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, slow_stub, qwen_stub):
    workdir = tmp_path_factory.mktemp("catalog-served")
    upstreams_file = workdir / "upstreams.toml"
    upstreams_file.write_text(
        "[[upstream]]\n"
        'name = "qwen"\n'
        f'base_url = "{qwen_stub.base_url}"\n'
        'api_key_env = "QWEN_API_KEY"\n'
        'models = ["qwen-*"]\n'
        "timeout_seconds = 10\n"
    )
    gateway = ServedGateway.on_stub(
        workdir,
        slow_stub,
        QWEN_API_KEY="sk-qwen-secret",
        UPSTREAMS_FILE=str(upstreams_file),
        UPSTREAM_MAX_RETRIES="0",
        JOB_HEARTBEAT_SECONDS="0.5",
        JOB_STALE_SECONDS="3",
    )
    account = gateway.flask_json("accounts", "create", "php")
    gateway.start()
    yield gateway, account
    gateway.stop()


def php_calls(served, calls: list[tuple[str, dict]]) -> list[dict]:
    gateway, account = served
    stdin = "".join(f"{method}\t{json.dumps(args)}\n" for method, args in calls)
    done = run_php(PHP_CLIENT, stdin.encode(), gateway.base, account["key"], account["secret"])
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def test_a_php_get_client_calls_every_method(served, slow_stub):
    audio = base64.b64encode(b"hello from php").decode()
    calls = [
        ("v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("v1/completions", {"prompt": "hi", "max_tokens": 5}),
        ("v1/edits", {"input": "teh", "instruction": "fix"}),
        ("v1/embeddings", {"input": "hi"}),
        ("v1/moderations", {"input": "hi"}),
        ("v1/images/generations", {"prompt": "向日葵"}),
        ("v1/images/edits", {"image": TINY_PNG_B64, "prompt": "hat"}),
        ("v1/images/variations", {"image": TINY_PNG_B64}),
        ("v1/audio/transcriptions", {"file": audio, "filename": "a.mp3"}),
        ("v1/audio/translations", {"file": audio, "filename": "a.mp3"}),
        ("v1/audio/speech", {"input": "hi", "voice": "alloy"}),
        ("v1/files", {"file": audio, "filename": "a.txt", "purpose": "assistants"}),
        ("v1/files", {"limit": 5}),
    ]
    answers = php_calls(served, calls)
    assert [(a["method"], a["error_code"]) for a in answers] == [
        (method, "0000") for method, _ in calls
    ]
    by_method = {a["method"]: a["response"] for a in answers}
    assert by_method["v1/edits"]["object"] == "edit"
    assert by_method["v1/audio/transcriptions"] == {
        "text": "hello from php",
        "usage": {"type": "duration", "seconds": 1},
    }
    assert by_method["v1/audio/speech"]["mime_type"] == "audio/mpeg"
    file_id = answers[-2]["response"]["id"]
    assert [f["id"] for f in answers[-1]["response"]["data"]] == [file_id]

    by_id = php_calls(
        served,
        [
            ("v1/files/retrieve", {"file_id": file_id}),
            ("v1/files/content", {"file_id": file_id}),
            ("v1/files/delete", {"file_id": file_id}),
            ("v1/files", {"after": "not-a-file"}),
        ],
    )
    assert [a["error_code"] for a in by_id] == ["0000", "0000", "0000", "4015"]
    assert base64.b64decode(by_id[1]["response"]["content"]) == b"hello from php"


def test_models_of_both_upstreams_are_listed_and_qwen_models_reach_the_second(
    served, slow_stub, qwen_stub
):
    listed, chat = php_calls(
        served,
        [
            ("v1/models", {}),
            (
                "v1/chat/completions",
                {"model": "qwen-plus", "messages": [{"role": "user", "content": "你好"}]},
            ),
        ],
    )
    ids = [model["id"] for model in listed["response"]["data"]]
    assert "gpt-4o-mini" in ids and "qwen-plus" in ids and "qwen-turbo" in ids
    assert len(ids) == len(set(ids))
    assert chat["error_code"] == "0000"
    seen = qwen_stub.requests_seen("/v1/chat/completions")
    assert seen[-1]["body"]["model"] == "qwen-plus"
    assert seen[-1]["headers"]["authorization"] == "Bearer sk-qwen-secret"
    assert all(
        entry["body"].get("model") != "qwen-plus"
        for entry in slow_stub.requests_seen("/v1/chat/completions")
    )


def poll(served, imgid: str, until, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        (answer,) = php_calls(served, [("images/get", {"imgid": imgid})])
        if until(answer):
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.3)


def test_an_image_job_is_submitted_polled_and_finished(served):
    (submitted,) = php_calls(served, [("images/submit", {"prompt": "向日葵"})])
    assert submitted["error_code"] == "0000"
    imgid = submitted["response"]["imgid"]
    done = poll(served, imgid, lambda a: a["response"].get("status") == "done", timeout=30)
    assert done["error_code"] == "0000"
    assert done["response"]["progress"] == 100
    assert len(done["response"]["data"]) == 1


def test_a_job_whose_worker_is_killed_mid_job_ends_failed_not_stuck(served):
    gateway, _account = served
    (submitted,) = php_calls(served, [("images/submit", {"prompt": "slow", "model": "stub-slow"})])
    imgid = submitted["response"]["imgid"]
    poll(served, imgid, lambda a: a["response"].get("status") == "running", timeout=30)
    before = set(gateway.worker_pids())
    gateway.kill_workers()  # the job's worker dies with the upstream call in flight
    wait_until(lambda: len(set(gateway.worker_pids()) - before) == 2, timeout=60)
    wait_until(lambda: _healthy(gateway.base), timeout=180)  # new workers boot (see served.py)
    failed = poll(served, imgid, lambda a: a["error_code"] != "0000", timeout=60)
    assert failed["error_code"] == "5000"
    assert failed["response"]["status"] == "failed"
    assert failed["reason"].endswith("submit the job again")
    assert "the worker running this job stopped" in failed["reason"]


def _healthy(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False
