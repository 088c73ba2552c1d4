"""Image jobs in the database: any worker answers for a job, and a job whose worker stopped
beating its heartbeat is failed, never left pending."""

from __future__ import annotations

import threading
import time

import pytest

from proxy import storage
from proxy.errors import GatewayError
from proxy.jobs import ImageJobs
from tests.served import wait_until


@pytest.fixture
def engine(tmp_path):
    engine = storage.make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    storage.ensure_schema(engine)
    yield engine
    engine.dispose()


def jobs_on(engine, run, *, heartbeat=0.2, stale=1.0) -> ImageJobs:
    return ImageJobs(engine, run, heartbeat_seconds=heartbeat, stale_seconds=stale, max_running=2)


def test_a_job_runs_in_the_background_and_any_worker_reads_its_answer(engine):
    owner = jobs_on(engine, lambda args: {"data": [{"url": "u/" + args["prompt"]}]})
    other_worker = jobs_on(engine, lambda args: {})
    imgid = owner.submit(7, {"prompt": "sun", "model": "m"}, "req-1")
    wait_until(lambda: other_worker.get(7, imgid)["status"] == "done", timeout=10)
    assert other_worker.get(7, imgid) == {
        "imgid": imgid,
        "status": "done",
        "progress": 100,
        "prompt": "sun",
        "model": "m",
        "created": other_worker.get(7, imgid)["created"],
        "data": [{"url": "u/sun"}],
    }
    owner.shutdown()


def test_a_job_whose_worker_stopped_beating_is_failed_with_a_reason(engine):
    release = threading.Event()
    dying = jobs_on(engine, lambda args: release.wait(30) and {"data": [{"url": "late"}]})
    imgid = dying.submit(7, {"prompt": "p"}, "req-1")
    wait_until(lambda: dying.get(7, imgid)["status"] == "running", timeout=10)
    dying._stopping.set()  # its heartbeat stops, as when the worker process is killed
    reader = jobs_on(engine, lambda args: {})
    wait_until(lambda: reader.get(7, imgid)["status"] == "failed", timeout=10)
    job = reader.get(7, imgid)
    assert job["error"]["code"] == "5000"
    assert job["error"]["reason"].startswith("the worker running this job stopped")
    release.set()  # the "dead" worker's late answer must not revive the job
    dying.shutdown()
    assert reader.get(7, imgid)["status"] == "failed"
    assert "data" not in reader.get(7, imgid)


def test_a_job_longer_than_stale_seconds_stays_running_while_its_worker_beats(engine):
    release = threading.Event()
    # stale 10 heartbeats: a loaded CI machine has starved a 0.2 s heartbeat for a whole second
    owner = jobs_on(
        engine, lambda args: release.wait(30) and {"data": []}, heartbeat=0.5, stale=5.0
    )
    reader = jobs_on(engine, lambda args: {}, heartbeat=0.5, stale=5.0)
    imgid = owner.submit(7, {"prompt": "p"}, "req-1")
    time.sleep(6.0)  # longer than stale_seconds: only the heartbeat keeps it alive
    assert reader.get(7, imgid)["status"] == "running"
    release.set()
    wait_until(lambda: reader.get(7, imgid)["status"] == "done", timeout=10)
    owner.shutdown()


def test_an_upstream_failure_fails_the_job_with_the_gateway_code(engine):
    def fail(args):
        raise GatewayError("4002", "the upstream answered HTTP 500")

    owner = jobs_on(engine, fail)
    imgid = owner.submit(7, {"prompt": "p"}, "req-1")
    wait_until(lambda: owner.get(7, imgid)["status"] == "failed", timeout=10)
    assert owner.get(7, imgid)["error"] == {
        "code": "4002",
        "reason": "the upstream answered HTTP 500",
    }
    owner.shutdown()


def test_stale_seconds_must_exceed_two_heartbeats(engine):
    with pytest.raises(ValueError, match="JOB_STALE_SECONDS must be more than twice"):
        jobs_on(engine, lambda args: {}, heartbeat=5, stale=10)
