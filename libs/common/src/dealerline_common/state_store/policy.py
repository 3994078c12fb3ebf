"""How long the stores keep trying: a write that lost an optimistic race, and a Redis that
cannot be reached (a restart, a failover). Both are bounded by a deadline rather than a
count, with full-jitter exponential backoff, so that fifty writers racing on one session or
a Redis restart of a few seconds delay a call instead of failing it, and racing writers
spread out instead of retrying in lockstep."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ..logs import get_logger
from .errors import LostRace, StateConflictError

__all__ = [
    "DEFAULT_BACKOFF_S",
    "DEFAULT_CONFLICT_DEADLINE_S",
    "DEFAULT_UNAVAILABLE_DEADLINE_S",
    "RetryPolicy",
    "conflict_exhausted",
    "until_won",
]

log = get_logger(__name__)

T = TypeVar("T")

# A write that keeps losing races is retried for up to 10 s (the turn waits; it is not lost).
DEFAULT_CONFLICT_DEADLINE_S = 10.0
# The longest wait between two racing attempts (the first waits at most 2 ms, each next
# one at most twice as long, up to this): about the time 50 writers take to commit once each.
DEFAULT_BACKOFF_S = 0.25
FIRST_CONFLICT_BACKOFF_S = 0.002
# Redis unreachable (connection refused, reset, loading its data after a restart): retried
# for up to 10 s, the first wait at most 50 ms, then up to 1 s.
DEFAULT_UNAVAILABLE_DEADLINE_S = 10.0
FIRST_UNAVAILABLE_BACKOFF_S = 0.05
UNAVAILABLE_BACKOFF_S = 1.0


def _check(name: str, value: float, *, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Keep trying for ``deadline_s`` (and at most ``attempts`` times, if given), waiting a
    random time between attempts: at most ``first_s`` before the second, doubling, capped
    at ``cap_s`` (full jitter)."""

    deadline_s: float
    first_s: float
    cap_s: float
    attempts: int | None = None

    def __post_init__(self) -> None:
        _check("deadline_s", self.deadline_s, positive=True)
        _check("first_s", self.first_s)
        _check("cap_s", self.cap_s)
        if self.attempts is not None and (isinstance(self.attempts, bool) or self.attempts < 1):
            raise ValueError(f"attempts must be >= 1 or None, got {self.attempts!r}")

    def with_attempts(self, attempts: int | None) -> RetryPolicy:
        return RetryPolicy(self.deadline_s, self.first_s, self.cap_s, attempts)

    def retrying(
        self,
        *exc: type[BaseException],
        before_sleep: Callable[[RetryCallState], None] | None = None,
    ) -> AsyncRetrying:
        """A tenacity loop retrying ``exc`` under this policy; the last error is re-raised."""
        stop: stop_base = stop_after_delay(self.deadline_s)
        if self.attempts is not None:
            stop = stop | stop_after_attempt(self.attempts)
        return AsyncRetrying(
            retry=retry_if_exception_type(exc),
            stop=stop,
            # random between 0 and min(cap, first * 2**(n-1)) before attempt n + 1
            wait=wait_random_exponential(multiplier=self.first_s, max=self.cap_s),
            before_sleep=before_sleep,
            reraise=True,
        )


async def until_won(
    policy: RetryPolicy, session_id: str, what: str, attempt: Callable[[], Awaitable[T]]
) -> T:
    """Run an optimistic ``attempt`` until it does not raise :class:`LostRace`, under
    ``policy``; then :class:`StateConflictError` saying how many attempts lost."""
    started = time.monotonic()
    tries = 0
    try:
        async for retry in policy.retrying(LostRace):
            with retry:
                tries += 1
                return await attempt()
    except LostRace:
        raise conflict_exhausted(session_id, what, tries, started) from None
    raise AssertionError("unreachable: tenacity either returned or raised")


def conflict_exhausted(
    session_id: str, what: str, tries: int, started: float
) -> StateConflictError:
    """Log that every attempt to ``what`` lost its race, and the error that says so
    (``started``: the first attempt's ``time.monotonic()``)."""
    waited = time.monotonic() - started
    log.warning(
        "state_store.conflict_exhausted",
        session_id=session_id,
        op=what,
        attempts=tries,
        waited_s=round(waited, 3),
    )
    return StateConflictError(
        f"state of session {session_id!r} changed under every one of {tries} attempts "
        f"to {what} ({waited:.1f} s)"
    )
