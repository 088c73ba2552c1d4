"""GET /metrics in one process (the Flask test client; the stub upstream over real HTTP): who
may read it, what each call adds, and that no label value ever holds a secret or client text.
A gateway under gunicorn, adding up its workers: tests/test_metrics_served.py.

The metrics of one process are shared by every app it builds, so each test compares a scrape
after its calls with one before them."""

from __future__ import annotations

import json
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics
from tests.conftest import CHAT_ARGS, create_account
from tests.served import wait_until

TOKEN = "metrics-token-Zq81"
CHAT_CALL = ("gateway_calls_total", {"door": "api", "method": "v1/chat/completions"})


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} of a Prometheus text answer."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Scraper:
    """GET /metrics with the token; `changes()` says what moved since the last scrape."""

    def __init__(self, client):
        self.client = client
        self.last = self.scrape()

    def text(self) -> str:
        response = self.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        return response.get_data(as_text=True)

    def scrape(self) -> dict:
        return samples(self.text())

    def changes(self) -> dict[tuple[str, frozenset], float]:
        now = self.scrape()
        moved = {key: value - self.last.get(key, 0.0) for key, value in now.items()}
        self.last = now
        return {key: delta for key, delta in moved.items() if delta and "_created" not in key[0]}


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


@pytest.fixture
def app(make_app):
    return make_app(METRICS_TOKEN=TOKEN)


@pytest.fixture
def scraper(client):
    return Scraper(client)


def api_call(client, account, method="v1/chat/completions", o_args=CHAT_ARGS, **params):
    query = {"key": account["key"], "secret": account["secret"], "method": method}
    query["_o_args"] = json.dumps(o_args)
    return client.get("/api", query_string={**query, **params}).get_json()


def bearer(account) -> dict:
    return {"Authorization": f"Bearer {account['key']}:{account['secret']}"}


# -- who may read it


def test_metrics_without_metrics_token_set_is_404(make_app):
    client = make_app().test_client()
    response = client.get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 404


def test_metrics_with_a_wrong_token_is_the_404_of_a_path_that_does_not_exist(client):
    unknown = client.get("/no-such-path")
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert (response.status_code, response.get_json()) == (404, unknown.get_json())


def test_metrics_without_authorization_is_404(client):
    assert client.get("/metrics").status_code == 404


def test_metrics_with_the_token_in_another_scheme_is_404(client):
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 404


def test_metrics_by_another_verb_is_404_not_405(client):
    response = client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert "Allow" not in response.headers


def test_metrics_to_the_token_is_prometheus_text_and_writes_no_usage_row(client, runner):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert "# TYPE gateway_calls_total counter" in response.get_data(as_text=True)
    assert json.loads(runner.invoke(args=["usage", "--json"]).output)["calls"] == 0


def test_metrics_answer_openmetrics_to_a_scraper_that_asks_for_it(client):
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = client.get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}", "Accept": accept}
    )
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    assert response.get_data(as_text=True).endswith("# EOF\n")


# -- what a call adds


def test_a_call_is_counted_by_door_method_code_and_upstream(client, account, scraper):
    assert api_call(client, account, cache="no")["error_code"] == "0000"
    sdk = client.post("/v1/chat/completions", json=CHAT_ARGS, headers=bearer(account))
    assert sdk.status_code == 200
    changes = scraper.changes()
    calls = {k: v for k, v in changes.items() if k[0] == "gateway_calls_total"}
    common = {"method": "v1/chat/completions", "code": "0000", "upstream": "default"}
    assert calls == {
        key("gateway_calls_total", door="api", **common): 1.0,
        key("gateway_calls_total", door="v1", **common): 1.0,
    }


def test_a_method_outside_the_catalog_is_labelled_unknown(client, account, scraper):
    assert api_call(client, account, method="../v1/x")["error_code"] == "4010"
    changes = scraper.changes()
    labels = dict(door="api", method="unknown", code="4010", upstream="")
    assert changes[key("gateway_calls_total", **labels)] == 1.0


def test_a_wrong_secret_is_an_admission_refusal_4005(client, account, scraper):
    assert api_call(client, {**account, "secret": "wrong"})["error_code"] == "4005"
    changes = scraper.changes()
    refusals = {k: v for k, v in changes.items() if k[0] == "gateway_admission_refusals_total"}
    assert refusals == {key("gateway_admission_refusals_total", door="api", code="4005"): 1.0}


def test_a_quota_used_up_is_an_admission_refusal_4013(client, runner, scraper):
    account = create_account(runner, "one-call", "--daily-quota", "1")
    assert api_call(client, account, cache="no")["error_code"] == "0000"
    assert api_call(client, account, cache="no")["error_code"] == "4013"
    changes = scraper.changes()
    refusals = {k: v for k, v in changes.items() if k[0] == "gateway_admission_refusals_total"}
    assert refusals == {key("gateway_admission_refusals_total", door="api", code="4013"): 1.0}


def test_a_param_error_is_not_an_admission_refusal(client, account, scraper):
    assert api_call(client, account, o_args={"messages": "not a list"})["error_code"] == "4003"
    changes = scraper.changes()
    assert not [k for k in changes if k[0] == "gateway_admission_refusals_total"]


def test_tokens_in_and_out_are_the_usage_the_upstream_reported(client, account, scraper):
    envelope = api_call(client, account, o_args={**CHAT_ARGS, "model": "gpt-4o-mini"}, cache="no")
    usage = envelope["response"]["usage"]
    changes = scraper.changes()
    tokens = {k: v for k, v in changes.items() if k[0] == "gateway_tokens_total"}
    assert tokens == {
        key("gateway_tokens_total", model="gpt-4o-mini", direction="in"): usage["prompt_tokens"],
        key("gateway_tokens_total", model="gpt-4o-mini", direction="out"): usage[
            "completion_tokens"
        ],
    }


def test_a_model_outside_the_configured_ones_is_labelled_other(client, account, scraper):
    envelope = api_call(client, account, o_args={**CHAT_ARGS, "model": "gpt-4o"}, cache="no")
    assert envelope["error_code"] == "0000"
    tokens = [k for k in scraper.changes() if k[0] == "gateway_tokens_total"]
    assert {dict(labels)["model"] for _, labels in tokens} == {"other"}


def test_metrics_models_names_a_model_in_the_labels(make_app, scraper):
    app = make_app(METRICS_TOKEN=TOKEN, METRICS_MODELS="gpt-4o, qwen-max")
    account = create_account(app.test_cli_runner())
    api_call(app.test_client(), account, o_args={**CHAT_ARGS, "model": "gpt-4o"}, cache="no")
    tokens = [k for k in scraper.changes() if k[0] == "gateway_tokens_total"]
    assert {dict(labels)["model"] for _, labels in tokens} == {"gpt-4o"}


def test_a_cache_miss_then_hit_are_counted_and_the_hit_adds_no_tokens(client, account, scraper):
    assert api_call(client, account)["cache"] == 0
    first = scraper.changes()
    assert api_call(client, account)["cache"] == 1
    second = scraper.changes()
    lookups = "gateway_cache_lookups_total"
    assert first[key(lookups, method="v1/chat/completions", result="miss")] == 1.0
    assert second[key(lookups, method="v1/chat/completions", result="hit")] == 1.0
    assert not [k for k in second if k[0] == "gateway_tokens_total"]


def test_a_call_with_cache_no_is_no_cache_lookup(client, account, scraper):
    api_call(client, account, cache="no")
    assert not [k for k in scraper.changes() if k[0] == "gateway_cache_lookups_total"]


def test_overhead_is_observed_for_every_call_and_upstream_wait_only_off_the_cache(
    client, account, scraper
):
    api_call(client, account)  # a miss: the upstream answers
    api_call(client, account)  # a hit: no upstream
    changes = scraper.changes()
    assert changes[key("gateway_overhead_seconds_count", door="api")] == 2.0
    assert changes[key("gateway_upstream_seconds_count", upstream="default")] == 1.0


def test_overhead_leaves_out_the_upstreams_wait(client, account, scraper):
    slow = {**CHAT_ARGS, "model": "stub-slow"}  # the stub sleeps 0.3 s
    assert api_call(client, account, o_args=slow, cache="no")["error_code"] == "0000"
    changes = scraper.changes()
    assert changes[key("gateway_upstream_seconds_sum", upstream="default")] >= 0.3
    assert changes[key("gateway_overhead_seconds_sum", door="api")] < 0.3


def test_a_stream_is_counted_once_with_its_tokens(client, account, scraper):
    body = {**CHAT_ARGS, "model": "gpt-4o-mini", "stream": True}
    answer = client.post("/v1/chat/completions", json=body, headers=bearer(account))
    assert answer.get_data(as_text=True).endswith("data: [DONE]\n\n")
    changes = scraper.changes()
    labels = dict(door="v1", method="v1/chat/completions", code="0000", upstream="default")
    assert changes[key("gateway_calls_total", **labels)] == 1.0
    assert changes[key("gateway_overhead_seconds_count", door="v1")] == 1.0
    assert changes[key("gateway_tokens_total", model="gpt-4o-mini", direction="out")] > 0


def test_a_call_under_way_is_in_flight_until_it_is_settled(client, app, account, scraper):
    in_flight = key("gateway_calls_in_flight", door="api")
    slow = {**CHAT_ARGS, "model": "stub-slow"}
    call = threading.Thread(
        target=api_call,
        args=(app.test_client(), account, "v1/chat/completions", slow),
        kwargs={"cache": "no"},
    )
    call.start()
    wait_until(lambda: scraper.scrape().get(in_flight) == 1.0, message="never in flight")
    call.join()
    assert scraper.scrape()[in_flight] == 0.0


# -- what the upstream pools report (proxy/metrics.py: failover, cooldown)


def test_a_failover_is_counted_by_the_member_that_failed(scraper):
    metrics.failover("qwen#2")
    assert scraper.changes() == {key("gateway_failovers_total", upstream="qwen#2"): 1.0}


def test_the_pools_failed_attempts_and_cooldowns_reach_the_metrics(scraper):
    from proxy import upstream_events

    upstream_events.attempt_failed("qwen#2", "http 500")
    upstream_events.cooled("qwen#2")
    assert scraper.changes() == {
        key("gateway_failovers_total", upstream="qwen#2"): 1.0,
        key("gateway_cooldowns_total", upstream="qwen#2"): 1.0,
    }


def test_a_cooldown_is_counted_by_upstream(scraper):
    metrics.cooldown("qwen-a")
    assert scraper.changes() == {key("gateway_cooldowns_total", upstream="qwen-a"): 1.0}


def test_an_upstream_name_that_is_not_a_configured_name_is_labelled_unknown(scraper):
    metrics.cooldown("https://sk-live-123@example.com")
    assert scraper.changes() == {key("gateway_cooldowns_total", upstream="unknown"): 1.0}


# -- no label value ever holds a secret or what a client typed


def test_no_label_value_holds_a_secret_or_client_text(make_app, stub, runner):
    canary = "canary7f3e"
    app = make_app(METRICS_TOKEN=TOKEN, OPENAI_API_KEY=f"sk-{canary}-upstream")
    client, account = app.test_client(), create_account(app.test_cli_runner())
    sneaky = {**CHAT_ARGS, "model": f"gpt-{canary}", "user": canary}
    api_call(client, account, o_args=sneaky, cache="no")
    api_call(client, account, method=f"v1/{canary}")
    api_call(client, {**account, "secret": f"{canary}-secret"})
    api_call(client, {"key": f"{canary}-key", "secret": "x"})
    client.post(f"/v1/{canary}", json=sneaky, headers=bearer(account))
    client.post("/v1/chat/completions", json=sneaky, headers={"Authorization": f"Bearer {canary}"})
    text = Scraper(client).text()
    label_values = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert [v for v in label_values if canary in v] == []
    assert canary not in text
    for secret in (account["key"], account["secret"], TOKEN):
        assert secret not in text


# -- pure logic


def test_a_metric_that_cannot_be_written_is_logged_and_the_call_goes_on(monkeypatch, caplog):
    def unwritable(*labels):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.CALLS, "labels", unwritable)
    usage = {"prompt_tokens": 1}
    metrics.call_settled(
        **dict(door="api", method="unknown", code="4010", upstream="", model=""),
        **dict(usage=usage, overhead_seconds=0.001, upstream_seconds=None, cache_result=None),
    )
    assert "metrics: call_settled failed; the call goes on uncounted" in caplog.text


def test_model_labels_name_defaults_listed_and_exact_upstream_patterns_only():
    config = {"DEFAULT_MODELS": {"v1/chat/completions": "gpt-4o-mini"}, "METRICS_MODELS": "a, b"}
    labels = metrics.ModelLabels.from_config(config, ["qwen-*", "deepseek-chat"])
    assert [labels.label(m) for m in ("gpt-4o-mini", "a", "deepseek-chat", "qwen-max", None)] == [
        "gpt-4o-mini",
        "a",
        "deepseek-chat",
        "other",
        "",
    ]
