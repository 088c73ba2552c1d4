"""Token prices per model (PRICES_FILE): admission reserves the most a call may cost, settlement
charges what the upstream reported and gives back the rest; whole credits, rounded up per call;
flat per-method prices stay for models without a price."""

from __future__ import annotations

import io
import json
from fractions import Fraction

import pytest
from sqlalchemy import select

from proxy import storage
from proxy.prices import ModelPrice, PriceTable
from tests.conftest import CHAT_ARGS, create_account

PRICES = """
[models."gpt-4o-mini"]
prompt_per_million = 1000000
completion_per_million = 2000000

[models."gpt-4o*"]
prompt_per_million = 5

[models."dall-e-*"]
per_image = 40

[models."whisper-*"]
per_audio_second = 2
"""


# -- the price rules (pure) -----------------------------------------------------------------


def test_a_priced_call_rounds_up_to_a_whole_credit_once():
    price = ModelPrice("m", prompt_per_million=Fraction(1), completion_per_million=Fraction(1))
    assert price.cost(prompt_tokens=1, completion_tokens=1) == 1  # 2 millionths: 1 credit
    assert price.cost(prompt_tokens=1_000_000, completion_tokens=0) == 1
    assert price.cost(prompt_tokens=1_000_001, completion_tokens=0) == 2


def test_an_exact_name_wins_then_the_first_pattern_in_file_order(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    table = PriceTable.load(str(path))
    assert table.for_model("gpt-4o-mini").prompt_per_million == 1_000_000
    assert table.for_model("gpt-4o").prompt_per_million == 5
    assert table.for_model("tts-1") is None


def test_an_unknown_field_in_the_prices_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[models."m"]\nper_token = 3\n')
    with pytest.raises(ValueError, match=r'\[models."m"\] has per_token; known fields: '):
        PriceTable.load(str(path))


# -- through the app ------------------------------------------------------------------------


@pytest.fixture
def priced_app(make_app, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return make_app(PRICES_FILE=str(path))


def call(client, account, o_args=None, **params) -> dict:
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(o_args or {**CHAT_ARGS, "max_tokens": 20}),
        "cache": "no",
        **params,
    }
    return client.get("/api", query_string=query).get_json()


def balance(runner, account) -> int:
    shown = runner.invoke(args=["accounts", "show", account["key"], "--json"]).output
    return json.loads(shown)["balance"]


def usage_rows(app):
    with app.extensions["gateway"].engine.connect() as connection:
        return connection.execute(select(storage.usage).order_by(storage.usage.c.id)).all()


def test_a_call_is_charged_its_reported_tokens_and_the_rest_given_back(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "100000")
    answer = call(client, account)
    assert answer["error_code"] == "0000"
    row = usage_rows(priced_app)[0]
    cost = row.prompt_tokens + 2 * row.completion_tokens
    assert row.completion_tokens > 0 and row.credits == cost
    assert balance(runner, account) == 100000 - cost
    assert answer["api_info"].endswith(f";credits:{cost}")


def test_a_stream_is_charged_from_its_usage_chunk(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "100000")
    streamed = {**CHAT_ARGS, "max_tokens": 20, "stream": True}
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(streamed),
    }
    client.get("/api", query_string=query).get_data()
    row = usage_rows(priced_app)[0]
    cost = row.prompt_tokens + 2 * row.completion_tokens
    assert (row.error_code, row.charged) == ("0000", True)
    assert row.completion_tokens > 0 and row.credits == cost
    assert balance(runner, account) == 100000 - cost


def test_admission_refuses_a_call_whose_most_is_over_the_balance(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "100")
    refused = call(client, account, {**CHAT_ARGS, "max_tokens": 500}, lang="en")
    assert refused["error_code"] == "4016"
    assert (
        "v1/chat/completions may cost up to 1008 credits and the balance is lower"
        in (refused["reason"])
    )  # 8 prompt tokens (estimated) + 2 x 500
    assert balance(runner, account) == 100


def test_a_cache_hit_is_priced_as_its_answers_tokens(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "100000")
    first = call(client, account, cache="yes")
    hit = call(client, account, cache="yes")
    assert (first["cache"], hit["cache"]) == (0, 1)
    fresh, cached = usage_rows(priced_app)
    assert cached.credits == fresh.credits > 0
    assert balance(runner, account) == 100000 - 2 * fresh.credits


def test_a_model_without_a_price_costs_its_methods_flat_price(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "10")
    answer = call(client, account, {**CHAT_ARGS, "model": "stub-echo"})
    assert answer["error_code"] == "0000"
    assert usage_rows(priced_app)[0].credits == 1  # DEFAULT_METHOD_PRICE
    assert balance(runner, account) == 9


def test_an_image_is_priced_per_image(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "1000")
    answer = call(
        client,
        account,
        {"prompt": "a cat", "n": 2, "model": "dall-e-2"},
        method="v1/images/generations",
    )
    assert answer["error_code"] == "0000"
    assert usage_rows(priced_app)[0].credits == 80
    assert balance(runner, account) == 920


def test_a_transcription_is_priced_per_second_of_audio_the_upstream_reports(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "5000")
    audio = bytes(100_000)  # the stub reports 100,000 / 48,000 bytes a second: 3 seconds
    answer = client.post(
        "/api",
        data={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/audio/transcriptions",
            "_o_args": json.dumps({"model": "whisper-1"}),
            "file": (io.BytesIO(audio), "note.wav", "audio/wav"),
        },
        content_type="multipart/form-data",
    ).get_json()
    assert answer["error_code"] == "0000", answer
    assert answer["response"]["usage"] == {"type": "duration", "seconds": 3}
    assert usage_rows(priced_app)[0].credits == 6
    assert balance(runner, account) == 4994


def test_flask_usage_shows_the_credits_spent(priced_app):
    runner, client = priced_app.test_cli_runner(), priced_app.test_client()
    account = create_account(runner, "acme", "--balance", "100000")
    call(client, account)
    report = json.loads(runner.invoke(args=["usage", account["key"], "--json"]).output)
    assert report["credits"] == usage_rows(priced_app)[0].credits > 0
