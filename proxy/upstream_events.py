"""What happens to upstream members, one function per event, counted in the metrics
(proxy/metrics.py). Each is called once per event, never with a key."""

from __future__ import annotations

import logging

from proxy import metrics

log = logging.getLogger("proxy")


def served(member: str) -> None:
    """An upstream call (or a stream's first chunk) was answered by `member`."""


def attempt_failed(member: str, reason: str) -> None:
    """An attempt on `member`, in a pool of several, failed for `reason` (a gateway code, or
    "http NNN") in a way another member may answer: the call fails over if it has attempts
    and time left."""
    log.info("upstream %s failed (%s); failing over", member, reason)
    metrics.failover(member)


def cooled(member: str) -> None:
    """`member` was taken out for a cooldown (threshold reached, or its probe failed)."""
    metrics.cooldown(member)


def recovered(member: str) -> None:
    """`member`'s half-open probe succeeded: it is back in its pool."""


def revoked(member: str) -> None:
    """The upstream refused `member`'s key (401/403): it is out until a reload."""


def reloaded(generation: int, accepted: bool) -> None:
    """A worker read a new upstreams file (accepted), or refused a bad one and kept the old."""
