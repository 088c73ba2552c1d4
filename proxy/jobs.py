"""Image jobs (`images/submit`, `images/get`): submitted at once, run in the background, kept in
the database so that any worker or host answers `images/get`.

A job is pending when stored, running once its worker sends it upstream, then done (with the
upstream's answer) or failed (with a gateway code and a reason). The worker that owns a job
beats its heartbeat every `heartbeat_seconds`; whoever reads a pending or running job whose
heartbeat is older than `stale_seconds` marks it failed (its worker died or was restarted),
so no job stays pending forever. Progress is what the gateway knows: 0 stored, 10 sent
upstream, 100 answered; upstreams report no finer progress for image generation.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from proxy import storage
from proxy.errors import PARAM_ERROR, UNKNOWN_ERROR, GatewayError

log = logging.getLogger("proxy")

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
UNFINISHED = (PENDING, RUNNING)


class ImageJobs:
    def __init__(
        self,
        engine: Engine,
        run: Callable[[dict], dict],
        *,
        heartbeat_seconds: float,
        stale_seconds: float,
        max_running: int,
    ):
        """`run(args)` calls the upstream and returns its answer, or raises GatewayError."""
        if stale_seconds <= 2 * heartbeat_seconds:
            raise ValueError("JOB_STALE_SECONDS must be more than twice JOB_HEARTBEAT_SECONDS")
        self.engine = engine
        self.run = run
        self.heartbeat_seconds = heartbeat_seconds
        self.stale = timedelta(seconds=stale_seconds)
        self.max_running = max_running
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._executor: ThreadPoolExecutor | None = None
        self._heart: threading.Thread | None = None
        self._started = threading.Lock()
        self._stopping = threading.Event()

    # -- submit and run -----------------------------------------------------------------------

    def submit(self, account_id: int, args: dict, request_id: str) -> str:
        """Store a pending job and start it in the background; its imgid."""
        self._start_workers()
        now = storage.utc_now()
        for _attempt in range(5):
            job_id = str(10**15 + secrets.randbelow(9 * 10**15))  # 16 digits, as onebound's
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        insert(storage.image_jobs).values(
                            id=job_id,
                            account_id=account_id,
                            args=json.dumps(args, ensure_ascii=False),
                            status=PENDING,
                            progress=0,
                            owner=self.owner,
                            request_id=request_id,
                            heartbeat_at=now,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError:  # that id is taken: draw another
                continue
            self._executor.submit(self._run_job, job_id, args)
            return job_id
        raise GatewayError(UNKNOWN_ERROR, "no free job id was found; submit again")

    def _start_workers(self) -> None:
        """The executor and the heartbeat thread, started by the first submission of this
        process (gunicorn forks its workers before any call, so each worker has its own)."""
        with self._started:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_running, "image-job")
                self._heart = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
                self._heart.start()

    def _run_job(self, job_id: str, args: dict) -> None:
        if not self._move(job_id, UNFINISHED, status=RUNNING, progress=10):
            return  # already marked failed by a reader: not ours to run any more
        try:
            payload = self.run(args)
        except GatewayError as exc:
            self._move(job_id, (RUNNING,), status=FAILED, error_code=exc.code, reason=exc.detail)
            return
        except Exception:
            log.exception("image job %s failed", job_id)
            self._move(
                job_id,
                (RUNNING,),
                status=FAILED,
                error_code=UNKNOWN_ERROR,
                reason=f"the job failed inside the gateway; see the log of job {job_id}",
            )
            return
        self._move(
            job_id,
            (RUNNING,),
            status=DONE,
            progress=100,
            result=json.dumps(payload, ensure_ascii=False),
        )

    def _move(self, job_id: str, from_states: tuple[str, ...], **values) -> bool:
        """Change a job that is still in one of `from_states`; False when it no longer is."""
        table = storage.image_jobs
        if "reason" in values and values["reason"]:
            values["reason"] = values["reason"][:500]
        with self.engine.begin() as connection:
            moved = connection.execute(
                update(table)
                .where(table.c.id == job_id, table.c.status.in_(from_states))
                .values(updated_at=storage.utc_now(), **values)
            ).rowcount
        return moved == 1

    def _beat(self) -> None:
        table = storage.image_jobs
        while not self._stopping.wait(self.heartbeat_seconds):
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        update(table)
                        .where(table.c.owner == self.owner, table.c.status.in_(UNFINISHED))
                        .values(heartbeat_at=storage.utc_now())
                    )
            except Exception:  # the database is away for a moment: beat again next time
                log.warning("image job heartbeat failed", exc_info=True)

    def shutdown(self) -> None:
        """Stop the heartbeat and wait for running jobs (tests; a worker's exit)."""
        self._stopping.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- read -----------------------------------------------------------------------------

    def get(self, account_id: int, job_id: str) -> dict:
        """The job as `images/get` answers it; a job of another account does not exist."""
        row = self._row(account_id, job_id)
        if row.status in UNFINISHED and row.heartbeat_at < storage.utc_now() - self.stale:
            stopped_at = row.heartbeat_at.replace(tzinfo=UTC).isoformat(timespec="seconds")
            self._move(
                job_id,
                UNFINISHED,
                status=FAILED,
                error_code=UNKNOWN_ERROR,
                reason=(
                    "the worker running this job stopped (its last heartbeat was at "
                    f"{stopped_at}); submit the job again"
                ),
            )
            row = self._row(account_id, job_id)
        return job_view(row)

    def _row(self, account_id: int, job_id: str):
        table = storage.image_jobs
        with self.engine.connect() as connection:
            row = connection.execute(
                select(table).where(table.c.id == job_id, table.c.account_id == account_id)
            ).first()
        if row is None:
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args.imgid: there is no image job {job_id!r} for this key; "
                "images/submit returns the imgid to ask for",
            )
        return row


def job_view(row) -> dict:
    args = json.loads(row.args)
    view = {
        "imgid": row.id,
        "status": row.status,
        "progress": row.progress,
        "prompt": args.get("prompt", ""),
        "model": args.get("model", ""),
        "created": int(row.created_at.replace(tzinfo=UTC).timestamp()),
    }
    if row.status == DONE:
        result = json.loads(row.result)
        view["data"] = result.get("data", [])
    if row.status == FAILED:
        view["error"] = {"code": row.error_code, "reason": row.reason}
    return view
