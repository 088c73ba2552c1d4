"""gunicorn settings. Timeouts are ordered: upstream < this worker timeout < nginx's
proxy_read_timeout (see docs/deploy.md)."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import Config, checked_gunicorn_timeout  # noqa: E402
from proxy import metrics_files  # noqa: E402
from proxy.logs import logging_config  # noqa: E402
from proxy.serving import ACCESS_LOG_FORMAT  # noqa: E402

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread (threads: a worker waiting on a slow upstream still serves other calls) that accepts
# only while a thread is free, and never quotes a bad request in its log or its JSON refusal
# (proxy/serving.py).
worker_class = "proxy.serving.GatewayWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
try:
    timeout = checked_gunicorn_timeout()  # above the upstream's timeout x attempts
except ValueError as exc:
    raise SystemExit(str(exc)) from None
# SIGTERM: a worker stops accepting and lets running calls finish for up to this long, then
# the master SIGKILLs it. Calls still running a little before that are cut (docs/deploy.md).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), which two
# gateways on one machine would fight over; the gateway is managed by signals, so it is off.
control_socket_disable = True
# Legacy GET clients put the whole `_o_args` in the URL: allow the largest bounded line.
limit_request_line = 8190

# Logs: one line format for gunicorn and the app (proxy/logs.py). The access line prints the
# path (%(U)s) but never the query string, where legacy clients put key and secret; no header.
accesslog = "-"
errorlog = "-"
access_log_format = ACCESS_LOG_FORMAT
logger_class = "proxy.serving.GatewayLogger"
logconfig_dict = logging_config()


# -- metrics (proxy/metrics.py): every worker writes its values to one folder per master, which a
# scrape of any worker adds up. Set before a worker imports prometheus_client (it reads it then).


def on_starting(server):
    """In the master, before the first worker: the metrics folder, empty; the upstreams file
    checked and copied aside as the last good one."""
    _prepare_metrics_folder(server)
    _check_upstreams_file(server, reloading=False)


def _prepare_metrics_folder(server) -> None:
    if metrics_files.imported_too_early():
        server.log.warning(
            "metrics: the app was loaded before its workers (--preload?), so "
            "/metrics shows one worker's values; run without preload_app"
        )
    metrics_files.prepare()
    server.log.info("metrics: workers' values in %s", os.environ[metrics_files.ENV])


def child_exit(server, worker):
    """In the master: an exited worker's calls are no longer in flight (its counters stay)."""
    metrics_files.worker_gone(worker.pid)


def on_exit(server):
    """In the master, as it exits: the metrics folder it made (an operator's one stays)."""
    metrics_files.remove_made()


def post_worker_init(worker):
    """Before a worker takes calls: import the SDK's lazily loaded parts now, not mid-call."""
    worker.wsgi.extensions["gateway"].dispatcher.router.warm_up()
    _account_for_running_calls(worker)


# -- running calls: kept alive while they run, cut before the SIGKILL of a stop (proxy/running.py)

# Calls still running this long before the master's SIGKILL are cut: time to settle and log them.
_CUT_MARGIN_SECONDS = min(5.0, graceful_timeout / 5)


def _running_calls(worker):
    return worker.wsgi.extensions["gateway"].running


def _account_for_running_calls(worker):
    """Keep this worker's reservations renewed (and refund dead workers' ones, now and then
    periodically); on SIGTERM, cut the calls that would still run at the SIGKILL."""
    running = _running_calls(worker)
    running.keep_always()
    stop_accepting = worker.handle_exit

    def on_sigterm(signum, frame):
        stop_accepting(signum, frame)
        running.cut_after(graceful_timeout - _CUT_MARGIN_SECONDS)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: calls are not interrupted


def worker_int(worker):
    """SIGINT or SIGQUIT: the worker exits at once, so its running calls are cut now."""
    if worker.booted:
        _running_calls(worker).cut_all()


def worker_exit(server, worker):
    """The worker's loop has ended (in the worker; gunicorn also calls this in the master):
    calls still running now will not finish, so they are cut."""
    if worker.booted:  # only in the worker, once it has served (False in the master)
        _running_calls(worker).cut_all()


# -- UPSTREAMS_FILE on a reload (kill -HUP): the master checks it before forking new workers


def on_reload(server):
    _check_upstreams_file(server, reloading=True)


def _check_upstreams_file(server, *, reloading: bool) -> None:
    """A good file is copied aside as the last good one; on a HUP, a bad file is refused
    (logged with its reason) and the new workers read that copy, so the old upstreams stay
    and the gateway keeps serving (a bad file at start still stops it, as before)."""
    import tempfile

    from proxy.upstreams import UpstreamRouter

    given = server.__dict__.setdefault("gateway_upstreams_file", os.environ.get("UPSTREAMS_FILE"))
    if not given:
        return
    os.environ["UPSTREAMS_FILE"] = given
    try:
        UpstreamRouter.load(vars(Config()))
        with open(given, "rb") as file:
            text = file.read()
    except (ValueError, OSError) as refused:
        last_good = server.__dict__.get("gateway_last_good_upstreams")
        if reloading and last_good:
            server.log.error("UPSTREAMS_FILE refused, the previous upstreams stay: %s", refused)
            os.environ["UPSTREAMS_FILE"] = last_good
        return
    descriptor, last_good = tempfile.mkstemp(prefix="gateway-upstreams-", suffix=".toml")
    with os.fdopen(descriptor, "wb") as copy:
        copy.write(text)
    previous = server.__dict__.get("gateway_last_good_upstreams")
    server.gateway_last_good_upstreams = last_good
    if previous:
        os.unlink(previous)
