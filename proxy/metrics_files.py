"""The folder where gunicorn's workers keep their metric values (prometheus_client's
multiprocess mode), one per master: made empty when the master starts, a dead worker's
in-flight gauge dropped, removed when the master exits (docs/deploy.md, "Metrics").

Called from config/gunicorn.conf.py's hooks, in the master. The variable must be set before
any worker imports prometheus_client (proxy/metrics.py), so this module never imports it at
its top.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
# The folder this master made; kept here, since gunicorn re-reads its config file on SIGHUP.
_made: list[str] = []


def prepare(environ=os.environ) -> str:
    """Before the first worker: the operator's PROMETHEUS_MULTIPROC_DIR emptied of an earlier
    run's values, else a private folder made (removed by remove_made) and named in `environ`
    for the workers. Returns the folder."""
    configured = environ.get(ENV, "")
    if configured:
        os.makedirs(configured, exist_ok=True)
        for stale in glob.glob(os.path.join(configured, "*.db")):
            os.remove(stale)  # counters of an earlier master would be added to this one's
        return configured
    made = tempfile.mkdtemp(prefix="gateway-metrics-")
    _made.append(made)
    environ[ENV] = made
    return made


def imported_too_early() -> bool:
    """Whether prometheus_client was imported before the folder was named (gunicorn's
    --preload loads the app in the master first): each worker would then count alone."""
    return "prometheus_client.values" in sys.modules


def worker_gone(pid: int, environ=os.environ) -> None:
    """A worker exited: its in-flight calls no longer count; its counters stay."""
    directory = environ.get(ENV, "")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


def remove_made() -> None:
    """At the master's exit: the folder prepare() made, and everything in it."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)
