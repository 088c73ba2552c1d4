"""The console's usage page over a period (?period=24h|7d|30d, UTC buckets) and for a method
(?method=NAME), with an account (?account=KEY) or all: totals, codes, the series of calls,
failures, tokens, credits and p50/p95 latency (table and inline SVG charts), the per-method
table and the failed calls all cover the choice. Rows are placed at known times through the
usage table; the series arithmetic itself is tests/test_usage_series.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from proxy import usage_series
from proxy.storage import utc_now
from tests.conftest import CHAT_ARGS, create_account
from tests.test_console import TOKEN, csrf_of
from tests.test_usage_series import insert

CHAT, EMBEDDINGS = "v1/chat/completions", "v1/embeddings"


def logged_in(app):
    """A test client of `app` logged in to the console."""
    browser = app.test_client()
    csrf = csrf_of(browser.get("/admin/login").text)
    assert browser.post("/admin/login", data={"token": TOKEN, "csrf": csrf}).status_code == 302
    return browser


@pytest.fixture
def app(make_app):
    return make_app(ADMIN_TOKEN=TOKEN)


@pytest.fixture
def console(app):
    return logged_in(app)


def page(console, **query) -> str:
    answer = console.get("/admin/usage", query_string=query)
    assert answer.status_code == 200
    return answer.text


def tile(text: str, name: str) -> str:
    return re.search(rf'<b id="{name}">([^<]*)</b>', text).group(1)


def method_row(text: str, method: str) -> str:
    return re.search(rf'<tr[^>]*data-method="{re.escape(method)}">.*?</tr>', text, re.S).group(0)


def test_the_7_day_period_shows_6_hour_buckets_with_calls_failures_latency_tokens_credits(
    make_app_each_database,
):
    app = make_app_each_database(ADMIN_TOKEN=TOKEN)
    now = utc_now()
    insert(
        app,
        {"created_at": now, "latency_ms": 10, "total_tokens": 4, "credits": 1},
        {
            "created_at": now,
            "latency_ms": 30,
            "total_tokens": 6,
            "credits": 2,
            "error_code": "4002",
        },
        {"created_at": now - timedelta(days=3), "latency_ms": 50},
        {"created_at": now - timedelta(days=8), "latency_ms": 70},  # before the 7 days
    )
    text = page(logged_in(app), period="7d")
    bucket = now.replace(hour=now.hour // 6 * 6).strftime("%m-%d %H:00")
    assert (
        f'<td class="num" data-bucket-calls="{bucket}">2</td>\n'
        '      <td class="num">1</td>\n'  # failed
        '      <td class="num">10</td>\n'  # p50 ms
        '      <td class="num">30</td>\n'  # p95 ms
        '      <td class="num">10</td>\n'  # tokens
        '      <td class="num">3</td>'  # credits
    ) in text
    assert (tile(text, "calls"), tile(text, "failed"), tile(text, "credits")) == ("3", "1", "3")
    assert '<a href="/admin/usage?period=7d" class="here" aria-current="page">' in text


def test_the_default_period_is_the_last_24_hours(console, app):
    now = utc_now()
    insert(app, {"created_at": now}, {"created_at": now - timedelta(days=2)})
    text = page(console)
    assert tile(text, "calls") == "1"
    assert "Last 24 hours, by hour</a>" in text and 'class="here"' in text


def test_the_30_day_period_counts_a_call_of_last_week(console, app):
    insert(app, {"created_at": utc_now() - timedelta(days=7)})
    assert tile(page(console, period="30d"), "calls") == "1"
    assert tile(page(console, period="24h"), "calls") == "0"


def test_an_unknown_period_shows_the_last_24_hours_and_says_which_to_choose(console):
    answer = console.get("/admin/usage", query_string={"period": "1y"})
    assert answer.status_code == 200
    assert "Choose a period of 24h, 7d, 30d; showing 24h." in answer.text
    assert 'name="period" value="24h"' in answer.text


def test_a_method_narrows_the_totals_codes_series_and_failures(console, app):
    now = utc_now()
    insert(
        app,
        {"created_at": now, "latency_ms": 10},
        {"created_at": now, "latency_ms": 20, "error_code": "4002", "request_id": "chat-fail"},
        {
            "created_at": now,
            "latency_ms": 900,
            "error_code": "4003",
            "method": EMBEDDINGS,
            "request_id": "embeddings-fail",
        },
    )
    text = page(console, method=CHAT)
    assert f'<code id="method">{CHAT}</code>' in text
    assert (tile(text, "calls"), tile(text, "failed")) == ("2", "1")
    assert 'data-code="4002">1<' in text and 'data-code="4003"' not in text
    assert "<code>chat-fail</code>" in text and "embeddings-fail" not in text
    hour = now.strftime("%m-%d %H:00")
    assert f'data-bucket-calls="{hour}">2</td>' in text
    assert f'<option value="{CHAT}" selected>' in text
    # the per-method table still lists every method, the chosen one marked
    assert method_row(text, CHAT).startswith('<tr class="chosen"')
    assert method_row(text, EMBEDDINGS)


def test_the_per_method_table_shows_the_periods_failures_tokens_credits_and_latency(console, app):
    now = utc_now()
    rows = [
        {"created_at": now, "latency_ms": ms, "total_tokens": 3, "credits": 2}
        for ms in range(1, 21)
    ]  # 1..20 ms
    rows.append({"created_at": now, "latency_ms": 900, "error_code": "4002"})
    rows.append({"created_at": now - timedelta(days=2), "latency_ms": 5000})  # outside 24 h
    insert(app, *rows)
    row = method_row(page(console), CHAT)
    # 21 calls: p50 is the 11th fastest (11 ms), p95 the 20th (20 ms); 1 failed
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells == ["21", "0", "1", "60", "40", "11", "20"]  # calls, charged, failed, ...
    assert f'href="/admin/usage?period=24h&amp;method={CHAT}"' in row


def test_an_account_and_a_method_combine_over_real_calls(console, client, runner):
    mine, other = create_account(runner, "mine"), create_account(runner, "other")
    for account, o_args in ((mine, CHAT_ARGS), (mine, "{not json"), (other, CHAT_ARGS)):
        client.get(
            "/api",
            query_string={
                "key": account["key"],
                "secret": account["secret"],
                "method": CHAT,
                "_o_args": json.dumps(o_args) if isinstance(o_args, dict) else o_args,
            },
        )
    text = page(console, account=mine["key"], method=CHAT, period="7d")
    assert (tile(text, "calls"), tile(text, "failed")) == ("2", "1")
    assert 'data-code="0000">1<' in text and 'data-code="4003">1<' in text
    # links keep the account and the method; the form keeps the period
    assert f'href="/admin/usage?period=30d&amp;account={mine["key"]}&amp;method=' in text
    assert '<input type="hidden" name="period" value="7d">' in text


def test_an_unknown_method_shows_every_method_and_says_so(console, app):
    insert(app, {"created_at": utc_now()})
    text = page(console, method="v1/no-such-method")
    assert "No call of &#39;v1/no-such-method&#39; in the period; showing every method." in text
    assert tile(text, "calls") == "1" and 'id="method"' not in text


def test_a_method_outside_the_catalog_that_was_called_can_be_chosen(console, app):
    insert(
        app,
        {"created_at": utc_now(), "method": "v1/typo", "error_code": "4004"},
        {"created_at": utc_now()},
    )
    text = page(console, method="v1/typo")
    assert tile(text, "calls") == "1" and '<code id="method">v1/typo</code>' in text


def test_the_charts_are_inline_svg_without_a_style_attribute_or_a_script(console, app):
    now = utc_now()
    insert(
        app,
        {"created_at": now, "latency_ms": 10},
        {"created_at": now, "latency_ms": 30, "error_code": "4002"},
    )
    text = page(console)
    assert [m for m in re.findall(r'<figure class="chart" id="([^"]+)">', text)] == [
        "calls-chart",
        "latency-chart",
        "tokens-chart",
        "credits-chart",
    ]
    calls_chart = re.search(r'id="calls-chart">.*?</figure>', text, re.S).group(0)
    hour = now.strftime("%m-%d %H:00")
    # the last hour's bar: 1 answered call under 1 failed one, the plot's full height
    assert re.search(
        r'<rect class="answered" x="[\d.]+" y="78" width="19.7" height="70">', calls_chart
    )
    assert f"<title>{hour}: 1 answered, 1 failed</title>" in calls_chart
    assert '<text class="top" x="50" y="12" text-anchor="end">2</text>' in calls_chart
    latency_chart = re.search(r'id="latency-chart">.*?</figure>', text, re.S).group(0)
    assert f"<title>{hour}: p95 30 ms</title>" in latency_chart
    assert "style=" not in text and "<script" not in text


def test_the_page_says_when_the_latency_bound_cut_the_period(console, app, monkeypatch):
    monkeypatch.setattr(usage_series, "LATENCY_ROWS_READ", 1)
    now = utc_now()
    insert(app, {"created_at": now - timedelta(minutes=1)}, {"created_at": now})
    text = page(console)
    cut = re.search(r'<p class="hint" id="latency-cut">(.*?)</p>', text, re.S).group(1)
    assert f"leave out the calls before {now:%Y-%m-%d %H:%M:%S} UTC" in cut


def test_the_last_failed_calls_are_newest_first_by_their_when_column(console, app):
    """In the order of the time shown, whatever order the rows got their ids in (several hosts'
    rows, rows placed by hand)."""
    now = utc_now()
    insert(
        app,
        {"created_at": now - timedelta(minutes=1), "error_code": "5000", "request_id": "newer"},
        {"created_at": now - timedelta(minutes=9), "error_code": "5000", "request_id": "older"},
    )
    shown = re.findall(r"<td><code>(newer|older)</code>", page(console))
    assert shown == ["newer", "older"]


def test_the_per_method_table_shows_the_50_busiest_and_sums_the_rest(console, app):
    """Anyone may send any method name, and each lands in a usage row: a flood of names must
    not make the page grow without end."""
    now = utc_now()
    insert(app, *({"created_at": now, "method": CHAT} for _ in range(3)))
    insert(app, *({"created_at": now, "method": f"made/up/{n:02}"} for n in range(60)))
    text = page(console)
    assert len(re.findall(r'<tr[^>]* data-method="', text)) == 50
    assert 'data-method="v1/chat/completions"' in text  # the busiest first
    assert "and 11 more method names with 11 calls between them" in text
