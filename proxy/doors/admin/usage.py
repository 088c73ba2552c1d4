"""The usage page: a period (24 hours by hour, 7 days by 6 hours, 30 days by day, UTC), for
every account or one, every method or one; its figures, SVG charts and last failed calls."""

from __future__ import annotations

from flask import flash, render_template, request, url_for

from proxy.catalog import CATALOG
from proxy.doors import kit
from proxy.doors.admin.access import admin_blp
from proxy.storage import utc_now
from proxy.usage import calls_by_method, failed_calls, usage_report
from proxy.usage_charts import lines, stacked_bars
from proxy.usage_series import DEFAULT_PERIOD, LATENCY_ROWS_READ, PERIODS, usage_series

METHODS_SHOWN = 50  # rows of the per-method table; the rest are summed in one line


@admin_blp.route("/usage")
def usage():
    """Usage over a period (?period=24h|7d|30d), for an account (?account=KEY) and a method
    (?method=NAME) or all: every figure on the page covers the chosen period."""
    gateway = kit.gateway()
    every = gateway.accounts.list()
    period = _chosen_period()
    chosen, account_id = _chosen_account(gateway)
    now = utc_now()
    start, _ = period.window(now)
    methods = calls_by_method(gateway.engine, account_id=account_id, since_utc=start)
    method = _chosen_method(methods)
    series = usage_series(
        gateway.engine, period=period, now_utc=now, account_id=account_id, method=method
    )
    report = usage_report(gateway.engine, account_id=account_id, since_utc=start, method=method)
    shown, hidden = _busiest(methods, method)
    for row in shown:
        row["p50_ms"], row["p95_ms"] = series.latency_by_method.get(row["method"], (None, None))
    return render_template(
        "admin/usage.html",
        accounts=every,
        key_of={a.id: a.key for a in every},
        chosen=chosen,
        periods=PERIODS,
        period=period,
        method=method,
        link=_usage_link(period, chosen, method),
        catalog_methods=sorted(CATALOG),
        report=report,
        widest=max(report["by_code"].values(), default=1),
        methods=shown,
        hidden_methods=hidden,
        failures=failed_calls(
            gateway.engine, account_id=account_id, since_utc=start, method=method
        ),
        series=series,
        latency_rows_read=LATENCY_ROWS_READ,
        charts=_usage_charts(series.buckets),
    )


def _busiest(methods: list[dict], chosen: str | None) -> tuple[list[dict], dict]:
    """The METHODS_SHOWN busiest methods (and the chosen one), and what the others add up to:
    a caller may send any method name, and each lands in the usage rows."""
    shown = [row for i, row in enumerate(methods) if i < METHODS_SHOWN or row["method"] == chosen]
    others = [row for row in methods[METHODS_SHOWN:] if row["method"] != chosen]
    return shown, {"methods": len(others), "calls": sum(row["calls"] for row in others)}


def _chosen_period():
    period = PERIODS.get(request.args.get("period") or DEFAULT_PERIOD.name)
    if period is None:
        flash(f"Choose a period of {', '.join(PERIODS)}; showing {DEFAULT_PERIOD.name}.", "error")
        return DEFAULT_PERIOD
    return period


def _chosen_account(gateway) -> tuple[str, int | None]:
    """The ?account= key and its account's id; ("", None) for every account."""
    chosen = request.args.get("account", "").strip()
    if not chosen:
        return "", None
    try:
        return chosen, gateway.accounts.get(chosen).id
    except LookupError:
        flash(f"No account has the key {chosen[:64]!r}; showing every account.", "error")
        return "", None


def _chosen_method(methods: list[dict]) -> str | None:
    """The ?method= name, if the catalog has it or the period's calls do (a caller may have
    sent a name outside the catalog); None for every method."""
    method = request.args.get("method", "").strip() or None
    known = {*CATALOG, *(row["method"] for row in methods if row["method"] != "-")}
    if method is not None and method not in known:
        flash(f"No call of {method[:64]!r} in the period; showing every method.", "error")
        return None
    return method


def _usage_link(period, account: str, method: str | None):
    """link(**changes): this usage page's URL with some of its choices changed."""

    def link(**changes) -> str:
        values = {"period": period.name, "account": account, "method": method} | changes
        return url_for("admin.usage", **{name: value for name, value in values.items() if value})

    return link


def _usage_charts(buckets: list[dict]) -> dict:
    labels = [bucket["label"] for bucket in buckets]
    return {
        "calls": stacked_bars(
            labels,
            [(b["calls"] - b["failed"], b["failed"]) for b in buckets],
            ("answered", "failed"),
            "calls",
        ),
        "latency": lines(
            labels,
            {"p50": [b["p50_ms"] for b in buckets], "p95": [b["p95_ms"] for b in buckets]},
            "ms",
        ),
        "tokens": stacked_bars(labels, [(b["tokens"],) for b in buckets], ("tokens",), "tokens"),
        "credits": stacked_bars(
            labels, [(b["credits"],) for b in buckets], ("credits",), "credits"
        ),
    }
