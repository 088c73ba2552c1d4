"""Feishu's ``POST /open-apis/auth/v3/tenant_access_token/internal``: a tenant token for the
stub's one app (``STUB_APP_ID`` / ``STUB_APP_SECRET``), in Feishu's own answer shape
(``code`` 0 and ``msg`` "ok", or a non-zero ``code`` and its ``msg``). No bearer key: the app
id and secret are the credentials, as on Feishu."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, g

from stub_upstream.replies import json_response

STUB_APP_ID = "cli_stub_app"
STUB_APP_SECRET = "stub-app-secret"
# The stub's app whose tokens live one minute: shorter than the gateway's refresh margin.
SHORT_LIVED_APP_ID = "cli_stub_short"
TOKEN_SECONDS = 7200  # Feishu's: two hours
SHORT_TOKEN_SECONDS = 60

bp = Blueprint("feishu", __name__, url_prefix="/open-apis")


def _refusal(code: int, msg: str) -> Response:
    return json_response({"code": code, "msg": msg}, status=400)


@bp.post("/auth/v3/tenant_access_token/internal")
def tenant_access_token() -> Response:
    body = g.get("stub_body")
    if not isinstance(body, dict) or not body.get("app_id") or not body.get("app_secret"):
        return _refusal(10003, "invalid param")
    if body["app_id"] not in (STUB_APP_ID, SHORT_LIVED_APP_ID):
        return _refusal(10003, "invalid param: app_id not found")
    if body["app_secret"] != STUB_APP_SECRET:
        return _refusal(10014, "app secret invalid")
    short = body["app_id"] == SHORT_LIVED_APP_ID
    return json_response(
        {
            "code": 0,
            "msg": "ok",
            # A new token on every issue, so a test sees whether the gateway asked again.
            "tenant_access_token": "t-stub-" + uuid.uuid4().hex,
            "expire": SHORT_TOKEN_SECONDS if short else TOKEN_SECONDS,
        }
    )
