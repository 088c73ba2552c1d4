"""The database schema as gunicorn creates it: every worker calls ensure_schema at boot, at once."""

from __future__ import annotations

import multiprocessing

from sqlalchemy import inspect

from proxy import storage

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
