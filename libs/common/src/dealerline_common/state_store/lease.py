"""Writing a session under contention: optimistic first, then in turn.

A write first tries optimistically (read, apply, compare-and-set: two round trips, no
lock). A writer that loses takes the session's short write lease and, while another writer
holds it, blocks until that one gives it back (see :mod:`.scripts`): under contention the
writers queue and each commit costs a few round trips, instead of every writer re-reading
and re-applying after every other's commit (with fifty writers on one session optimistic
retries alone wasted about nine attempts per update and starved some past any deadline).
Correctness never rests on the lease: every write is still a compare-and-set on the
version, so a lease that expired under a slow holder costs a retry, never an update.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..logs import get_logger
from .errors import LostRace
from .policy import RetryPolicy, conflict_exhausted

__all__ = ["LEASE_S", "Lease", "write_in_turn"]

log = get_logger(__name__)

T = TypeVar("T")

# How long a lease lasts unless given back: longer than any holder's read-apply-write (a few
# ms), short enough that a crashed holder delays the others by at most this.
LEASE_S = 1.0
# The longest one wait on the baton before looking at the lease again.
MAX_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A session's write lease, as the store provides it."""

    acquire: Callable[[str], Awaitable[int]]  # token -> 0 if held now, else ms it has left
    release: Callable[[str], Awaitable[None]]
    wait: Callable[[float], Awaitable[None]]  # block on the baton for up to this many s


async def write_in_turn(
    policy: RetryPolicy,
    lease: Lease,
    session_id: str,
    what: str,
    attempt: Callable[[str], Awaitable[T]],
) -> T:
    """Run ``attempt`` (given the writer's lease token, ``""`` for none) until it does not
    raise :class:`LostRace`: once optimistically, then holding the session's lease, until
    ``policy``'s deadline (or its attempts) are spent; then :class:`StateConflictError`."""
    started = time.monotonic()
    tries = 1
    try:
        return await attempt("")
    except LostRace:
        pass
    token = secrets.token_hex(8)
    while policy.attempts is None or tries < policy.attempts:
        left = policy.deadline_s - (time.monotonic() - started)
        if left <= 0:
            break
        holder_ms = await lease.acquire(token)
        if holder_ms:
            # Woken by the holder's release, or when its lease would have expired.
            jitter = random.uniform(0, policy.first_s)
            await lease.wait(max(0.01, min(left, MAX_WAIT_S, holder_ms / 1000 + jitter)))
            continue
        tries += 1
        try:
            return await attempt(token)  # a successful write gives the lease back
        except LostRace:
            continue  # the lease ran out under us: take it again
        except BaseException:
            with contextlib.suppress(Exception):
                await lease.release(token)
            raise
    with contextlib.suppress(Exception):
        await lease.release(token)  # if a last attempt lost while holding it
    raise conflict_exhausted(session_id, what, tries, started)
