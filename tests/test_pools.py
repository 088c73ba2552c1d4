"""Pools of upstream members: failover, cooldown, revoked keys, reload and what operators see,
through the app (Flask test client) against real stub upstreams over HTTP: one failing on
demand (its fault switch), one healthy, and a dead port."""

from __future__ import annotations

import json
import logging

import pytest

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS, create_account
from tests.served import wait_until
from tests.servers import free_port

POOL_KEY = "sk-pool-member-secret-42"
FLAKY_KEY = "sk-flaky-member-secret-43"


@pytest.fixture(scope="module")
def flaky():
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def good():
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _members(monkeypatch, flaky, good):
    monkeypatch.setenv("POOL_KEY", POOL_KEY)
    monkeypatch.setenv("FLAKY_KEY", FLAKY_KEY)
    for stub in (flaky, good):
        stub.reset()
        stub.set_fault(None)
    yield
    flaky.set_fault(None)


def member(name, base_url, *, priority=0, weight=1, key_env="POOL_KEY", models='["pool-*"]'):
    return (
        f'[[upstream]]\nname = "{name}"\nbase_url = "{base_url}"\napi_key_env = "{key_env}"\n'
        f"models = {models}\npriority = {priority}\nweight = {weight}\n"
    )


@pytest.fixture
def pooled(tmp_path, make_app, flaky, good):
    """An app whose model `pool-chat` is served by `flaky` first (priority 0), `good` as
    the fallback (priority 1); returns (app, client, account)."""

    def _pooled(text=None, **overrides):
        text = text or member("flaky", flaky.base_url, key_env="FLAKY_KEY") + member(
            "good", good.base_url, priority=1
        )
        path = tmp_path / "upstreams.toml"
        path.write_text(text, encoding="utf-8")
        settings = {"UPSTREAM_COOLDOWN_FAILURES": 2, "UPSTREAM_COOLDOWN_SECONDS": 60.0}
        app = make_app(UPSTREAMS_FILE=str(path), **{**settings, **overrides})
        app.extensions["gateway"].dispatcher.router.reload_check_seconds = 0
        return app, app.test_client(), create_account(app.test_cli_runner())

    return _pooled


def chat(client, account, model="pool-chat", **params):
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps({**CHAT_ARGS, "model": model}),
        "cache": "no",
        **params,
    }
    response = client.get("/api", query_string=query)
    return response, response.get_json()


def chat_requests(stub) -> int:
    return len(stub.requests_seen("/v1/chat/completions"))


def usage_rows(app) -> list[dict]:
    from sqlalchemy import select

    from proxy import storage

    gateway = app.extensions["gateway"]
    with gateway.engine.connect() as connection:
        rows = connection.execute(select(storage.usage).order_by(storage.usage.c.id))
        return [dict(row._mapping) for row in rows]


# ---- the file: pools, keys, weights, priorities


def test_tables_sharing_the_pattern_a_model_matches_form_its_pool(pooled, flaky, good):
    app, _, _ = pooled()
    router = app.extensions["gateway"].dispatcher.router
    assert [m.name for m in router.pool("pool-chat")] == ["flaky", "good"]


def test_api_key_envs_makes_one_member_per_key(pooled, good):
    app, _, _ = pooled(
        member("keys", good.base_url).replace(
            'api_key_env = "POOL_KEY"', 'api_key_envs = ["POOL_KEY", "FLAKY_KEY"]'
        )
    )
    pool = app.extensions["gateway"].dispatcher.router.pool("pool-chat")
    assert [(m.name, m.api_key) for m in pool] == [("keys#1", POOL_KEY), ("keys#2", FLAKY_KEY)]


def test_both_api_key_env_and_api_key_envs_is_refused(pooled, good):
    text = member("keys", good.base_url) + 'api_key_envs = ["POOL_KEY"]\n'
    with pytest.raises(ValueError, match="give api_key_env .* or api_key_envs .*, not both"):
        pooled(text)


def test_weight_zero_is_refused_with_the_fix(pooled, good):
    with pytest.raises(ValueError, match="'w': weight must be a number above 0, e.g. weight = 2"):
        pooled(member("w", good.base_url, weight=0))


def test_calls_spread_over_members_of_one_priority_by_weight(pooled, flaky, good):
    app, client, account = pooled(
        member("flaky", flaky.base_url, weight=1) + member("good", good.base_url, weight=3)
    )
    served = [chat(client, account)[0].headers["X-Upstream"] for _ in range(40)]
    assert set(served) == {"flaky", "good"}
    assert served.count("good") > served.count("flaky")


# ---- failover


def test_a_dead_member_is_failed_over_and_the_call_answers_0000(pooled, good):
    app, client, account = pooled(
        member("dead", f"http://127.0.0.1:{free_port()}/v1")
        + member("good", good.base_url, priority=1)
    )
    response, envelope = chat(client, account)
    assert (envelope["error_code"], response.headers["X-Upstream"]) == ("0000", "good")


def test_a_failed_over_call_is_charged_once_with_one_usage_row(pooled, flaky, good):
    flaky.set_fault("500")
    app, client, account = pooled()
    _, envelope = chat(client, account)
    rows = usage_rows(app)
    assert envelope["api_info"].startswith("today:1 ")
    assert [(r["error_code"], r["charged"], r["upstream"]) for r in rows] == [
        ("0000", True, "good")
    ]
    assert (chat_requests(flaky), chat_requests(good)) == (1, 1)


def test_429_from_a_member_is_failed_over(pooled, flaky, good):
    flaky.set_fault("429")
    _, client, account = pooled()
    response, envelope = chat(client, account)
    assert (envelope["error_code"], response.headers["X-Upstream"]) == ("0000", "good")


def test_a_callers_fault_is_not_retried_on_another_member(pooled, flaky, good):
    _, client, account = pooled()
    response = client.get(
        "/api",
        query_string={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/moderations",
            "_o_args": json.dumps({"model": "pool-mod", "input": []}),  # the stub's 400
        },
    )
    assert response.get_json()["error_code"] == "4003"
    seen = [len(stub.requests_seen("/v1/moderations")) for stub in (flaky, good)]
    assert seen == [1, 0]


def test_every_member_failing_answers_the_last_failure(pooled, flaky, good):
    flaky.set_fault("500")
    good.set_fault("500")
    app, client, account = pooled()
    response, envelope = chat(client, account)
    assert envelope["error_code"] == "4002"
    assert "X-Upstream" not in response.headers
    assert (chat_requests(flaky), chat_requests(good)) == (1, 1)
    assert usage_rows(app)[-1]["upstream"] is None


def test_the_openai_door_names_the_member_that_answered(pooled, flaky, good):
    flaky.set_fault("500")
    _, client, account = pooled()
    response = client.post(
        "/v1/chat/completions",
        json={**CHAT_ARGS, "model": "pool-chat"},
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
    )
    assert (response.status_code, response.headers["X-Upstream"]) == (200, "good")


def test_a_member_is_never_named_by_its_key(pooled, flaky, good):
    app, client, account = pooled()
    response, _ = chat(client, account)
    assert POOL_KEY not in str(response.headers) and FLAKY_KEY not in str(response.headers)


# ---- cooldown


def test_a_failing_member_stops_being_tried_after_the_threshold(pooled, flaky, good):
    flaky.set_fault("500")
    _, client, account = pooled()
    codes = [chat(client, account)[1]["error_code"] for _ in range(5)]
    assert codes == ["0000"] * 5
    assert (chat_requests(flaky), chat_requests(good)) == (2, 5)  # UPSTREAM_COOLDOWN_FAILURES


def test_a_cooled_member_comes_back_after_its_probe_succeeds(pooled, flaky, good):
    flaky.set_fault("500")
    _, client, account = pooled(UPSTREAM_COOLDOWN_SECONDS=0.2)
    for _ in range(2):
        chat(client, account)
    flaky.set_fault(None)  # recovered
    wait_until(lambda: chat(client, account)[0].headers["X-Upstream"] == "flaky", timeout=5)
    served = [chat(client, account)[0].headers["X-Upstream"] for _ in range(3)]
    assert served == ["flaky"] * 3


def test_a_failed_probe_cools_the_member_again_at_once(pooled, flaky, good):
    flaky.set_fault("500")
    app, client, account = pooled(UPSTREAM_COOLDOWN_SECONDS=0.2)
    for _ in range(2):
        chat(client, account)
    health = app.extensions["gateway"].dispatcher.failover.health
    wait_until(lambda: health.states(["flaky"])["flaky"].state == "half-open", timeout=5)
    chat(client, account)  # the probe, failing
    assert health.states(["flaky"])["flaky"].state == "cooling"
    assert chat_requests(flaky) == 3


def test_a_refused_key_takes_its_member_out_and_is_logged_once(pooled, flaky, good, caplog):
    flaky.set_fault("401")
    _, client, account = pooled()
    with caplog.at_level(logging.ERROR, logger="proxy"):
        served = [chat(client, account)[0].headers["X-Upstream"] for _ in range(3)]
    assert served == ["good"] * 3
    assert chat_requests(flaky) == 1
    refused = [r.getMessage() for r in caplog.records if "UPSTREAM KEY REFUSED" in r.getMessage()]
    assert len(refused) == 1 and "flaky" in refused[0]
    assert FLAKY_KEY not in caplog.text


def test_a_member_alone_in_its_pool_is_called_even_while_cooling(pooled, flaky):
    flaky.set_fault("500")
    _, client, account = pooled(member("flaky", flaky.base_url))
    codes = [chat(client, account)[1]["error_code"] for _ in range(3)]
    flaky.set_fault(None)
    assert codes == ["4002"] * 3
    assert chat(client, account)[1]["error_code"] == "0000"


# ---- streams


def test_a_stream_fails_over_before_its_first_chunk(pooled, flaky, good):
    flaky.set_fault("500")
    _, client, account = pooled()
    response = client.post(
        "/v1/chat/completions",
        json={**CHAT_ARGS, "model": "pool-chat", "stream": True},
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
    )
    events = response.get_data(as_text=True).split("\n\n")
    assert response.headers["X-Upstream"] == "good"
    assert events[-2] == "data: [DONE]" and '"error"' not in response.get_data(as_text=True)


def test_a_stream_broken_after_its_first_chunk_is_not_sent_again(pooled, good):
    breaking = StubServer(stream_slow_delay=0.2).start()
    try:
        app, client, account = pooled(
            member("breaking", breaking.base_url, models='["stub-stream-slow"]')
            + member("good", good.base_url, priority=1, models='["stub-stream-slow"]')
        )
        response = client.post(
            "/v1/chat/completions",
            json={**CHAT_ARGS, "model": "stub-stream-slow", "stream": True},
            headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
            buffered=False,
        )
        body = iter(response.response)
        first = next(body)
        breaking.stop()  # cuts the stream after its first chunk reached the client
        rest = b"".join(body).decode()
    finally:
        breaking.stop()
    assert b'"chat.completion.chunk"' in first
    assert '"code": "4001"' in rest and rest.endswith("data: [DONE]\n\n")
    assert chat_requests(good) == 0
    assert [(r["error_code"], r["charged"]) for r in usage_rows(app)] == [("4001", False)]


# ---- reload, list, health


def test_flask_upstreams_reload_is_taken_by_the_running_app(pooled, flaky, good, tmp_path):
    app, client, account = pooled(member("flaky", flaky.base_url))
    (tmp_path / "upstreams.toml").write_text(member("good", good.base_url), encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["upstreams", "reload", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["members"] == ["default", "good"]
    assert chat(client, account)[0].headers["X-Upstream"] == "good"


def test_a_bad_file_is_refused_by_reload_and_the_old_one_stays(pooled, flaky, tmp_path):
    app, client, account = pooled(member("flaky", flaky.base_url))
    (tmp_path / "upstreams.toml").write_text(member("bad", "ftp://x/v1"), encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["upstreams", "reload"])
    assert result.exit_code == 1
    assert "refused, the workers keep the upstreams they have:" in result.output
    assert "base_url 'ftp://x/v1' must be an http:// or https:// URL" in result.output
    assert chat(client, account)[0].headers["X-Upstream"] == "flaky"


def test_flask_upstreams_reload_writes_its_audit_row_as_cli(pooled, flaky, good, tmp_path):
    app, _, _ = pooled(member("flaky", flaky.base_url))
    path = tmp_path / "upstreams.toml"
    path.write_text(member("good", good.base_url), encoding="utf-8")
    runner = app.test_cli_runner()
    runner.invoke(args=["upstreams", "reload"])
    row = json.loads(runner.invoke(args=["audit", "--json"]).output)["audit"][0]
    assert (row["who"], row["action"], row["target"], row["detail"]) == (
        "cli",
        "upstreams.reload",
        str(path),
        "generation=1 members=default,good",
    )


def test_flask_upstreams_reload_without_upstreams_file_says_there_is_nothing_to_reload(app):
    result = app.test_cli_runner().invoke(args=["upstreams", "reload"])
    assert result.exit_code == 1
    assert "UPSTREAMS_FILE is not set, so there is nothing to reload" in result.output


def test_a_worker_keeps_its_upstreams_when_the_reloaded_file_is_bad(pooled, flaky, tmp_path):
    from proxy import generations

    app, client, account = pooled(member("flaky", flaky.base_url))
    (tmp_path / "upstreams.toml").write_text("not toml [", encoding="utf-8")
    generations.bump(app.extensions["gateway"].engine, generations.UPSTREAMS)
    response, envelope = chat(client, account)
    assert (envelope["error_code"], response.headers["X-Upstream"]) == ("0000", "flaky")


def test_upstreams_list_json_shows_members_weights_and_health_never_keys(pooled, flaky, good):
    flaky.set_fault("500")
    app, client, account = pooled(REDIS_URL="")
    for _ in range(2):
        chat(client, account)
    health = app.extensions["gateway"].dispatcher.failover.health
    result = app.test_cli_runner().invoke(args=["upstreams", "list", "--json"])
    members = json.loads(result.output)["members"]
    assert [(m["name"], m["priority"], m["weight"], m["state"]) for m in members] == [
        ("default", 0, 1, "unknown"),  # without Redis each worker keeps its own health
        ("flaky", 0, 1, "unknown"),
        ("good", 1, 1, "unknown"),
    ]
    assert health.states(["flaky"])["flaky"].state == "cooling"
    assert POOL_KEY not in result.output and FLAKY_KEY not in result.output


def test_health_shows_each_members_state_never_its_key(pooled, flaky, good):
    flaky.set_fault("500")
    app, client, account = pooled()
    for _ in range(2):
        chat(client, account)
    response = client.get("/health")
    members = {m["name"]: m for m in response.get_json()["upstreams"]}
    assert members["flaky"]["state"] == "cooling"
    assert members["flaky"]["cooldown_remaining_seconds"] > 50
    assert (members["good"]["state"], members["good"]["models"]) == ("healthy", ["pool-*"])
    assert POOL_KEY not in response.get_data(as_text=True)


def test_the_deadline_bounds_every_attempt_of_a_call(pooled, flaky, good):
    app, client, account = pooled(
        member("flaky", flaky.base_url, models='["stub-hang"]')
        + member("good", good.base_url, models='["stub-hang"]'),
        UPSTREAM_DEADLINE_SECONDS=0.5,  # below the members' 5 s timeout
    )
    _, envelope = chat(client, account, model="stub-hang")
    assert envelope["error_code"] == "4017"
    assert chat_requests(flaky) + chat_requests(good) == 1  # no time was left for another


def test_the_usage_row_names_the_member_on_each_database(make_app_each_database, tmp_path, good):
    path = tmp_path / "upstreams.toml"
    path.write_text(member("good", good.base_url), encoding="utf-8")
    app = make_app_each_database(UPSTREAMS_FILE=str(path))
    account = create_account(app.test_cli_runner())
    chat(app.test_client(), account)
    report = app.test_cli_runner().invoke(args=["usage", "--json"])
    assert [r["upstream"] for r in usage_rows(app)] == ["good"]
    assert json.loads(report.output)["by_upstream"] == {"good": 1}


# ---- the circuits in Redis, shared; a Redis outage falls back to this process


def test_two_workers_circuits_in_redis_are_one(redis_server):
    from proxy.redis_circuits import RedisCircuits
    from proxy.redis_store import make_redis_client
    from proxy.upstream_health import MemoryCircuits, UpstreamHealth

    def worker():
        store = RedisCircuits(make_redis_client(redis_server.url), fallback=MemoryCircuits())
        return UpstreamHealth(store, failures=2, cooldown_seconds=60)

    first, second = worker(), worker()
    first.failed("shared-member")
    second.failed("shared-member")
    assert first.states(["shared-member"])["shared-member"].state == "cooling"
    first.succeeded("shared-member")
    assert second.states(["shared-member"])["shared-member"].state == "healthy"


def test_a_redis_outage_falls_back_to_this_process_and_warns_once(caplog):
    from proxy.redis_circuits import RedisCircuits
    from proxy.redis_store import make_redis_client
    from proxy.upstream_health import MemoryCircuits, UpstreamHealth

    client = make_redis_client(f"redis://127.0.0.1:{free_port()}/0", 0.2)  # nothing there
    health = UpstreamHealth(RedisCircuits(client, fallback=MemoryCircuits()), failures=2)
    with caplog.at_level(logging.WARNING, logger="proxy"):
        health.failed("lonely")
        health.failed("lonely")
        state = health.states(["lonely"])["lonely"].state
    assert state == "cooling"
    assert len([r for r in caplog.records if "upstream health" in r.getMessage()]) == 1
