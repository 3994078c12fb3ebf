"""Simulated time and the event timeline of the Twilio simulator.

Twilio's timings (a 45 s ring timeout, a 10 s ``<Gather>`` timeout, a human talking for
five minutes) are far too slow for tests, so every duration the simulator waits is in
*simulated seconds* and :class:`SimClock` turns it into ``sim_s * time_scale`` wall
seconds: ``time_scale=0.02`` runs a 45 s timeout in 0.9 s. Everything Twilio reports
(``Timestamp``, ``CallDuration``, ``date_created``...) is on the same simulated clock, so a
call that "talked for 30 s" reports ``CallDuration=30`` however fast the test ran.

The :class:`Timeline` records everything that happened, in order, for tests to assert on:

=====================  ==================================================================
``kind``               ``data``
=====================  ==================================================================
``status``             ``status``, ``previous`` — a call leg changed state
``callback``           ``url``, ``params``, ``http_status`` (None if the request failed),
                       ``error``, ``fault`` (None, ``duplicate``, ``delay``, ``reorder``),
                       ``callback_kind`` (``call``/``conference``), ``status``, ``sequence``
``callback_dropped``   as ``callback`` without ``http_status``: a fault rule dropped it
``webhook``            ``url``, ``method``, ``params``, ``http_status``, ``body``, ``purpose``
                       (``answer``, ``gather``, ``redirect``, ``dial-action``, ...)
``say``                ``text``, ``voice``, ``language`` — a ``<Say>`` the leg heard
``play`` / ``pause``   ``url`` / ``length``
``gather``             ``digits``, ``finished_on_key``, ``timed_out``, ``action``
``conference``         ``event`` (``join``, ``leave``, ``start``, ``end``), ``name``,
                       ``conference_sid``, ``reason``
``stream``             ``event`` (``start``, ``stop``), ``stream_sid``, ``index``,
                       ``parameters``, ``reason``
``rest``               ``method``, ``path``, ``params``, ``http_status``, ``code``
``hangup``             ``by`` (``human``, ``caller``, ``twiml``, ``api``, ``error``...)
``speech``             ``text`` — the customer spoke while no media stream was open
``error``              ``code``, ``message`` — what Twilio would log in its debugger
=====================  ==================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["SimClock", "SimEvent", "Timeline"]


class SimClock:
    """Simulated time: ``time_scale`` wall seconds pass per simulated second."""

    def __init__(self, time_scale: float = 1.0, *, epoch: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.epoch = (epoch or datetime.now(UTC)).replace(microsecond=0)
        self._mono0 = time.monotonic()

    def now_s(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._mono0) / self.time_scale

    def now(self) -> datetime:
        return self.at(self.now_s())

    def at(self, sim_s: float) -> datetime:
        return self.epoch + timedelta(seconds=sim_s)

    def rfc2822(self, when: datetime | float | None = None) -> str:
        """``Tue, 31 Aug 2010 20:36:28 +0000``, as Twilio writes ``Timestamp`` and dates."""
        if when is None:
            when = self.now()
        elif isinstance(when, int | float):
            when = self.at(float(when))
        return email.utils.format_datetime(when.astimezone(UTC).replace(microsecond=0))

    def wall(self, sim_s: float) -> float:
        return max(0.0, sim_s) * self.time_scale

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(self.wall(sim_s))


@dataclass(frozen=True)
class SimEvent:
    """One thing that happened; see the module docstring for the ``kind``\\ s."""

    index: int
    at: float  # wall clock, time.time()
    sim_s: float  # simulated seconds since the simulator started
    kind: str
    call_sid: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def matches(self, kind: str | None, call_sid: str | None, match: Mapping[str, Any]) -> bool:
        if kind is not None and self.kind != kind:
            return False
        if call_sid is not None and self.call_sid != call_sid:
            return False
        return all(self.data.get(k) == v for k, v in match.items())


class Timeline:
    """An append-only list of :class:`SimEvent` that waiters can block on."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.events: list[SimEvent] = []
        self._waiters: list[asyncio.Future[None]] = []

    def record(self, kind: str, call_sid: str | None = None, **data: Any) -> SimEvent:
        event = SimEvent(len(self.events), time.time(), self.clock.now_s(), kind, call_sid, data)
        self.events.append(event)
        self.notify()
        return event

    def notify(self) -> None:
        """Wake every :meth:`wait_for` (state changed somewhere)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def select(
        self, kind: str | None = None, call_sid: str | None = None, **match: Any
    ) -> list[SimEvent]:
        return [e for e in self.events if e.matches(kind, call_sid, match)]

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
    ) -> None:
        """Return once ``predicate()`` is true; ``TimeoutError`` after ``timeout_s`` wall
        seconds. The predicate is re-checked on every recorded event (and every 50 ms, for
        state that changes without one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                tail = "; ".join(f"{e.kind}:{e.call_sid}:{dict(e.data)}" for e in self.events[-5:])
                raise TimeoutError(
                    f"timed out after {timeout_s}s waiting for {what} (last: {tail})"
                )
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, min(remaining, 0.05))

    async def wait_for_event(
        self,
        kind: str,
        call_sid: str | None = None,
        *,
        timeout_s: float = 10.0,
        after: int = 0,
        **match: Any,
    ) -> SimEvent:
        """The first event at index >= ``after`` of ``kind`` (and ``call_sid``) whose data
        holds every ``match`` item."""
        found: list[SimEvent] = []

        def check() -> bool:
            for e in self.events[after:]:
                if e.matches(kind, call_sid, match):
                    found.append(e)
                    return True
            return False

        await self.wait_for(check, timeout_s, f"{kind} event {call_sid or ''} {match}")
        return found[0]
