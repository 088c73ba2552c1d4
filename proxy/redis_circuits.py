"""The upstream members' circuits (proxy/upstream_health.py) in Redis, shared by every worker
and host; while Redis fails, the same calls go to this process's MemoryCircuits (a warning
when the outage starts, a line when it ends), so a Redis outage never fails a call.

Keys, per member name: `gw:upstream:<name>:failures` (a counter living for the window),
`:cooling` (exists for the cooldown), `:tripped` (set while the member waits for a good
probe), `:probe` (the one call let through once the cooldown is over). Times are Redis TTLs,
so the hosts' clocks do not matter.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.exceptions import RedisError

from proxy.redis_store import _Health, redis_address

PREFIX = "gw:upstream:"
# A tripped member that nobody calls for this long forgets it was tripped.
TRIPPED_TTL_MS = 24 * 3600 * 1000


def _key(name: str, part: str) -> str:
    return f"{PREFIX}{name}:{part}"


class RedisCircuits:
    def __init__(self, client, *, fallback) -> None:
        self.client = client
        self.fallback = fallback
        self._health = _Health("upstream health", redis_address(client))

    def _run(self, operation: str, *args):
        """`operation` on Redis; on this process's circuits while Redis fails."""
        try:
            result = getattr(self, "_redis_" + operation)(*args)
        except RedisError as error:
            self._health.failed(error)
            return getattr(self.fallback, operation)(*args)
        self._health.ok()
        return result

    def snapshot(self, names: Iterable[str], window_seconds: float) -> dict[str, tuple]:
        return self._run("snapshot", list(names), window_seconds)

    def add_failure(self, name: str, window_seconds: float) -> int:
        return self._run("add_failure", name, window_seconds)

    def trip(self, name: str, cooldown_seconds: float) -> None:
        self._run("trip", name, cooldown_seconds)

    def take_probe(self, name: str, probe_seconds: float) -> bool:
        return self._run("take_probe", name, probe_seconds)

    def reset(self, name: str) -> bool:
        return self._run("reset", name)

    # -- on Redis

    def _redis_snapshot(self, names: list[str], _window_seconds: float) -> dict[str, tuple]:
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(_key(name, "failures"))
            pipe.pttl(_key(name, "cooling"))
            pipe.exists(_key(name, "tripped"))
        replies = pipe.execute()
        snapshot = {}
        for index, name in enumerate(names):
            failures, cooling_ms, tripped = replies[3 * index : 3 * index + 3]
            snapshot[name] = (
                int(failures or 0),
                max(0, cooling_ms) / 1000 if cooling_ms and cooling_ms > 0 else 0.0,
                bool(tripped),
            )
        return snapshot

    def _redis_add_failure(self, name: str, window_seconds: float) -> int:
        # The window starts at its first failure (PEXPIRE's NX option would need Redis 7).
        count = int(self.client.incr(_key(name, "failures")))
        if count == 1:
            self.client.pexpire(_key(name, "failures"), max(1, int(window_seconds * 1000)))
        return count

    def _redis_trip(self, name: str, cooldown_seconds: float) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(_key(name, "cooling"), 1, px=max(1, int(cooldown_seconds * 1000)))
        pipe.set(_key(name, "tripped"), 1, px=TRIPPED_TTL_MS)
        pipe.delete(_key(name, "failures"), _key(name, "probe"))
        pipe.execute()

    def _redis_take_probe(self, name: str, probe_seconds: float) -> bool:
        return bool(
            self.client.set(_key(name, "probe"), 1, nx=True, px=max(1, int(probe_seconds * 1000)))
        )

    def _redis_reset(self, name: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(_key(name, "tripped"))
        pipe.delete(*(_key(name, part) for part in ("tripped", "failures", "cooling", "probe")))
        was_tripped, _ = pipe.execute()
        return bool(was_tripped)
