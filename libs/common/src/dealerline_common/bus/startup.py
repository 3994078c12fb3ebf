"""Waiting for NATS and JetStream at start-up: a service that starts before them (a fresh
cluster, NATS rescheduled, JetStream still recovering its store) keeps trying, with a
progress line every few seconds, until its start deadline, and only then stops with
one clear error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..logs import get_logger

__all__ = ["BusAuthError", "BusConnectError", "retry_until"]

log = get_logger(__name__)

_PROGRESS_EVERY_S = 5.0


class BusConnectError(ConnectionError):
    """NATS (or its JetStream) could not be reached at start-up."""


class BusAuthError(BusConnectError):
    """NATS refused this service's credentials: waiting longer would not help."""


async def retry_until(
    attempt: Callable[[float], Awaitable[None]], what: str, bus: str, end: float
) -> None:
    """Run ``attempt(seconds_left)`` until it succeeds or the loop clock passes ``end``."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    logged_at = started
    delay = 0.1
    while True:
        left = end - loop.time()
        try:
            await attempt(max(left, 0.1))
            if time.monotonic() - started >= _PROGRESS_EVERY_S:
                log.info(f"{what} ready", bus=bus, waited_s=round(time.monotonic() - started, 1))
            return
        except BusAuthError:
            raise
        except Exception as exc:
            if end - loop.time() <= delay:
                raise BusConnectError(
                    f"{bus}: {what} not ready after {time.monotonic() - started:.0f}s: {exc}"
                ) from exc
            if time.monotonic() - logged_at >= _PROGRESS_EVERY_S:
                logged_at = time.monotonic()
                log.warning(
                    f"waiting for {what}",
                    bus=bus,
                    waited_s=round(logged_at - started, 1),
                    error=repr(exc),
                )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
