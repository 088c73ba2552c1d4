"""Each upstream member's health: a circuit per member, shared by every worker and host through
Redis when REDIS_URL is set (in this process otherwise).

A member failing `failures` times within `window_seconds` (connection error, timeout, 429,
5xx) is cooled: skipped for `cooldown_seconds`; then one call, the half-open probe, is let
through: its success brings the member back, its failure cools it again. A member whose key
the upstream refused (401/403) is revoked: out of its pool in this worker until the upstreams
are reloaded. No Flask here; no key ever reaches this module (members are known by name).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from proxy import upstream_events

log = logging.getLogger("proxy")

HEALTHY, COOLING, HALF_OPEN, REVOKED = "healthy", "cooling", "half-open", "revoked"


@dataclass(frozen=True)
class MemberState:
    state: str  # HEALTHY, COOLING, HALF_OPEN (cooldown over, waiting for its probe), REVOKED
    recent_failures: int = 0
    cooldown_remaining_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "state": self.state,
            "recent_failures": self.recent_failures,
            "cooldown_remaining_seconds": round(self.cooldown_remaining_seconds, 1),
        }


class MemoryCircuits:
    """The circuits of this process's members (the store without Redis, and its fallback)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._cooling_until: dict[str, float] = {}
        self._tripped: set[str] = set()
        self._probe_until: dict[str, float] = {}

    def snapshot(self, names: Iterable[str], window_seconds: float) -> dict[str, tuple]:
        """{name: (recent failures, cooldown seconds left, tripped)}."""
        now = self._clock()
        with self._lock:
            return {
                name: (
                    sum(1 for t in self._failures.get(name, ()) if now - t < window_seconds),
                    max(0.0, self._cooling_until.get(name, 0.0) - now),
                    name in self._tripped,
                )
                for name in names
            }

    def add_failure(self, name: str, window_seconds: float) -> int:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(name, ()) if now - t < window_seconds]
            recent.append(now)
            self._failures[name] = recent
            return len(recent)

    def trip(self, name: str, cooldown_seconds: float) -> None:
        with self._lock:
            self._cooling_until[name] = self._clock() + cooldown_seconds
            self._tripped.add(name)
            self._failures.pop(name, None)
            self._probe_until.pop(name, None)

    def take_probe(self, name: str, probe_seconds: float) -> bool:
        now = self._clock()
        with self._lock:
            if self._probe_until.get(name, 0.0) > now:
                return False
            self._probe_until[name] = now + probe_seconds
            return True

    def reset(self, name: str) -> bool:
        """Close the circuit; whether it had been tripped."""
        with self._lock:
            was_tripped = name in self._tripped
            self._tripped.discard(name)
            self._failures.pop(name, None)
            self._cooling_until.pop(name, None)
            self._probe_until.pop(name, None)
            return was_tripped


class UpstreamHealth:
    """The circuits of every member, in `store` (MemoryCircuits, or RedisCircuits falling back
    to MemoryCircuits while Redis fails), and this worker's revoked members."""

    def __init__(
        self,
        store=None,
        *,
        failures: int = 3,
        window_seconds: float = 30.0,
        cooldown_seconds: float = 30.0,
        probe_seconds: float = 30.0,
    ) -> None:
        self.store = store if store is not None else MemoryCircuits()
        self.failures = failures
        self.window_seconds = window_seconds
        self.cooldown_seconds = cooldown_seconds
        self.probe_seconds = probe_seconds  # a probe that never reports frees its turn then
        self._revoked: set[str] = set()

    @classmethod
    def from_config(cls, config, redis_client=None) -> UpstreamHealth:
        store = MemoryCircuits()
        if redis_client is not None:
            from proxy.redis_circuits import RedisCircuits

            store = RedisCircuits(redis_client, fallback=store)
        return cls(
            store,
            failures=config["UPSTREAM_COOLDOWN_FAILURES"],
            window_seconds=config["UPSTREAM_COOLDOWN_WINDOW_SECONDS"],
            cooldown_seconds=config["UPSTREAM_COOLDOWN_SECONDS"],
            probe_seconds=max(config["UPSTREAM_DEADLINE_SECONDS"], 1.0),
        )

    def states(self, names: Iterable[str]) -> dict[str, MemberState]:
        names = list(names)
        snapshot = self.store.snapshot(names, self.window_seconds)
        return {name: self._state(name, *snapshot[name]) for name in names}

    def _state(self, name: str, failures: int, cooling: float, tripped: bool) -> MemberState:
        if name in self._revoked:
            return MemberState(REVOKED, failures)
        if cooling > 0:
            return MemberState(COOLING, failures, cooling)
        return MemberState(HALF_OPEN if tripped else HEALTHY, failures)

    def take_probe(self, name: str) -> bool:
        """Whether this call is the half-open probe of a member whose cooldown is over."""
        return self.store.take_probe(name, self.probe_seconds)

    def failed(self, name: str, *, probing: bool = False) -> None:
        """A failure that is the member's (not the caller's): count it; cool it at the
        threshold, or at once when it was the probe."""
        if probing or self.store.add_failure(name, self.window_seconds) >= self.failures:
            self.store.trip(name, self.cooldown_seconds)
            log.warning(
                "upstream %s cooled for %g s after %s",
                name,
                self.cooldown_seconds,
                "its probe failed" if probing else f"{self.failures} failures",
            )
            upstream_events.cooled(name)

    def succeeded(self, name: str) -> None:
        if self.store.reset(name):
            log.info("upstream %s is back: its probe succeeded", name)
            upstream_events.recovered(name)

    def revoke(self, name: str, status: int) -> None:
        """The upstream refused the member's key: out of its pool until the next reload."""
        if name in self._revoked:
            return
        self._revoked.add(name)
        log.error(
            "UPSTREAM KEY REFUSED: upstream %s answered HTTP %d; its member is out of the pool "
            "until the key is fixed and the upstreams reloaded (flask upstreams reload)",
            name,
            status,
        )
        upstream_events.revoked(name)

    def forget_revoked(self) -> None:
        """A reload gives every key a new chance."""
        self._revoked.clear()
