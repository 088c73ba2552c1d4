"""Who may see the console: the console on or off (ADMIN_TOKEN or an operator), the session
cookie (ConsoleSessionInterface: /admin only, Secure as ADMIN_COOKIE_SECURE says), the guard
of every page (CSRF on every POST, a login for every page but the login's), the login itself
(the token or an operator's name and password, limited per address and name:
proxy/login_limits.py) and `who()` the audit log names."""

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

from proxy import audit
from proxy.doors import kit
from proxy.errors import ERROR_CODES
from proxy.login_limits import DatabaseLoginFailures, LoginLimit, RedisLoginFailures
from proxy.operators import NAME_PATTERN, normal_name

log = logging.getLogger("proxy")

TOKEN_WHO = "admin"  # who the audit log names for an action of a session opened with the token
ANONYMOUS = "anonymous"  # who a login lockout is recorded for: nobody has logged in
admin_blp = Blueprint("admin", __name__, url_prefix="/admin")
OPEN_PAGES = ("admin.login", "admin.stylesheet")  # served before logging in
SESSION_KEY_PURPOSE = b"onebound-gateway admin session key"
SHORTEST_TOKEN = 16  # characters of ADMIN_TOKEN; guessed online only, through the login limit


def set_up(app: Flask) -> None:
    """The session cookie and its signing key, the login limit, and the 404 while off."""
    gateway = app.extensions["gateway"]
    token = app.config["ADMIN_TOKEN"]
    if token and len(token) < SHORTEST_TOKEN:
        raise ValueError(
            f"ADMIN_TOKEN has {len(token)} characters; use at least {SHORTEST_TOKEN}, random "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not app.config.get("SECRET_KEY"):
        # From the sealing key, which hosts sharing a database share: never from the token, or
        # any signed cookie (the login page hands one out) would test guesses at it offline.
        app.config["SECRET_KEY"] = gateway.accounts.sealer.derive_key(SESSION_KEY_PURPOSE)
    app.config.update(
        SESSION_COOKIE_NAME="gateway_admin",
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.session_interface = ConsoleSessionInterface()
    app.extensions["admin_login_limit"] = _login_limit(app.config, gateway)
    app.before_request(_console_off_is_404)
    app.after_request(page_headers)


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
    """What a session holds to say it was opened with the current ADMIN_TOKEN: keyed by the
    session key too, so a session cookie (whose content anyone holding it can read) tells
    nothing that would test guesses at the token."""
    marked = b"admin session mark\0" + current_app.config["ADMIN_TOKEN"].encode()
    key = current_app.secret_key
    key = key if isinstance(key, bytes) else str(key).encode()
    return hmac.new(key, marked, hashlib.sha256).hexdigest()[:32]


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


def who() -> str:
    """Who the audit log names for this request's console action: "admin:NAME" or "admin"
    (the guard has checked the session before any page acts)."""
    _logged_in()
    return g.admin_who


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
        return refused("This form has expired or did not come from the console; reload the page.")
    if request.endpoint not in OPEN_PAGES and not _logged_in():
        return redirect(url_for("admin.login"))
    return None


def page_headers(response: Response) -> Response:
    """Every answer under /admin while the console is on, its routing's 404 and 405 too (they
    are answered before the blueprint's own hooks would run)."""
    if not (_is_console_path(request.path) and console_on()):
        return response  # off: the plain 404 of any path that does not exist
    response.headers["Cache-Control"] = "no-store"  # secrets are shown once, never cached
    response.headers["X-Content-Type-Options"] = "nosniff"
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


def refused(reason: str, status: int = 400):
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
    with _limit_reachable():
        attempt = limit.attempt(address, name)
    if attempt.over_limit:  # logins sent at once took the last tries
        log.warning("admin login refused unchecked: %s locked out", _login_label(name, address))
        return _locked_out(max(limit.retry_after(address, name), 1.0))
    opened = _session_opened_by(name, password)
    if opened is None:
        log.warning("admin login refused: wrong %s", _login_label(name, address))
        for scope in attempt.locking:
            _record_lockout(scope, limit, address)
        page = render_template("admin/login.html", error=WRONG_OPERATOR if name else WRONG_TOKEN)
        return make_response(page, 401)
    with _limit_reachable():
        limit.succeeded(attempt)
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
    address = audit.printable(address)
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
    shown = _scope_label(scope)
    log.warning("admin login locked for %s: %s", shown, audit.printable(detail))
    audit.record(kit.gateway().engine, ANONYMOUS, "console.lockout", shown, detail)


def _scope_label(scope: str) -> str:
    """A locked scope as the log and the audit row show it: a name that is no operator's name
    (a password typed in the wrong field, or an attempt at forging a log line) is not shown."""
    kind, _, value = scope.partition(":")
    if kind == "name" and not NAME_PATTERN.fullmatch(value):
        return "name:(not an operator name)"
    return audit.printable(scope)


@contextmanager
def _limit_reachable():
    """The login limit's store (Redis) unreachable: no login is checked (503)."""
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError:
        log.warning("admin login refused: the login limit (Redis) is unreachable", exc_info=True)
        reason = "The login limit cannot be checked (Redis is unreachable); retry shortly."
        abort(refused(reason, 503))


@admin_blp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("admin.login"))


@admin_blp.route("/")
def home():
    return redirect(url_for("admin.accounts"))
