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

from flask import Flask
from flask_smorest import Api

from proxy.doors.admin import accounts, system, usage  # noqa: F401  (their routes)
from proxy.doors.admin.access import admin_blp, set_up


def register(app: Flask, api: Api) -> None:
    set_up(app)
    app.register_blueprint(admin_blp)  # not on the OpenAPI document: not for clients
