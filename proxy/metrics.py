"""What an operator watches: Prometheus metrics of the calls, served at `GET /metrics`
(docs/deploy.md, "Metrics").

Under gunicorn every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (made per
master by config/gunicorn.conf.py, proxy/metrics_files.py) and a scrape adds them up, so the
answer is the same whichever worker serves it; without it (tests, `flask run`) the values
live in this process. prometheus_client picks the mode when it is first imported, so nothing
the gunicorn master imports before its `on_starting` hook may import this module.

Label values are bounded and never client text, a key or a secret: doors and codes from fixed
tables, methods only from the catalog ("unknown" otherwise), upstreams by their configured
names, models only from the configured list ("other" otherwise). No Flask here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache, wraps

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from proxy.catalog import CATALOG
from proxy.errors import (
    ACCOUNT_NOT_FOUND,
    ACCOUNT_STOPPED,
    API_MAINTENANCE,
    API_NOT_ADDED,
    API_STOPPED,
    AUTH_FAILED,
    CALLS_EXCEEDED,
    ERROR_CODES,
    INSUFFICIENT_BALANCE,
    RATE_LIMITED,
)

log = logging.getLogger("proxy")

UNKNOWN = "unknown"  # a method the catalog does not hold, a door or code outside the tables
OTHER_MODEL = "other"  # a model outside the configured list
DOORS = frozenset({"api", "v1", "anthropic"})
# The gateway's own refusals of a call it read: who may call, and the account's limits.
ADMISSION_CODES = frozenset(
    {
        ACCOUNT_NOT_FOUND,
        AUTH_FAILED,
        API_STOPPED,
        ACCOUNT_STOPPED,
        RATE_LIMITED,
        API_MAINTENANCE,
        API_NOT_ADDED,
        CALLS_EXCEEDED,
        INSUFFICIENT_BALANCE,
    }
)
# An upstream's name as UPSTREAMS_FILE allows it ([a-z0-9_-]+), plus "default" and "stub".
# A member's name: its table's name, and "#N" for one of several keys (proxy/upstreams.py).
_UPSTREAM_NAME = re.compile(r"[a-z0-9_-]{1,64}(#[0-9]{1,4})?")
_FNMATCH_SPECIALS = re.compile(r"[*?\[\]]")

# Seconds. Upstream answers take from tens of milliseconds to minutes; the gateway's own part
# should stay in single milliseconds.
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# This process's metrics; a scrape in multiprocess mode reads every process's files instead.
REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter(
    "gateway_calls",
    "Calls settled (one usage row each), by door, catalog method, error code and upstream.",
    ("door", "method", "code", "upstream"),
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_seconds",
    "Time a call spent waiting on its upstream (a stream: on all its chunks).",
    ("upstream",),
    buckets=UPSTREAM_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD_SECONDS = Histogram(
    "gateway_overhead_seconds",
    "A call's time in the gateway itself: elapsed, less the upstream's and a streaming "
    "client's share.",
    ("door",),
    buckets=OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "gateway_tokens",
    "Tokens the upstreams reported for the calls they answered (a cache hit adds none): "
    "direction in (prompt) or out (completion), by model.",
    ("model", "direction"),
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups",
    "Answer cache lookups of cacheable calls, by method and result (hit or miss).",
    ("method", "result"),
    registry=REGISTRY,
)
ADMISSION_REFUSALS = Counter(
    "gateway_admission_refusals",
    "Calls the gateway refused at its gate (credentials, stops, concurrency, quota, balance), "
    "by door and code.",
    ("door", "code"),
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "gateway_failovers",
    "Attempts that failed on an upstream member in a way another member may answer (the call "
    "fails over while it has attempts and time left), by the member that failed.",
    ("upstream",),
    registry=REGISTRY,
)
COOLDOWNS = Counter(
    "gateway_cooldowns",
    "Times an upstream member was taken out for a cooldown.",
    ("upstream",),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "gateway_calls_in_flight",
    "Calls taken and not yet settled, by door (live workers only).",
    ("door",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)


def multiprocess_dir() -> str:
    """The folder every worker's values are in; "" when this process counts alone."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def exposition(accept: str = "") -> tuple[bytes, str]:
    """(every worker's metrics, their content type) in the format the scraper's Accept header
    prefers: OpenMetrics, or Prometheus text (0.0.4 when it names none)."""
    encode, content_type = choose_encoder(accept)
    directory = multiprocess_dir()
    if not directory:
        return encode(REGISTRY), content_type
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return encode(registry), content_type


# -- label values: bounded, never client text


def method_label(method: str) -> str:
    """A catalog method's name; "unknown" for anything else a client sent."""
    return method if method in CATALOG else UNKNOWN


def door_label(door: str) -> str:
    return door if door in DOORS else UNKNOWN


def code_label(code: str) -> str:
    return code if code in ERROR_CODES else UNKNOWN


def upstream_label(name: str | None) -> str:
    """An upstream's configured name; "" when no upstream is known (never a URL or a key)."""
    if not name:
        return ""
    return name if _UPSTREAM_NAME.fullmatch(name) else UNKNOWN


class ModelLabels:
    """Which model names may be label values: the configured default models, METRICS_MODELS,
    and the UPSTREAMS_FILE patterns without wildcards. A client names any model it likes, so
    any other name is "other" (a label holding client text would be unbounded, and could hold
    whatever the client typed)."""

    def __init__(self, known: Iterable[str]):
        self.known = frozenset(m for m in known if m and len(m) <= 128)

    @classmethod
    def from_config(cls, config: Mapping, patterns: Iterable[str] = ()) -> ModelLabels:
        listed = (m.strip() for m in config.get("METRICS_MODELS", "").split(","))
        exact = (p for p in patterns if not _FNMATCH_SPECIALS.search(p))
        return cls([*config["DEFAULT_MODELS"].values(), *listed, *exact])

    def label(self, model) -> str:
        """The model's name when known; "other" otherwise; "" for a call that names none."""
        if not model:
            return ""
        return model if isinstance(model, str) and model in self.known else OTHER_MODEL


def never_fails_a_call(count: Callable[..., None]) -> Callable[..., None]:
    """A metric that cannot be written (its file, say) is logged; the call goes on."""

    @wraps(count)
    def counted(*args, **kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            log.exception("metrics: %s failed; the call goes on uncounted", count.__name__)

    return counted


# -- what the call path reports (proxy/calls.py); every value here is already a label


@lru_cache(maxsize=64)
def _in_flight(door: str):
    return IN_FLIGHT.labels(door)


@never_fails_a_call
def call_started(door: str) -> None:
    _in_flight(door_label(door)).inc()


@never_fails_a_call
def call_settled(
    *,
    door: str,
    method: str,
    code: str,
    upstream: str,
    model: str,
    usage: Mapping,
    overhead_seconds: float,
    upstream_seconds: float | None,
    cache_result: str | None,
) -> None:
    """One settled call: counted, timed, its tokens added; and it is no longer in flight.
    Every value is made a bounded label here (`model` is one already: ModelLabels.label)."""
    door, method, code = door_label(door), method_label(method), code_label(code)
    upstream = upstream_label(upstream)
    _in_flight(door).dec()
    CALLS.labels(door, method, code, upstream).inc()
    OVERHEAD_SECONDS.labels(door).observe(max(overhead_seconds, 0.0))
    if upstream_seconds is not None:
        upstream_latency(upstream, upstream_seconds)
    if code in ADMISSION_CODES:
        ADMISSION_REFUSALS.labels(door, code).inc()
    if cache_result is not None:
        CACHE_LOOKUPS.labels(method, cache_result).inc()
    for direction, field in (("in", "prompt_tokens"), ("out", "completion_tokens")):
        tokens = usage.get(field)
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
            TOKENS.labels(model, direction).inc(tokens)


# -- what the upstream pools report (proxy/upstream_events.py)


@never_fails_a_call
def upstream_latency(upstream: str, seconds: float) -> None:
    """An answer (or failure) of `upstream` (its configured name) took `seconds`."""
    UPSTREAM_SECONDS.labels(upstream_label(upstream)).observe(max(seconds, 0.0))


@never_fails_a_call
def failover(upstream: str) -> None:
    """An attempt on `upstream` (a member's configured name) failed over."""
    FAILOVERS.labels(upstream_label(upstream)).inc()


@never_fails_a_call
def cooldown(upstream: str) -> None:
    """`upstream` (a member's configured name, never its key) is taken out for a cooldown."""
    COOLDOWNS.labels(upstream_label(upstream)).inc()
