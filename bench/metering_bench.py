"""Metering cost, measured: how much of a /api call is Meter.admit + Meter.settle (the
reservation and the usage row), on SQLite (a file in a temporary directory, as deployed) and
on PostgreSQL (a private server from tests/servers.py), plus 8 threads calling at once.

The app is built in-process and called with the Flask test client; the bundled stub upstream
answers over real HTTP. The account has a daily quota, a balance and a concurrency limit, so
every conditional update of an admission runs. The meter's admit and settle are wrapped on
the instance with timers that call the originals, so their figures come from the same calls
as the whole-call latency; so are authentication and the API-state check. First it prints the
SQL statements and transactions of one miss and one hit (SQLAlchemy events; -v lists them).

Run: `make bench-metering` or `.venv/bin/python bench/metering_bench.py [--calls N]`.
Prints tables; it asserts only that every call answered 0000 (and hits were hits).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from proxy import create_app, metering  # noqa: E402
from stub_upstream import StubServer  # noqa: E402

CALLS = 300
THREADS = 8
ACCOUNT_LIMITS = ["--daily-quota", "1000000", "--balance", "1000000", "--concurrency", "50"]


@dataclass(frozen=True)
class Sample:
    """One /api call: its whole latency and the time spent in the meter during it (ms)."""

    call: float
    admit: float
    settle: float
    call_cpu: float  # CPU time of the calling thread (the request runs there), in ms
    metering_cpu: float  # of which in admit and settle
    usage_row: float  # of settle's time, the INSERT of the call's usage row
    checks: float  # authenticate + API states check (account settings, stops, maintenance)

    @property
    def metering(self) -> float:
        return self.admit + self.settle


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)]


# A separate process that only sleeps 1 ms at a time and notes every wake-up later than 50 ms:
# on a shared machine, those stalls (not the gateway) make most of the p95 figures.
_PROBE = """
import signal, sys, time
stalls, running = [], True
def stop(*_):
    global running
    running = False
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
last = time.perf_counter()
while running:
    time.sleep(0.001)
    now = time.perf_counter()
    if now - last > 0.05:
        stalls.append((now - last) * 1000)
    last = now
print(len(stalls), max(stalls, default=0.0), flush=True)
"""


class StallProbe:
    def __enter__(self) -> StallProbe:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, text=True
        )
        self.process.stdout.readline()  # "ready"
        return self

    def __exit__(self, *_exc) -> None:
        self.process.terminate()
        count, longest = self.process.communicate(timeout=30)[0].split()
        self.stalls, self.longest = int(count), float(longest)


class LogCounter(logging.Handler):
    """Counts the gateway's warnings and errors by message and root exception, so that a
    failure under contention prints as one line (the tracebacks go to stderr with -v)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        cause = ""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            root = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
            first_line = str(root).splitlines()[0] if str(root) else ""
            cause = f": {type(root).__name__} {first_line}"[:110]
        message = record.msg.replace(" %s", "") if isinstance(record.msg, str) else record.msg
        self.seen[f"{record.levelname.lower()} '{message}'{cause}"] += 1


class MeterTimer:
    """Replaces admit/settle on the app's Meter instance with wrappers that time the originals.

    The test client runs the request in the calling thread, so a thread-local holds the
    figures of the call in progress, also when several threads call at once."""

    def __init__(self, gateway) -> None:
        self.local = threading.local()
        meter = gateway.meter
        admit, settle = meter.admit, meter.settle

        def timed(name: str, original):
            def wrapper(*args, **kwargs):
                started, started_cpu = time.perf_counter(), time.thread_time()
                try:
                    return original(*args, **kwargs)
                finally:
                    wall = (time.perf_counter() - started) * 1000
                    cpu = (time.thread_time() - started_cpu) * 1000
                    setattr(self.local, name, self._so_far(name) + wall)
                    self.local.cpu = self._so_far("cpu") + cpu

            return wrapper

        timed_admit, timed_settle = timed("admit", admit), timed("settle", settle)
        insert_usage = metering._insert_usage

        def timed_insert_usage(*args, **kwargs):
            started = time.perf_counter()
            try:
                return insert_usage(*args, **kwargs)
            finally:
                wall = (time.perf_counter() - started) * 1000
                self.local.usage_row = self._so_far("usage_row") + wall

        metering._insert_usage = timed_insert_usage  # settle looks it up in its module

        meter.admit, meter.settle = timed_admit, timed_settle
        for service, name in ((gateway.accounts, "authenticate"), (gateway.api_states, "check")):
            setattr(service, name, self._timed_check(getattr(service, name)))

    def _timed_check(self, original):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                wall = (time.perf_counter() - started) * 1000
                self.local.checks = self._so_far("checks") + wall

        return wrapper

    def _so_far(self, name: str) -> float:
        return getattr(self.local, name, 0.0)  # calls outside measure() count from nothing

    def measure(self, call) -> Sample:
        self.local.admit = self.local.settle = self.local.cpu = self.local.usage_row = 0.0
        self.local.checks = 0.0
        started, started_cpu = time.perf_counter(), time.thread_time()
        call()
        elapsed = (time.perf_counter() - started) * 1000
        return Sample(
            call=elapsed,
            admit=self.local.admit,
            settle=self.local.settle,
            call_cpu=(time.thread_time() - started_cpu) * 1000,
            metering_cpu=self.local.cpu,
            usage_row=self.local.usage_row,
            checks=self.local.checks,
        )


class StatementCounter:
    """Counts the SQL statements and transactions the app's engine runs (SQLAlchemy events), and
    which transactions wrote (ran an INSERT, UPDATE or DELETE)."""

    def __init__(self, engine) -> None:
        self.statements: list[str] = []
        self.transactions: list[bool] = []  # per transaction: whether it wrote
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)

    def _statement(self, _connection, _cursor, statement, *_rest) -> None:
        self.statements.append(" ".join(statement.split()))
        if self.transactions and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            self.transactions[-1] = True

    def _begin(self, _connection) -> None:
        self.transactions.append(False)

    def during(self, call) -> tuple[int, int, int, list[str]]:
        """(statements, transactions, writing transactions, the statements) of `call()`."""
        self.statements, self.transactions = [], []
        call()
        return (
            len(self.statements),
            len(self.transactions),
            sum(self.transactions),
            self.statements,
        )


class Bench:
    """One app on one database, one limited account, calls timed through the test client."""

    def __init__(self, database_url: str, stub: StubServer) -> None:
        self.app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": database_url,
                "OPENAI_BASE_URL": stub.base_url,
                "OPENAI_API_KEY": "sk-bench",
                "UPSTREAM_TIMEOUT_SECONDS": 10,
                "UPSTREAM_MAX_RETRIES": 0,
                "ACCOUNT_SEALING_KEY": Fernet.generate_key().decode(),
            }
        )
        created = self.app.test_cli_runner().invoke(
            args=["accounts", "create", "bench", *ACCOUNT_LIMITS, "--json"]
        )
        assert created.exit_code == 0, created.output
        self.creds = json.loads(created.output)
        gateway = self.app.extensions["gateway"]
        self.engine = gateway.engine
        self.timer = MeterTimer(gateway)

    def chat(self, client, content: str, cache: str, *, hit: bool = False) -> None:
        envelope = self.ask(client, content, cache)
        assert envelope["error_code"] == "0000", envelope
        assert envelope["cache"] == (1 if hit else 0), envelope

    def ask(self, client, content: str, cache: str) -> dict:
        return client.get(
            "/api",
            query_string={
                "key": self.creds["key"],
                "secret": self.creds["secret"],
                "method": "v1/chat/completions",
                "_o_args": json.dumps({"messages": [{"role": "user", "content": content}]}),
                "cache": cache,
            },
        ).get_json()

    def sequential(self, calls: int, cache: str) -> list[Sample]:
        client = self.app.test_client()
        if cache == "yes":
            self.chat(client, "hello cached", "yes")  # stores the answer; the rest are hits
            return [
                self.timer.measure(lambda: self.chat(client, "hello cached", "yes", hit=True))
                for _ in range(calls)
            ]
        return [
            self.timer.measure(lambda i=i: self.chat(client, f"hello {i}", "no"))
            for i in range(calls)
        ]

    def concurrent(self, calls: int, threads: int) -> tuple[list[Sample], float, list[str]]:
        """`threads` threads, `calls // threads` cache misses each, all started at once;
        returns the samples, the wall time (s) from the start to the last answer, and the
        error code of every call that did not answer 0000 (counted, not raised: a failure
        under contention is a figure of this benchmark)."""
        per_thread = calls // threads
        start = threading.Barrier(threads + 1, timeout=120)
        failures: list[str] = []

        def call(client, content: str) -> None:
            envelope = self.ask(client, content, "no")
            if envelope["error_code"] != "0000":
                failures.append(envelope["error_code"])

        def worker(number: int) -> list[Sample]:
            client = self.app.test_client()
            call(client, f"warm {number}")  # this thread's first SDK use and pool connection
            start.wait()
            return [
                self.timer.measure(lambda i=i: call(client, f"thread {number} call {i}"))
                for i in range(per_thread)
            ]

        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [pool.submit(worker, number) for number in range(threads)]
            start.wait()
            started = time.perf_counter()
            samples = [sample for future in futures for sample in future.result()]
            wall = time.perf_counter() - started
        return samples, wall, failures

    def statements_per_call(self, verbose: bool) -> None:
        """Statements and transactions of one miss and one hit, for the bench account (quota,
        balance and concurrency limit) and for an account with only a daily quota."""
        created = self.app.test_cli_runner().invoke(
            args=["accounts", "create", "quota-only", "--json"]
        )
        plain = json.loads(created.output)
        counter = StatementCounter(self.engine)
        client = self.app.test_client()
        for label, creds in (("all limits", self.creds), ("quota only", plain)):
            bench_creds, self.creds = self.creds, creds
            try:
                self.chat(client, "counted", "yes")  # the hit's answer is cached first
                for kind, content, cache, hit in (
                    ("miss", "counted miss", "no", False),
                    ("hit", "counted", "yes", True),
                ):
                    statements, transactions, writing, texts = counter.during(
                        lambda c=content, k=cache, h=hit: self.chat(client, c, k, hit=h)
                    )
                    print(
                        f"    {label + ', ' + kind:<26} {statements:3} statements, "
                        f"{transactions} transactions ({writing} writing)"
                    )
                    if verbose:
                        for statement in texts:
                            print(f"        {statement[:100]}")
            finally:
                self.creds = bench_creds
        event.remove(self.engine, "before_cursor_execute", counter._statement)
        event.remove(self.engine, "begin", counter._begin)

    def usage_rows(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM usage")).scalar_one()


def table(title: str, rows: list[tuple[str, list[float]]]) -> None:
    print(f"  {title}")
    for name, values in rows:
        print(f"    {name:<26} {median(values):8.2f} ms {p95(values):9.2f} ms")


def report(label: str, samples: list[Sample]) -> None:
    table(
        f"{label} ({len(samples)} calls)",
        [
            ("whole call", [s.call for s in samples]),
            ("Meter.admit", [s.admit for s in samples]),
            ("Meter.settle", [s.settle for s in samples]),
            ("admit + settle", [s.metering for s in samples]),
            ("  of which the usage row", [s.usage_row for s in samples]),
            ("authenticate + API states", [s.checks for s in samples]),
            ("rest of the call", [s.call - s.metering - s.checks for s in samples]),
            ("CPU: whole call", [s.call_cpu for s in samples]),
            ("CPU: admit + settle", [s.metering_cpu for s in samples]),
        ],
    )
    shares = [s.metering / s.call * 100 for s in samples]
    print(f"    {'share (admit+settle)/call':<26} {median(shares):8.1f} %  {p95(shares):9.1f} %")
    cpu_shares = [s.metering_cpu / s.call_cpu * 100 for s in samples if s.call_cpu > 0]
    print(
        f"    {'share of CPU':<26} {median(cpu_shares):8.1f} %  {p95(cpu_shares):9.1f} %"
        "  (the calling thread's CPU time: not inflated by stalls of a shared machine)"
    )


def run_backend(
    name: str, detail: str, database_url: str, stub, calls, threads, verbose=False
) -> str:
    log_counter = LogCounter()
    logging.getLogger("proxy").addHandler(log_counter)
    load_before = os.getloadavg()[0]
    with StallProbe() as probe:
        bench = Bench(database_url, stub)
        client = bench.app.test_client()
        for i in range(5):  # warm up: SDK client, connection pool, statement caches
            bench.chat(client, f"warm-up {i}", "no")
        print(f"\n{name}: statements and transactions per call")
        bench.statements_per_call(verbose)
        misses = bench.sequential(calls, "no")
        hits = bench.sequential(calls, "yes")
        together, wall, failures = bench.concurrent(calls, threads)
        rows = bench.usage_rows()
    logging.getLogger("proxy").removeHandler(log_counter)
    made = 5 + 6 + len(misses) + 1 + len(hits) + threads + len(together)

    print(f"\n{name}: {detail}")
    print(
        f"  machine: load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        f"({os.cpu_count()} CPUs); an idle probe process was stalled > 50 ms {probe.stalls} "
        f"times, longest {probe.longest:.0f} ms"
    )
    print(f"  {'':<30} {'median':>8}    {'p95':>9}")
    report("cache miss, cache=no, one caller", misses)
    report("cache hit, cache=yes, one caller", hits)
    report(f"cache miss, {threads} threads x {calls // threads} calls at once", together)
    sequential_rate = 1000 / statistics.mean(s.call for s in misses)
    print(
        f"    {'throughput':<26} {len(together) / wall:8.1f} calls/s with {threads} threads "
        f"(one caller: {sequential_rate:.1f} calls/s)"
    )
    if failures:
        codes = ", ".join(f"{n} x {code}" for code, n in Counter(failures).most_common())
        print(f"    FAILED {len(failures)} of {len(together) + threads} concurrent calls: {codes}")
    print(f"  usage rows written: {rows} of {made} calls made")
    for message, count in log_counter.seen.most_common():
        print(f"  log: {count} x {message}")

    miss_metering = median([s.metering for s in misses])
    miss_call = median([s.call for s in misses])
    share = median([s.metering / s.call * 100 for s in misses])
    hit_share = median([s.metering / s.call * 100 for s in hits])
    row_share = median([s.usage_row / s.call * 100 for s in misses])
    cpu_share = median([s.metering_cpu / s.call_cpu * 100 for s in misses if s.call_cpu > 0])
    line = (
        f"{name}: admit+settle median {miss_metering:.1f} ms = {share:.0f}% of a "
        f"{miss_call:.1f} ms miss ({cpu_share:.0f}% of its CPU), {hit_share:.0f}% of a hit; "
        f"the usage row alone {median([s.usage_row for s in misses]):.2f} ms = {row_share:.1f}%"
    )
    if failures:
        line += f"; {len(failures)} of {len(together) + threads} concurrent calls FAILED"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS, help=f"per figure (default {CALLS})")
    parser.add_argument("--threads", type=int, default=THREADS, help="for the concurrent figure")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the gateway's log (tracebacks) on stderr, and the SQL statements of a call",
    )
    options = parser.parse_args()
    if options.verbose:
        logging.getLogger("proxy").addHandler(logging.StreamHandler())
    if options.calls < options.threads:
        parser.error("--calls must be at least --threads")

    began = time.perf_counter()
    print(
        f"{options.calls} calls per figure; v1/chat/completions through /api, stub upstream "
        "over HTTP; account with daily quota, balance and concurrency limit (all enforced)"
    )
    summaries = []
    with StubServer() as stub, tempfile.TemporaryDirectory() as workdir:
        summaries.append(
            run_backend(
                "sqlite",
                f"file {workdir}/bench.sqlite3, SQLite {sqlite3.sqlite_version}, "
                "WAL, synchronous=NORMAL",
                f"sqlite:///{workdir}/bench.sqlite3",
                stub,
                options.calls,
                options.threads,
                options.verbose,
            )
        )
        if not options.no_postgres:
            from tests.servers import PostgresServer

            try:
                server = PostgresServer().start()
            except RuntimeError as exc:
                print(f"\npostgresql: skipped ({exc})")
            else:
                try:
                    url = server.new_database()
                    import psycopg

                    with psycopg.connect(server._dsn("postgres")) as connection:
                        version = connection.execute("SHOW server_version").fetchone()[0]
                    summaries.append(
                        run_backend(
                            "postgresql",
                            f"private server {version} on 127.0.0.1 (tests/servers.py: "
                            "fsync=off, synchronous_commit=off, so commits never wait on disk)",
                            url,
                            stub,
                            options.calls,
                            options.threads,
                            options.verbose,
                        )
                    )
                finally:
                    server.stop()

    print()
    for line in summaries:
        print(line)
    print(f"(bench took {time.perf_counter() - began:.1f} s)")


if __name__ == "__main__":
    main()
