"""The usage page's series (proxy/usage_series.py) and chart geometry (proxy/usage_charts.py):
usage rows placed at known times fall in the buckets of each period, on SQLite and PostgreSQL
(the bucket arithmetic is each database's own), with exact figures and nearest-rank p50/p95."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

import pytest

from proxy import storage, usage_series
from proxy.usage_charts import lines, stacked_bars
from proxy.usage_series import PERIODS

NOW = datetime(2025, 6, 10, 14, 25, 30)  # UTC
CHAT = "v1/chat/completions"
numbers = itertools.count()


def insert(app, *rows: dict) -> None:
    """Usage rows as the meter writes them, each with its own request id."""
    with app.extensions["gateway"].engine.begin() as connection:
        for row in rows:
            connection.execute(
                storage.usage.insert(),
                {"request_id": f"r{next(numbers)}", "error_code": "0000", "method": CHAT, **row},
            )


def series_of(app, period="24h", account_id=None, method=None):
    return usage_series.usage_series(
        app.extensions["gateway"].engine,
        period=PERIODS[period],
        now_utc=NOW,
        account_id=account_id,
        method=method,
    )


def busy(series) -> list[tuple[str, int]]:
    return [(b["label"], b["calls"]) for b in series.buckets if b["calls"]]


def test_the_last_24_hours_are_hours_with_their_calls_failures_tokens_credits_and_latency(
    make_app_each_database,
):
    app = make_app_each_database()
    insert(
        app,
        {
            "created_at": datetime(2025, 6, 10, 14, 0),
            "latency_ms": 10,
            "total_tokens": 5,
            "credits": 2,
        },
        {"created_at": datetime(2025, 6, 10, 14, 10), "latency_ms": 20, "error_code": "4002"},
        {
            "created_at": datetime(2025, 6, 10, 14, 25, 29, 999999),
            "latency_ms": 30,
            "total_tokens": 7,
            "credits": 3,
        },
        {"created_at": datetime(2025, 6, 10, 13, 59, 59, 999999), "latency_ms": 400},
        {"created_at": datetime(2025, 6, 9, 15, 0), "latency_ms": 1},
        {"created_at": datetime(2025, 6, 9, 14, 59, 59, 999999), "latency_ms": 1},  # before
    )
    series = series_of(app)
    assert series.start == datetime(2025, 6, 9, 15, 0)
    assert len(series.buckets) == 24
    assert series.buckets[-1] == {
        "start": datetime(2025, 6, 10, 14, 0),
        "label": "06-10 14:00",
        "calls": 3,
        "failed": 1,
        "tokens": 12,
        "credits": 5,
        "p50_ms": 20,
        "p95_ms": 30,
    }
    assert busy(series) == [("06-09 15:00", 1), ("06-10 13:00", 1), ("06-10 14:00", 3)]
    assert (series.buckets[-2]["p50_ms"], series.buckets[-2]["p95_ms"]) == (400, 400)
    assert series.buckets[1]["p50_ms"] is None  # an hour without calls has no latency


def test_the_last_7_days_are_6_hour_buckets_from_midnight_utc(make_app_each_database):
    app = make_app_each_database()
    insert(
        app,
        {"created_at": datetime(2025, 6, 10, 11, 59, 59, 999999)},
        {"created_at": datetime(2025, 6, 10, 12, 0)},
        {"created_at": datetime(2025, 6, 3, 18, 0)},
        {"created_at": datetime(2025, 6, 3, 17, 59, 59)},  # before the first bucket
    )
    series = series_of(app, "7d")
    assert len(series.buckets) == 28
    assert series.buckets[0]["label"] == "06-03 18:00"
    assert busy(series) == [("06-03 18:00", 1), ("06-10 06:00", 1), ("06-10 12:00", 1)]


def test_the_last_30_days_are_days_from_midnight_utc(make_app_each_database):
    app = make_app_each_database()
    insert(
        app,
        {"created_at": datetime(2025, 6, 9, 23, 59, 59, 500000)},
        {"created_at": datetime(2025, 6, 10, 0, 0)},
        {"created_at": datetime(2025, 5, 12, 0, 0)},
        {"created_at": datetime(2025, 5, 11, 23, 59, 59)},  # before the first day
    )
    series = series_of(app, "30d")
    assert len(series.buckets) == 30
    assert busy(series) == [("05-12", 1), ("06-09", 1), ("06-10", 1)]


def test_a_method_narrows_the_buckets_but_every_method_keeps_its_latency(app):
    at = datetime(2025, 6, 10, 14, 5)
    insert(app, *({"created_at": at, "latency_ms": ms} for ms in range(1, 21)))  # 1..20 ms
    insert(
        app, *({"created_at": at, "latency_ms": ms, "method": "v1/embeddings"} for ms in (500, 600))
    )
    narrowed = series_of(app, method=CHAT)
    # 20 calls: p50 is the 10th fastest, p95 the 19th
    assert (narrowed.buckets[-1]["calls"], narrowed.buckets[-1]["p50_ms"]) == (20, 10)
    assert narrowed.buckets[-1]["p95_ms"] == 19
    assert narrowed.latency_by_method == {CHAT: (10, 19), "v1/embeddings": (500, 600)}
    every = series_of(app).buckets[-1]  # 22 calls: the 11th and the 21st (500 ms)
    assert (every["calls"], every["p50_ms"], every["p95_ms"]) == (22, 11, 500)


def test_an_account_narrows_the_buckets(app):
    at = datetime(2025, 6, 10, 14, 5)
    insert(app, {"created_at": at, "account_id": 1}, {"created_at": at, "account_id": 2})
    assert busy(series_of(app, account_id=2)) == [("06-10 14:00", 1)]


def test_latency_reads_only_the_newest_rows_and_says_where_the_bound_cut(app, monkeypatch):
    monkeypatch.setattr(usage_series, "LATENCY_ROWS_READ", 2)
    insert(
        app,
        {"created_at": datetime(2025, 6, 10, 12, 30), "latency_ms": 7},
        {"created_at": datetime(2025, 6, 10, 13, 30), "latency_ms": 8},
        {"created_at": datetime(2025, 6, 10, 14, 5), "latency_ms": 9},
    )
    series = series_of(app)
    assert series.latency_since == datetime(2025, 6, 10, 13, 30)
    oldest = series.buckets[-3]  # counted, but its latency was not read
    assert (oldest["calls"], oldest["p50_ms"], oldest["p95_ms"]) == (1, None, None)
    assert series.buckets[-2]["p50_ms"] == 8


def test_an_uncut_window_says_no_bound_was_reached(app):
    insert(app, {"created_at": datetime(2025, 6, 10, 14, 5)})
    assert series_of(app).latency_since is None


# -- chart geometry (pure) -----------------------------------------------------------------


def test_a_bar_stacks_failures_on_answered_calls_up_to_the_busiest_bucket():
    chart = stacked_bars(["a", "b"], [(3, 1), (0, 2)], ("answered", "failed"), "calls")
    assert (chart.top, chart.first, chart.last) == (4, "a", "b")
    # the plot is 140 high from y=8 and 656 wide from x=56: each bucket 328 wide
    assert [(s.css, s.attributes) for s in chart.shapes] == [
        ("answered", {"x": "101.9", "y": "43", "width": "236.2", "height": "105"}),
        ("failed", {"x": "101.9", "y": "8", "width": "236.2", "height": "35"}),
        ("failed", {"x": "429.9", "y": "78", "width": "236.2", "height": "70"}),
    ]
    assert chart.shapes[0].title == "a: 3 answered, 1 failed"


def test_a_line_breaks_over_buckets_without_a_value():
    chart = lines(["a", "b", "c", "d"], {"p50": [10, 20, None, 5]}, "ms")
    assert chart.top == 20
    polylines = [s.attributes["points"] for s in chart.shapes if s.kind == "polyline"]
    assert polylines == ["138,78 302,8"]  # d stands alone: a dot only
    dots = [
        (s.attributes["cx"], s.attributes["cy"], s.title)
        for s in chart.shapes
        if s.kind == "circle"
    ]
    assert dots == [
        ("138", "78", "a: p50 10 ms"),
        ("302", "8", "b: p50 20 ms"),
        ("630", "113", "d: p50 5 ms"),
    ]


def test_an_empty_period_draws_no_shape():
    assert stacked_bars(["a"], [(0, 0)], ("answered", "failed"), "calls").shapes == []
    assert lines(["a"], {"p50": [None]}, "ms").shapes == []


@pytest.mark.parametrize("name", PERIODS)
def test_each_period_ends_with_the_bucket_now_is_in(name):
    start, end = PERIODS[name].window(NOW)
    assert end - PERIODS[name].bucket <= NOW < end
    assert end - start == PERIODS[name].buckets * PERIODS[name].bucket


@pytest.mark.parametrize(
    "top, label",
    [(9999, "9999"), (12_345, "12.3k"), (999_999, "1M"), (1_234_567, "1.2M"), (5 * 10**9, "5G")],
)
def test_the_largest_value_is_written_short_enough_for_the_axis(top, label):
    assert stacked_bars(["a"], [(top,)], ("tokens",), "tokens").top_label == label


def test_flask_usage_method_counts_only_that_methods_calls(app):
    insert(app, {"created_at": NOW}, {"created_at": NOW, "method": "v1/embeddings"})
    answer = app.test_cli_runner().invoke(args=["usage", "--method", CHAT, "--json"])
    report = json.loads(answer.output)
    assert (report["method"], report["calls"]) == (CHAT, 1)
