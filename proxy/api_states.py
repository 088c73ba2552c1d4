"""API stops and maintenance, set by the operator (`flask apis ...`), checked on every call.

A target is a method (`v1/chat/completions`), a platform (`openai`) or `all`; a state holds for
every account (account_id 0) or for one. Stopped answers 4006, maintenance 4009; a stop wins
over maintenance. A call checks a short-lived copy of all the states (proxy/settings_cache.py):
a change holds at once in the process that made it, and in every other worker and host within
SETTINGS_CACHE_SECONDS.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from proxy import storage
from proxy.errors import API_MAINTENANCE, API_STOPPED, GatewayError
from proxy.settings_cache import SettingsCache

ALL_APIS = "all"
STOPPED, MAINTENANCE = "stopped", "maintenance"
EVERY_ACCOUNT = 0


_EVERY_STATE = select(
    storage.api_states.c.target, storage.api_states.c.account_id, storage.api_states.c.state
)


class ApiStates:
    def __init__(self, engine: Engine, *, settings_cache_seconds: float = 0.0):
        self.engine = engine
        self._copy = SettingsCache(settings_cache_seconds, max_entries=1)

    def set(self, target: str, state: str, account_id: int = EVERY_ACCOUNT) -> None:
        table = storage.api_states
        with self.engine.begin() as connection:
            connection.execute(
                delete(table).where(table.c.target == target, table.c.account_id == account_id)
            )
            connection.execute(
                table.insert().values(
                    target=target,
                    account_id=account_id,
                    state=state,
                    created_at=storage.utc_now(),
                )
            )
        self._copy.forget()

    def clear(self, target: str, account_id: int = EVERY_ACCOUNT) -> bool:
        """Back in service; False when nothing was stopped or in maintenance."""
        table = storage.api_states
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(table).where(table.c.target == target, table.c.account_id == account_id)
            )
        self._copy.forget()
        return result.rowcount > 0

    def list(self) -> list[dict]:
        table = storage.api_states
        with self.engine.connect() as connection:
            rows = connection.execute(select(table).order_by(table.c.target, table.c.account_id))
            return [
                {"target": r.target, "account_id": r.account_id, "state": r.state} for r in rows
            ]

    def check(self, method: str, platform: str, account_id: int) -> None:
        """GatewayError 4006 when the method is stopped, 4009 when it is in maintenance."""
        states = self._copy.get(None, self._read_all)
        if not states:
            return
        rows = [
            states[target, whom]
            for target in (method, platform, ALL_APIS)
            for whom in (EVERY_ACCOUNT, account_id)
            if (target, whom) in states
        ]
        for wanted_state in (STOPPED, MAINTENANCE):
            for row in rows:
                if row.state == wanted_state:
                    raise GatewayError(*_refusal(row, method))

    def _read_all(self) -> dict:
        """Every state, by (target, account_id): the operator sets few."""
        with self.engine.connect() as connection:
            rows = connection.execute(_EVERY_STATE).all()
        return {(row.target, row.account_id): row for row in rows}


def _refusal(row, method: str) -> tuple[str, str]:
    subject = method if row.target == method else f"{row.target} (so {method})"
    if row.target == ALL_APIS:
        subject = f"every API (so {method})"
    whom = "for this account" if row.account_id != EVERY_ACCOUNT else "for all accounts"
    if row.state == STOPPED:
        return API_STOPPED, f"{subject} is stopped {whom} by the operator"
    return API_MAINTENANCE, f"{subject} is in maintenance {whom}; retry later"
