"""The operator console, `/admin`: server-rendered pages (Jinja templates in
proxy/templates/admin/, one stylesheet, no script) over the same operations as the admin
commands (proxy/operations.py), each written to the audit log naming who did it: `admin:NAME`
for an operator (proxy/operators.py), `admin` for the ADMIN_TOKEN.

Off unless ADMIN_TOKEN is set or an operator exists: every /admin path and verb is then 404,
as for a path that does not exist. The token (name left empty), or an operator's name and
password, logs a browser in to a signed session cookie (SECRET_KEY, or one derived from the
token or the sealing key) that lives ADMIN_SESSION_HOURS; nothing else does: an account's key,
secret or signature opens no page. Failed logins are limited per address and per name
(proxy/login_limits.py). Every form carries the session's CSRF token; a POST without it is
refused (docs/console.md)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from contextlib import contextmanager
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_smorest import Api
from werkzeug.local import LocalProxy

from proxy import audit, operations
from proxy.api_states import ALL_APIS, EVERY_ACCOUNT, MAINTENANCE, STOPPED
from proxy.catalog import CATALOG, PLATFORMS
from proxy.doors import kit
from proxy.errors import ERROR_CODES
from proxy.failover import describe_members
from proxy.keys import parse_list, parse_networks
from proxy.login_limits import DatabaseLoginFailures, LoginLimit, RedisLoginFailures
from proxy.operators import NAME_PATTERN, normal_name
from proxy.storage import utc_now
from proxy.usage import calls_by_method, failed_calls, usage_report
from proxy.usage_charts import lines, stacked_bars
from proxy.usage_series import DEFAULT_PERIOD, LATENCY_ROWS_READ, PERIODS, usage_series

log = logging.getLogger("proxy")

TOKEN_WHO = "admin"  # who the audit log names for an action of a session opened with the token
# Who the audit log names for this request's console action ("admin:NAME" or "admin"): read
# from the logged-in session at each use, so every operation call simply passes WHO.
WHO = LocalProxy(lambda: g.admin_who)
ANONYMOUS = "anonymous"  # who a login lockout is recorded for: nobody has logged in
admin_blp = Blueprint("admin", __name__, url_prefix="/admin")
OPEN_PAGES = ("admin.login", "admin.stylesheet")  # served before logging in
API_STATES = {"stop": STOPPED, "maintenance": MAINTENANCE, "start": None}
SESSION_KEY_PURPOSE = b"onebound-gateway admin session key"


def register(app: Flask, api: Api) -> None:
    gateway = app.extensions["gateway"]
    if not app.config.get("SECRET_KEY"):
        # Derived: the same on every worker and host sharing the token (a new token logs
        # out), or without one the sealing key, which hosts sharing a database share.
        token = app.config["ADMIN_TOKEN"]
        app.config["SECRET_KEY"] = (
            hmac.new(token.encode(), SESSION_KEY_PURPOSE, hashlib.sha256).hexdigest()
            if token
            else gateway.accounts.sealer.derive_key(SESSION_KEY_PURPOSE)
        )
    app.config.update(
        SESSION_COOKIE_NAME="gateway_admin",
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.session_interface = ConsoleSessionInterface()
    app.extensions["admin_login_limit"] = _login_limit(app.config, gateway)
    app.before_request(_console_off_is_404)
    app.register_blueprint(admin_blp)  # not on the OpenAPI document: not for clients


def _login_limit(config, gateway) -> LoginLimit:
    failures, window = config["ADMIN_LOGIN_FAILURES"], config["ADMIN_LOGIN_WINDOW_SECONDS"]
    if failures < 1 or window <= 0:
        raise ValueError(
            f"ADMIN_LOGIN_FAILURES={failures} and ADMIN_LOGIN_WINDOW_SECONDS={window:g} must "
            "both be above 0 (e.g. 10 failures in 900 seconds)"
        )
    store = (
        RedisLoginFailures(gateway.redis)
        if gateway.redis is not None
        else DatabaseLoginFailures(gateway.engine)
    )
    return LoginLimit(store, failures=failures, window_seconds=window)


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, for /admin only, marked Secure as ADMIN_COOKIE_SECURE says."""

    def open_session(self, app: Flask, request):
        if not _is_console_path(request.path):  # the API doors have no session to read
            return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        setting = app.config["ADMIN_COOKIE_SECURE"]
        if setting == "auto":  # HTTPS itself, or a trusted proxy's X-Forwarded-Proto (ProxyFix)
            return request.is_secure
        return setting == "yes"


def _is_console_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


# -- who may see the console ----------------------------------------------------------------


def console_on() -> bool:
    """ADMIN_TOKEN is set, or an operator exists (a copy at most SETTINGS_CACHE_SECONDS old)."""
    return bool(current_app.config["ADMIN_TOKEN"]) or kit.gateway().operators.any_exist()


def _console_off_is_404():
    """Every /admin path and verb is a plain 404 while the console is off (before routing's
    405s and redirects could tell that the console exists)."""
    if _is_console_path(request.path) and not console_on():
        abort(404)


def _token_mark() -> str:
    """What a session holds to say it was opened with the current ADMIN_TOKEN (not the token)."""
    token = current_app.config["ADMIN_TOKEN"].encode()
    return hmac.new(token, b"admin session mark", hashlib.sha256).hexdigest()[:32]


def _session_who() -> str | None:
    """Who this browser is logged in as ("admin:NAME" or "admin"), or None: not logged in,
    the session is too old, its operator was removed or has a new password, or the token
    that opened it changed."""
    opened = session.get("opened_at")
    lifetime = current_app.config["ADMIN_SESSION_HOURS"] * 3600
    if not isinstance(opened, (int, float)) or time.time() - opened >= lifetime:
        return None
    name = session.get("operator")
    if name:
        stamp = kit.gateway().operators.session_stamp(str(name))
        presented = str(session.get("stamp", ""))
        matches = stamp is not None and hmac.compare_digest(presented, stamp)
        return f"admin:{name}" if matches else None
    token_set = bool(current_app.config["ADMIN_TOKEN"])
    if token_set and hmac.compare_digest(str(session.get("admin", "")), _token_mark()):
        return TOKEN_WHO
    return None


def _logged_in() -> bool:
    if "admin_who" not in g:  # once per request: the templates ask too
        g.admin_who = _session_who()
    return g.admin_who is not None


@admin_blp.before_request
def guard():
    if not console_on():
        abort(404)
    if request.method == "POST" and not _csrf_matches():
        log.warning("admin %s refused: missing or wrong CSRF token", request.path[:80])
        return _refused("This form has expired or did not come from the console; reload the page.")
    if request.endpoint not in OPEN_PAGES and not _logged_in():
        return redirect(url_for("admin.login"))
    return None


@admin_blp.after_request
def page_headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # secrets are shown once, never cached
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_matches() -> bool:
    presented, expected = request.form.get("csrf", ""), session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


@admin_blp.context_processor
def page_values() -> dict:
    return {
        "csrf_token": csrf_token,
        "logged_in": _logged_in,
        "logged_in_as": lambda: g.get("admin_who"),
        "code_text": _code_text,
    }


def _code_text(code: str) -> str:
    entry = ERROR_CODES.get(code)
    return entry.text("en") if entry else ""


def _refused(reason: str, status: int = 400):
    return make_response(render_template("admin/refused.html", reason=reason), status)


@admin_blp.route("/console.css")
def stylesheet():
    folder = os.path.join(current_app.root_path, current_app.template_folder, "admin")
    return send_from_directory(folder, "console.css")


WRONG_TOKEN = "That is not the console's token."
WRONG_OPERATOR = "Wrong name or password."  # the same for an unknown name: no enumeration


@admin_blp.route("/login", methods=["GET", "POST"])
def login():
    """An operator's name and password, or (name left empty) the ADMIN_TOKEN. A login from an
    address or for a name with too many recent failures is refused (429) unchecked."""
    if request.method == "GET":
        return render_template("admin/login.html")
    name, password = normal_name(request.form.get("name", "")), request.form.get("token", "")
    address, limit = kit.client_ip(), current_app.extensions["admin_login_limit"]
    with _limit_reachable():
        wait = limit.retry_after(address, name)
    if wait > 0:
        log.warning("admin login refused unchecked: %s locked out", _login_label(name, address))
        return _locked_out(wait)
    opened = _session_opened_by(name, password)
    if opened is None:
        log.warning("admin login refused: wrong %s", _login_label(name, address))
        with _limit_reachable():
            newly_locked = limit.failed(address, name)
        for scope in newly_locked:
            _record_lockout(scope, limit, address)
        page = render_template("admin/login.html", error=WRONG_OPERATOR if name else WRONG_TOKEN)
        return make_response(page, 401)
    session.clear()
    session.update(opened, opened_at=time.time(), csrf=secrets.token_urlsafe(32))
    who = f"admin:{opened['operator']}" if "operator" in opened else TOKEN_WHO
    audit.record(kit.gateway().engine, who, "console.login", "", f"from={address}")
    return redirect(url_for("admin.accounts"))


def _session_opened_by(name: str, password: str) -> dict | None:
    """What a session opened by these credentials holds (an operator's name and current session
    stamp, or the token's mark), or None when they open nothing."""
    if name:
        operator = kit.gateway().operators.verify(name, password)
        return {"operator": operator.name, "stamp": operator.session_stamp} if operator else None
    token = current_app.config["ADMIN_TOKEN"]
    # Digests of equal length: the comparison takes the same time whatever was typed.
    typed, expected = hashlib.sha256(password.encode()), hashlib.sha256(token.encode())
    if token and hmac.compare_digest(typed.digest(), expected.digest()):
        return {"admin": _token_mark()}
    return None


def _login_label(name: str, address: str) -> str:
    """For the log: what was tried, from where; never the password (nor a name that looks
    like one was typed in the name field)."""
    if not name:
        return f"token from {address}"
    shown = name if NAME_PATTERN.fullmatch(name) else "(not an operator name)"
    return f"name or password for {shown} from {address}"


def _locked_out(wait: float):
    seconds = math.ceil(wait)
    until = datetime.fromtimestamp(time.time() + seconds, UTC).strftime("%H:%M:%S UTC")
    error = (
        "Too many failed logins from this address or for this name. The login is locked; "
        f"try again after {until} (in {_duration(seconds)})."
    )
    response = make_response(render_template("admin/login.html", error=error), 429)
    response.headers["Retry-After"] = str(seconds)
    return response


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def _record_lockout(scope: str, limit: LoginLimit, address: str) -> None:
    detail = f"failures={limit.failures} window={limit.window_seconds:g}s from={address}"
    log.warning("admin login locked for %s: %s", scope, detail)
    audit.record(kit.gateway().engine, ANONYMOUS, "console.lockout", scope, detail)


@contextmanager
def _limit_reachable():
    """The login limit's store (Redis) unreachable: no login is checked (503)."""
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError:
        log.warning("admin login refused: the login limit (Redis) is unreachable", exc_info=True)
        reason = "The login limit cannot be checked (Redis is unreachable); retry shortly."
        abort(_refused(reason, 503))


@admin_blp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("admin.login"))


@admin_blp.route("/")
def home():
    return redirect(url_for("admin.accounts"))


# -- accounts and their keys ----------------------------------------------------------------


@admin_blp.route("/accounts", methods=["GET", "POST"])
def accounts():
    created = None
    if request.method == "POST":
        try:
            created = operations.create_account(
                kit.gateway(),
                WHO,
                _text("name", required=True),
                daily_quota=_whole("daily_quota", minimum=0),
                balance=_whole("balance", minimum=0),
                rpm=_whole("rpm", minimum=1),
            )
        except ValueError as bad:
            flash(str(bad), "error")
    return _accounts_page(created)


def _accounts_page(created=None):
    gateway = kit.gateway()
    query = request.args.get("q", "").strip()
    rows = [
        a
        for a in gateway.accounts.list()
        if not query or query.lower() in a.name.lower() or query in a.key
    ]
    figures = {a.id: gateway.meter.today_figures(a.id) for a in rows}
    return render_template(
        "admin/accounts.html", accounts=rows, figures=figures, query=query, created=created
    )


@admin_blp.route("/accounts/<key>")
def account(key: str, new_key=None):
    gateway = kit.gateway()
    try:
        found = gateway.accounts.get(key)
        keys = gateway.accounts.keys_of(key)
    except LookupError:
        abort(404)
    return render_template(
        "admin/account.html",
        account=found,
        keys=keys,
        today=gateway.meter.today_figures(found.id),
        usage=usage_report(gateway.engine, account_id=found.id, since_utc=None),
        new_key=new_key,
    )


@admin_blp.route("/accounts/<key>/<action>", methods=["POST"])
def account_action(key: str, action: str):
    gateway = kit.gateway()
    try:
        if action == "stop":
            operations.stop_account(gateway, WHO, key)
            flash(f"Account {key} stopped: its calls now answer 4007.", "done")
        elif action == "start":
            operations.start_account(gateway, WHO, key)
            flash(f"Account {key} started.", "done")
        elif action == "topup":
            credits, calls = _whole("credits", minimum=1), _whole("calls", minimum=1)
            if credits is None and calls is None:
                raise ValueError("Say what to add: credits, calls for today, or both.")
            operations.top_up(gateway, WHO, key, credits=credits, calls=calls)
            flash(f"Account {key} topped up.", "done")
        elif action == "keys":
            new_key = operations.create_key(
                gateway,
                WHO,
                key,
                label=_text("label"),
                models=parse_list(_text("models") or None),
                ips=parse_networks(_text("ips") or None),
                rpm=_whole("rpm", minimum=1),
                tpm=_whole("tpm", minimum=1),
                expires_on=_day("expires"),
            )
            return account(key, new_key=new_key)
        else:
            abort(404)
    except LookupError:
        abort(404)
    except ValueError as bad:
        flash(str(bad), "error")
    back = request.form.get("back", "")
    if not back.startswith("/admin/") or "//" in back:  # only to a console page
        back = url_for("admin.account", key=key)
    return redirect(back)


@admin_blp.route("/keys/<key>/revoke", methods=["POST"])
def revoke_key(key: str):
    gateway = kit.gateway()
    try:
        revoked = operations.revoke_key(gateway, WHO, key)
    except LookupError:
        abort(404)
    flash(f"Key {key} revoked: its calls now answer 4005.", "done")
    account_key = gateway.accounts.account_key_of(revoked.account_id)
    return redirect(url_for("admin.account", key=account_key))


# -- editing an account's limits and its keys' (operations.update_account / update_key) ------


@admin_blp.route("/accounts/<key>/limits", methods=["POST"])
def account_limits(key: str):
    """The account page's Limits form: every field sent, a blank one meaning no limit."""
    try:
        edited = operations.update_account(
            kit.gateway(),
            WHO,
            key,
            name=_text("name", required=True),
            daily_quota=_limit("daily_quota", minimum=0, required=True),
            concurrency=_limit("concurrency", minimum=1),
            rpm=_limit("rpm", minimum=1),
            tpm=_limit("tpm", minimum=1),
            expires=_day("expires"),
            apis=_names("apis"),
        )
        flash(_saved(f"Limits of account {key}", edited), "done")
    except LookupError:
        abort(404)
    except ValueError as bad:
        flash(str(bad), "error")
    return redirect(url_for("admin.account", key=key))


@admin_blp.route("/keys/<key>/edit", methods=["POST"])
def edit_key(key: str):
    """A key row's edit form: every field sent, a blank one meaning no limit or list."""
    gateway = kit.gateway()
    try:
        account_key = gateway.accounts.account_key_of(gateway.accounts.get_key(key).account_id)
    except LookupError:
        abort(404)
    try:
        edited = operations.update_key(
            gateway,
            WHO,
            key,
            label=_text("label"),
            models=_names("models"),
            ips=_names("ips"),
            rpm=_limit("rpm", minimum=1),
            tpm=_limit("tpm", minimum=1),
            expires=_day("expires"),
        )
        flash(_saved(f"Key {key}", edited), "done")
    except ValueError as bad:
        flash(str(bad), "error")
    return redirect(url_for("admin.account", key=account_key))


def _saved(what: str, edited: operations.Edited) -> str:
    if not edited.changed:
        return f"{what}: nothing changed."
    return f"{what} saved: {operations.edit_detail(edited.changed)}."


def _limit(name: str, *, minimum: int, required: bool = False) -> int | None:
    """A whole number a column holds, or None when left empty (no limit)."""
    raw = request.form.get(name, "").strip()
    shown = name.replace("_", " ")
    if not raw and required:
        raise ValueError(f"Fill in {shown}.")
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= operations.MOST:
        empty = "" if required else ", or leave it empty for no limit"
        raise ValueError(
            f"{shown} must be a whole number from {minimum} to {operations.MOST}{empty}."
        )
    return int(raw)


def _names(name: str) -> tuple[str, ...] | None:
    """A comma-separated list (models, addresses, APIs); None when left empty (no list)."""
    raw = request.form.get(name, "").strip()
    if len(raw) > 2000:
        raise ValueError(f"{name} is too long: at most 2000 characters.")
    return parse_list(raw) if raw else None


# -- usage, APIs, audit -----------------------------------------------------------------------


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
    for row in methods:
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
        methods=methods,
        failures=failed_calls(
            gateway.engine, account_id=account_id, since_utc=start, method=method
        ),
        series=series,
        latency_rows_read=LATENCY_ROWS_READ,
        charts=_usage_charts(series.buckets),
    )


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


@admin_blp.route("/apis", methods=["GET", "POST"])
def apis():
    """The stopped and maintained APIs (?account=KEY: those that hold for that account), and
    the form changing them for every account or for one picked from the list."""
    gateway = kit.gateway()
    if request.method == "POST":
        _change_api_state(gateway)
        return redirect(url_for("admin.apis", account=_text("shown") or None))
    every = gateway.accounts.list()
    chosen = request.args.get("account", "").strip()
    chosen_account = next((a for a in every if a.key == chosen), None)
    if chosen and chosen_account is None:
        flash(f"No account has the key {chosen[:64]!r}; showing every account.", "error")
        chosen = ""
    states = gateway.api_states.list()
    if chosen_account is not None:
        states = [s for s in states if s["account_id"] in (EVERY_ACCOUNT, chosen_account.id)]
    return render_template(
        "admin/apis.html",
        states=states,
        accounts=every,
        account_of={a.id: a for a in every},
        chosen=chosen,
        chosen_account=chosen_account,
        every_account=EVERY_ACCOUNT,
        targets=[ALL_APIS, *sorted(PLATFORMS), *sorted(CATALOG)],
    )


def _change_api_state(gateway) -> None:
    """Stop, maintain or start the form's target for every account or the picked one."""
    action, account_key = request.form.get("action", ""), _text("account") or None
    try:
        target = _text("target", required=True)
        if target != ALL_APIS and target not in PLATFORMS and target not in CATALOG:
            raise ValueError(f"{target!r} is not a method, a platform or `{ALL_APIS}`.")
        if action not in API_STATES:
            raise ValueError("Choose stop, maintenance or start.")
        operations.set_api_state(gateway, WHO, target, API_STATES[action], account_key)
        flash(f"{target}: {action} for {account_key or 'every account'}.", "done")
    except LookupError:
        flash(f"No account has the key {account_key[:64]!r}.", "error")
    except ValueError as bad:
        flash(str(bad), "error")


@admin_blp.route("/upstreams")
def upstreams():
    """The members and their health as this worker sees it (shared by every worker and host
    with REDIS_URL), with the calls each answered."""
    gateway = kit.gateway()
    failover = gateway.dispatcher.failover
    failover.router.refresh()  # a reload asked for elsewhere shows here as it does to calls
    report = usage_report(gateway.engine, account_id=None, since_utc=None)
    return render_template(
        "admin/upstreams.html",
        members=describe_members(failover.router, failover.health),
        answered=report["by_upstream"],
        shared=bool(current_app.config["REDIS_URL"]),
        upstreams_file=failover.router.file_path,
    )


@admin_blp.route("/upstreams/reload", methods=["POST"])
def reload_upstreams():
    """`flask upstreams reload` from the console: a bad file is refused with its reason."""
    try:
        reloaded = operations.reload_upstreams(kit.gateway(), WHO)
    except ValueError as refused:
        flash(f"Refused, the workers keep the upstreams they have: {refused}", "error")
    else:
        members = ", ".join(reloaded["members"])
        flash(
            f"Reload {reloaded['generation']} asked: members {members}. "
            "Every worker on every host takes it within about a second.",
            "done",
        )
    return redirect(url_for("admin.upstreams"))


@admin_blp.route("/audit")
def audit_page():
    return render_template("admin/audit.html", rows=audit.recent(kit.gateway().engine, 200))


# -- reading forms ------------------------------------------------------------------------


def _text(name: str, *, required: bool = False) -> str:
    value = request.form.get(name, "").strip()[:200]
    if required and not value:
        raise ValueError(f"Fill in {name.replace('_', ' ')}.")
    return value


def _whole(name: str, *, minimum: int) -> int | None:
    """A whole number field; None when left empty."""
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum or int(raw) > 2**62:
        raise ValueError(f"{name.replace('_', ' ')} must be a whole number of at least {minimum}.")
    return int(raw)


def _day(name: str):
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{name} must be a day as YYYY-MM-DD.") from None
