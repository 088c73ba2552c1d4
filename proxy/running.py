"""The calls this process is running: their reservations are kept alive while they run, and a
stopping worker settles (cuts) the ones that cannot finish before it is killed.

A call holds its reservation (quota, credits, concurrency slot) for as long as it runs: a
keeper thread renews the reservations of all running calls every third of the reservation
TTL, in one statement. So only a dead worker's reservation expires, and its hold is refunded
within about a TTL. In a gunicorn worker the keeper also runs with no call, to refund the
holds of workers that died (config/gunicorn.conf.py starts it).

A record here is a proxy.calls.Record: `request_id`, `method`, `started`, `admission`, and
`cut(detail)`, which settles the call unless its own thread already did (once, either way).
No Flask here.
"""

from __future__ import annotations

import logging
import threading
import time

from proxy.errors import TIMEOUT, GatewayError

log = logging.getLogger("proxy")

# What a call cut by a stopping gateway answers and records (docs/deploy.md).
CUT_CODE = TIMEOUT
CUT_REASON = (
    "the gateway was stopping (a restart or deploy) and this call ran past the time it "
    "waits for running calls; nothing was charged: retry"
)


class RunningCalls:
    def __init__(self, meter, *, renew_interval_seconds: float):
        self.meter = meter
        self.renew_interval = renew_interval_seconds
        self._records: dict[str, object] = {}  # request id -> Record
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._always = False  # keep (and sweep) even with no call: a served worker
        self._stopping = False
        self._cut_timer: threading.Timer | None = None

    def add(self, record) -> None:
        """Register an admitted call; GatewayError 4017 once the process is cutting calls."""
        with self._lock:
            if self._stopping:
                raise GatewayError(CUT_CODE, CUT_REASON)
            self._records[record.request_id] = record
            self._start_keeper_locked()

    def remove(self, record) -> None:
        with self._lock:
            self._records.pop(record.request_id, None)

    # -- the keeper ------------------------------------------------------------------------------

    def keep_always(self) -> None:
        """Run the keeper for the life of the process: it refunds the expired reservations of
        every account at once and then every interval, as well as renewing."""
        with self._lock:
            self._always = True
            self._start_keeper_locked()

    def _start_keeper_locked(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(
                target=self._keep, name="gateway-reservation-keeper", daemon=True
            )
            self._keeper.start()

    def _keep(self) -> None:
        """The keeper thread: while calls run (always, in a served worker), renew them."""
        while True:
            if self._always:
                self._quietly(self.meter.refund_expired)
            time.sleep(self.renew_interval)
            with self._lock:
                records = list(self._records.values())
                if not records and not self._always:
                    self._keeper = None
                    return
            if records:
                self._quietly(self._renew, records)

    def _renew(self, records: list) -> None:
        admissions = {r.request_id: r.admission for r in records if r.admission is not None}
        if not admissions:
            return
        self.meter.renew(list(admissions.values()))
        with self._lock:
            settled = [a for rid, a in admissions.items() if rid not in self._records]
        for admission in settled:  # the renewal may have put its Redis slot back
            self.meter.release_slot(admission)

    @staticmethod
    def _quietly(work, *args) -> None:
        try:
            work(*args)
        except Exception:  # the next round retries; the thread must not die
            log.exception("keeping reservations failed; retrying in the next round")

    # -- a stopping worker ---------------------------------------------------------------------

    def cut_after(self, seconds: float) -> None:
        """Cut the calls still running `seconds` from now (the worker is being stopped). Once:
        a worker may get SIGTERM twice (from its master and from systemd, say)."""
        with self._lock:
            if self._cut_timer is not None:
                return
            self._cut_timer = threading.Timer(max(0.0, seconds), self.cut_all)
        self._cut_timer.name, self._cut_timer.daemon = "gateway-cut-calls", True
        self._cut_timer.start()

    def cut_all(self) -> int:
        """Settle every running call as cut (4017, refunded) and refuse new ones; one log line
        per cut call, with its request id. How many were cut."""
        with self._lock:
            self._stopping = True
            records = list(self._records.values())
        cut = 0
        for record in records:
            try:
                if not record.cut(CUT_REASON):
                    continue  # its own thread settled it meanwhile
            except Exception:
                log.exception("cutting request %s failed", record.request_id)
                continue
            cut += 1
            log.warning(
                "request %s (%s) cut after %.1f s: the gateway is stopping; settled as %s, "
                "not charged",
                record.request_id,
                record.method or "?",
                time.perf_counter() - record.context.started,
                CUT_CODE,
            )
        return cut
