"""The Feishu platform: `feishu/auth`, the app's tenant_access_token.

The app id and secret come from the configuration (FEISHU_APP_ID, FEISHU_APP_SECRET), never
from a client. A token is kept in the answer cache's shared store (Redis with REDIS_URL, else
the SQLite file every worker of the machine opens) until FEISHU_TOKEN_MARGIN_SECONDS before
Feishu's `expire`, so every worker and host hands out the same token and Feishu is asked about
once per token. Plain data in and out; failures raise GatewayError. No Flask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests

from proxy.cache import Store, StoreError
from proxy.errors import NETWORK_ERROR, TARGET_SERVER_ERROR, TIMEOUT, GatewayError

PLATFORM = "feishu"
log = logging.getLogger("proxy")

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
# Used when FEISHU_BASE_URL is empty: the bundled stub that `make run` starts, and its app.
STUB_BASE_URL = "http://127.0.0.1:8001"
STUB_APP_ID = "cli_stub_app"
STUB_APP_SECRET = "stub-app-secret"


@dataclass
class FeishuApp:
    """One Feishu app: where Feishu is, the app's credentials, and where its token is kept."""

    base_url: str
    app_id: str
    app_secret: str = field(repr=False)
    timeout_seconds: float
    margin_seconds: float  # a token is asked for again this long before it expires
    store: Store | None = None  # None: this process alone keeps the token
    _kept: tuple[str, float] | None = field(default=None, init=False, repr=False)
    _refresh: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_config(cls, config: Mapping, store: Store | None) -> FeishuApp:
        stub = not config["FEISHU_BASE_URL"]
        return cls(
            base_url=(config["FEISHU_BASE_URL"] or STUB_BASE_URL).rstrip("/"),
            app_id=config["FEISHU_APP_ID"] or (STUB_APP_ID if stub else ""),
            app_secret=config["FEISHU_APP_SECRET"] or (STUB_APP_SECRET if stub else ""),
            timeout_seconds=config["UPSTREAM_TIMEOUT_SECONDS"],
            margin_seconds=config["FEISHU_TOKEN_MARGIN_SECONDS"],
            store=store,
        )

    @property
    def store_key(self) -> str:
        """The token's key in the shared store: never the secret, one per app and Feishu."""
        named = f"{self.base_url}\n{self.app_id}".encode()
        return "feishu-tenant-token:" + hashlib.sha256(named).hexdigest()

    def tenant_token(self) -> dict:
        """{"tenant_access_token", "expire"}: the kept token with the seconds it has left,
        or a new one from Feishu."""
        kept = self._read()
        if kept is None:
            with self._refresh:  # one request to Feishu per process at a time
                kept = self._read() or self._fetch()
        token, expires_at = kept
        return {"tenant_access_token": token, "expire": max(0, int(expires_at - time.time()))}

    def _read(self) -> tuple[str, float] | None:
        """A kept token that is still good for more than the margin."""
        kept = self._kept
        if self.store is not None:
            try:
                entry = self.store.read(self.store_key)
            except StoreError as error:  # the store is down: ask Feishu, as on a miss
                log.warning("feishu token: %s", error)
                entry = None
            kept = _token_of(entry.blob) if entry is not None else None
        if kept is None or kept[1] - self.margin_seconds <= time.time():
            return None
        return kept

    def _fetch(self) -> tuple[str, float]:
        answer = self._ask_feishu()
        token, expire = answer.get("tenant_access_token"), answer.get("expire")
        if not isinstance(token, str) or not token or not _whole(expire) or expire <= 0:
            raise GatewayError(
                TARGET_SERVER_ERROR, "Feishu's answer has no tenant_access_token and expire"
            )
        kept = (token, time.time() + expire)
        self._keep(kept, int(expire - self.margin_seconds))
        return kept

    def _keep(self, kept: tuple[str, float], seconds: int) -> None:
        if seconds <= 0:
            return  # it expires within the margin: not worth keeping
        if self.store is None:
            self._kept = kept
            return
        blob = json.dumps({"token": kept[0], "expires_at": kept[1]}).encode()
        try:
            self.store.write(self.store_key, blob, seconds)
        except StoreError as error:
            log.warning("feishu token: %s", error)

    def _ask_feishu(self) -> dict:
        """Feishu's answer to the token request; a refusal (code not 0) is 4002 naming it."""
        if not self.app_id or not self.app_secret:
            raise GatewayError(
                TARGET_SERVER_ERROR,
                "the gateway has no Feishu app: the operator sets FEISHU_APP_ID and "
                "FEISHU_APP_SECRET",
            )
        try:
            reply = requests.post(
                self.base_url + TOKEN_PATH,
                json={"app_id": self.app_id, "app_secret": self.app_secret},
                timeout=self.timeout_seconds,
            )
        except requests.Timeout:
            raise GatewayError(TIMEOUT, "Feishu did not answer in time; try again later") from None
        except requests.RequestException:
            raise GatewayError(NETWORK_ERROR, "Feishu could not be reached") from None
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise GatewayError(
                TARGET_SERVER_ERROR, f"Feishu answered HTTP {reply.status_code} without JSON"
            )
        if answer.get("code") != 0:
            refusal = {"code": answer.get("code"), "msg": str(answer.get("msg", ""))[:300]}
            raise GatewayError(
                TARGET_SERVER_ERROR,
                f"Feishu refused the gateway's app (code {refusal['code']}: {refusal['msg']}); "
                "the operator checks FEISHU_APP_ID and FEISHU_APP_SECRET",
                response=refusal,
            )
        return answer


def _token_of(blob: bytes) -> tuple[str, float] | None:
    try:
        kept = json.loads(blob)
        return str(kept["token"]), float(kept["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None  # not ours, or damaged: asked for again


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def connect(config: Mapping, store: Store | None) -> FeishuApp:
    """The platform's client, built once per app (proxy/services.py)."""
    return FeishuApp.from_config(config, store)


def tenant_access_token(app: FeishuApp, args: dict) -> dict:
    """feishu/auth: the app's tenant_access_token and the seconds it has left."""
    return app.tenant_token()
