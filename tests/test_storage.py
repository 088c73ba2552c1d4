"""The database schema as gunicorn creates it: every worker calls ensure_schema at boot, at once."""

from __future__ import annotations

import multiprocessing

from sqlalchemy import inspect, text

from proxy import storage
from tests.conftest import create_account

WORKERS = 16


def _boot_worker(url: str, barrier, failures) -> None:
    barrier.wait()
    try:
        storage.ensure_schema(storage.make_engine(url))
    except Exception as exc:  # reported to the test, which names it
        failures.put(f"{type(exc).__name__}: {exc}")


def test_workers_booting_at_once_all_create_one_sqlite_schema(tmp_path):
    # Like gunicorn's workers, forked from a process with no other threads: forking pytest
    # itself could copy a SQLite mutex that another test's thread held at that instant, and
    # the child would wait on it forever.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    for round_number in range(10):  # the race needs a few tries to show on an idle machine
        url = f"sqlite:///{tmp_path / f'round-{round_number}.sqlite3'}"
        barrier = context.Barrier(WORKERS)
        failures = context.Queue()
        workers = [
            context.Process(target=_boot_worker, args=(url, barrier, failures))
            for _ in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                worker.join(timeout=120)
        finally:
            for worker in workers:
                if worker.is_alive():  # a hung worker must not outlive the test
                    worker.kill()
        reported = []
        while not failures.empty():
            reported.append(failures.get())
        assert reported == []
        assert [worker.exitcode for worker in workers] == [0] * WORKERS
        tables = set(inspect(storage.make_engine(url)).get_table_names())
        assert tables == set(storage.metadata.tables)


def test_older_database_keeps_its_lifetime_counts_in_api_info(make_app, tmp_path):
    """Before the lifetime counters moved to `accounts`, they were per-day columns of
    `account_days`; a database of that shape gets them filled once when the gateway starts."""
    url = f"sqlite:///{tmp_path / 'older.sqlite3'}"
    app = make_app(DATABASE_URL=url)
    account = create_account(app.test_cli_runner(), "veteran", "--daily-quota", "9")
    engine = app.extensions["gateway"].engine
    with engine.begin() as connection:  # the older shape, with 7 + 2 + 1 calls settled
        for column in storage.LIFETIME_COUNTERS:
            connection.execute(text(f"ALTER TABLE accounts DROP COLUMN {column}"))
            connection.execute(
                text(f"ALTER TABLE account_days ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
            )
        connection.execute(
            text(
                "INSERT INTO account_days (account_id, day, used, extra_calls, upstream_calls,"
                " cache_hits, uncharged) VALUES (:id, '2020-01-01', 9, 0, 6, 2, 1),"
                " (:id, '2020-01-02', 1, 0, 1, 0, 0)"
            ),
            {"id": account["id"]},
        )
    engine.dispose()
    upgraded = make_app(DATABASE_URL=url)
    envelope = (
        upgraded.test_client()
        .get(
            "/api",
            query_string={
                "key": account["key"],
                "secret": account["secret"],
                "method": "v1/models",
            },
        )
        .get_json()
    )
    assert envelope["api_info"] == "today:1 max:9 all[11=8+2+1];expires:never"


def test_a_postgresql_connection_closed_while_idle_is_replaced_before_a_call(
    make_app, postgres_server, monkeypatch
):
    """Idle pooled connections are pinged before use (not every checkout: a round trip)."""
    monkeypatch.setattr(storage, "PING_AFTER_IDLE_SECONDS", 0.0)  # this one has idled enough
    app = make_app(DATABASE_URL=postgres_server.new_database())
    client, account = app.test_client(), create_account(app.test_cli_runner())
    query = {"key": account["key"], "secret": account["secret"], "method": "v1/models"}
    assert client.get("/api", query_string=query).get_json()["error_code"] == "0000"
    engine = app.extensions["gateway"].engine
    with engine.connect() as pooled, engine.connect() as other:
        pid = pooled.execute(text("SELECT pg_backend_pid()")).scalar_one()  # what calls use
        pooled.rollback()
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.commit()
    assert client.get("/api", query_string=query).get_json()["error_code"] == "0000"
