"""One upstream call over a model's pool: pick a healthy member of the best priority by weight,
and when it fails in a way that is the member's (connection error, timeout, 408, 429, 5xx,
or a refused key), try another member, up to `attempts`, all within one deadline.

The caller's own faults (any other 4xx) are answered at once. The call is admitted and
settled once by proxy/calls.py whatever the attempts, so it is never charged twice. No Flask.

The SDK's retries: a pool of one member keeps its `max_retries` (as before pools); in a pool
of several, each attempt is one request (max_retries 0), because retrying another member
beats waiting on the one that failed, and one member's retries must not eat the deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from proxy import upstream_events
from proxy.errors import NETWORK_ERROR, TARGET_SERVER_ERROR, TIMEOUT, GatewayError
from proxy.upstream_health import HALF_OPEN, HEALTHY, REVOKED, UpstreamHealth
from proxy.upstreams import Upstream, UpstreamRouter, shown_url

T = TypeVar("T")

REVOKED_KEY_STATUSES = frozenset({401, 403})


def is_member_fault(error: GatewayError) -> bool:
    """Whether another member could answer where this one failed."""
    if error.code in (NETWORK_ERROR, TIMEOUT):
        return True
    status = error.upstream_status
    return status is not None and (status in (408, 429) or status >= 500)


class Failover:
    def __init__(
        self,
        router: UpstreamRouter,
        health: UpstreamHealth,
        *,
        attempts: int = 3,
        deadline_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        choose: Callable = random.choices,
    ) -> None:
        self.router = router
        self.health = health
        self.attempts = attempts
        self.deadline_seconds = deadline_seconds
        self._clock = clock
        self._choose = choose

    def call(self, model: str | None, send: Callable[[object], T]) -> tuple[Upstream, T]:
        """(the member that answered, `send(its client)`); the last member's GatewayError
        when none did."""
        self.router.refresh()
        pool = self.router.pool(model)
        if len(pool) == 1:  # no peer to fail over to: no circuit to read (or pay Redis for)
            result = send(self.router.client_for(pool[0]))  # its own retries, as before pools
            upstream_events.served(pool[0].name)
            return pool[0], result
        deadline = self._clock() + self.deadline_seconds
        tried: set[str] = set()
        last_error: GatewayError | None = None
        for _ in range(self.attempts):
            remaining = deadline - self._clock()
            picked = self._pick(pool, tried) if remaining > 0 else None
            if picked is None:
                break
            member, state = picked
            tried.add(member.name)
            try:
                result = send(self._client(member, remaining))
            except GatewayError as error:
                if not self._judge_failure(member, state, error):
                    raise
                last_error = error
                upstream_events.attempt_failed(member.name, _reason(error))
                continue
            if state != HEALTHY:
                self.health.succeeded(member.name)
            upstream_events.served(member.name)
            return member, result
        if last_error is not None:
            raise last_error
        raise GatewayError(
            TARGET_SERVER_ERROR,
            f"no upstream can take calls for model {str(model)[:80]!r}: every key of its pool "
            "was refused by the upstream (401/403); the operator must fix the keys and run "
            "flask upstreams reload",
        )

    def _pick(self, pool: tuple[Upstream, ...], tried: set[str]) -> tuple[Upstream, str] | None:
        """A member not tried yet: a healthy one of the best priority, by weight (a member
        whose cooldown is over when this call wins its probe); when every one is cooling, the
        best of those rather than no answer at all. None when none is left."""
        candidates = [m for m in pool if m.name not in tried]
        if not candidates:
            return None
        states = self.health.states(m.name for m in candidates)
        usable = [m for m in candidates if states[m.name].state in (HEALTHY, HALF_OPEN)]
        while usable:
            member = self._weighted(usable)
            state = states[member.name].state
            if state == HEALTHY or self.health.take_probe(member.name):
                return member, state
            usable.remove(member)  # another call is probing it
        last_resort = [m for m in candidates if states[m.name].state != REVOKED]
        if not last_resort:
            return None
        member = self._weighted(last_resort)
        return member, states[member.name].state

    def _weighted(self, members: list[Upstream]) -> Upstream:
        best = min(m.priority for m in members)
        tier = [m for m in members if m.priority == best]
        if len(tier) == 1:
            return tier[0]
        return self._choose(tier, weights=[m.weight for m in tier])[0]

    def _client(self, member: Upstream, remaining: float):
        """The member's client without SDK retries (its pool fails over instead), its
        timeout cut to what is left of the deadline."""
        client = self.router.client_for(member, retries=False)
        if remaining < member.timeout_seconds:
            return client.with_options(timeout=remaining)
        return client

    def _judge_failure(self, member: Upstream, state: str, error: GatewayError) -> bool:
        """Record what the failure says of the member; whether another member may retry."""
        if error.upstream_status in REVOKED_KEY_STATUSES:
            self.health.revoke(member.name, error.upstream_status)
            return True
        if is_member_fault(error):
            self.health.failed(member.name, probing=state == HALF_OPEN)
            return True
        if state != HEALTHY:  # it answered: the caller's fault is no sign of ill health
            self.health.succeeded(member.name)
        return False


def describe_members(router: UpstreamRouter, health: UpstreamHealth | None) -> list[dict]:
    """Every member as operators see it (flask upstreams list, /health): never a key."""
    members = router.upstreams()
    states = health.states(m.name for m in members) if health is not None else {}
    return [
        {
            "name": member.name,
            "base_url": shown_url(member.base_url),
            "models": list(member.patterns) or ["(any model no pattern claims)"],
            "weight": member.weight,
            "priority": member.priority,
            **(states[member.name].as_dict() if member.name in states else {"state": "unknown"}),
        }
        for member in members
    ]


def _reason(error: GatewayError) -> str:
    return f"http {error.upstream_status}" if error.upstream_status else error.code
