"""The greeting's audio, held between the incoming-call webhook and the media stream.

When the incoming webhook is answered the gateway publishes ``CallIncoming`` (the agent
writes the greeting at once, turn ``conversation.turn_id_for_call``) and subscribes here
to the call's ``call.<sid>.audio``, holding what arrives: at most
:data:`PREFETCH_MAX_MESSAGES` messages and :data:`PREFETCH_MAX_BYTES` of audio per call
(what comes past either bound is dropped and counted), at most :data:`PREFETCH_MAX_CALLS`
calls per process. When the call's stream opens on this process the lifecycle
(:mod:`.lifecycle`) claims the prefetch, subscribes the stream's own handler, then
replays the held messages through it in order; what the prefetch receives until its
subscription is drained goes to that handler too (playback drops a sentence it has
twice by its ``seq``). A prefetch not claimed within :data:`PREFETCH_TTL_S` (the caller
hung up before the stream opened; the stream opened on another replica) is
unsubscribed and forgotten.

:class:`PrefetchBook` is the pure, clock-injected bookkeeping (bounds, TTL, one prefetch
per session and per call); :class:`Prefetches` adds the subscriptions, the expiry timer
and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dealerline_common import subjects, tracing
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.metrics import Metrics

log = get_logger(__name__)

# Not settings (yet): the helper that owns settings.py is editing it.
PREFETCH_TTL_S = 30.0  # from the webhook's answer to the stream's start, at most
PREFETCH_MAX_MESSAGES = 64  # audio messages held per call (a greeting is a handful)
PREFETCH_MAX_BYTES = 160_000  # 20 s of 8 kHz mu-law per call (a greeting is a few seconds)
PREFETCH_MAX_CALLS = 1000  # calls with a prefetch at once, per process
# So the audio held by one process is at most MAX_CALLS x MAX_BYTES (160 MB), and only
# with a thousand calls answered in the last PREFETCH_TTL_S whose streams never opened.
_DRAIN_TIMEOUT_S = 2.0  # the prefetch's subscription handing its last messages on

T = TypeVar("T")
Handler = Callable[[Msg], Awaitable[None]]


class Opened(Enum):
    """What :meth:`PrefetchBook.open` did."""

    STARTED = "started"
    DUPLICATE = "duplicate"  # the session or the call has one already
    FULL = "full"  # PREFETCH_MAX_CALLS reached


@dataclass
class Held(Generic[T]):
    """One call's held messages, in arrival order, within the bounds."""

    max_messages: int
    max_bytes: int
    items: list[T] = field(default_factory=list)
    size: int = 0  # bytes held
    dropped: int = 0

    def add(self, item: T, size: int) -> bool:
        """Hold ``item`` (``size`` bytes); False (and counted) when past a bound."""
        if len(self.items) >= self.max_messages or self.size + size > self.max_bytes:
            self.dropped += 1
            return False
        self.items.append(item)
        self.size += size
        return True


@dataclass
class Entry(Generic[T]):
    session_id: str
    call_sid: str
    expires_at: float
    held: Held[T]


class PrefetchBook(Generic[T]):
    """Which sessions have a prefetch, until when, and what each holds (no I/O; ``now``
    is passed in, in the clock of the caller's choice)."""

    def __init__(
        self,
        ttl_s: float = PREFETCH_TTL_S,
        max_calls: int = PREFETCH_MAX_CALLS,
        max_messages: int = PREFETCH_MAX_MESSAGES,
        max_bytes: int = PREFETCH_MAX_BYTES,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_calls = max_calls
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._by_session: dict[str, Entry[T]] = {}
        self._by_call: dict[str, str] = {}  # call sid -> session id

    def __len__(self) -> int:
        return len(self._by_session)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_session

    def get(self, session_id: str) -> Entry[T] | None:
        return self._by_session.get(session_id)

    def session_of_call(self, call_sid: str, now: float) -> str | None:
        """The session of the call's live prefetch (a replayed webhook of that call)."""
        sid = self._by_call.get(call_sid)
        entry = self._by_session.get(sid) if sid is not None else None
        return entry.session_id if entry is not None and now < entry.expires_at else None

    def open(self, session_id: str, call_sid: str, now: float) -> Opened:
        if session_id in self._by_session or self.session_of_call(call_sid, now) is not None:
            return Opened.DUPLICATE
        if len(self._by_session) >= self.max_calls:
            return Opened.FULL
        self._by_session[session_id] = Entry(
            session_id, call_sid, now + self.ttl_s, Held(self.max_messages, self.max_bytes)
        )
        self._by_call[call_sid] = session_id
        return Opened.STARTED

    def take(self, session_id: str, now: float) -> Entry[T] | None:
        """The session's prefetch, out of the book; None when it has none or its TTL ran
        out (an expired one leaves the book too)."""
        entry = self._remove(session_id)
        return entry if entry is not None and now < entry.expires_at else None

    def expired(self, now: float) -> list[Entry[T]]:
        """The prefetches whose TTL ran out, out of the book."""
        gone = [e.session_id for e in self._by_session.values() if now >= e.expires_at]
        return [e for sid in gone if (e := self._remove(sid)) is not None]

    def next_expiry(self) -> float | None:
        return min((e.expires_at for e in self._by_session.values()), default=None)

    def _remove(self, session_id: str) -> Entry[T] | None:
        entry = self._by_session.pop(session_id, None)
        if entry is not None and self._by_call.get(entry.call_sid) == session_id:
            del self._by_call[entry.call_sid]
        return entry


# --------------------------------------------------------------------------- I/O


class PrefetchMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.prefetches = metrics.counter(
            "gateway_greeting_prefetches_total",
            "Greeting prefetches by outcome (started, taken by the stream, expired untaken, "
            "duplicate webhook, refused when full, failed to subscribe or publish)",
            ["outcome"],
        )
        self.open = metrics.gauge(
            "gateway_greeting_prefetches_open", "Calls whose greeting audio is held now"
        )
        self.dropped = metrics.counter(
            "gateway_greeting_prefetch_dropped_total",
            "Greeting audio messages not played: past a prefetch's bounds (over_bound), or "
            "the webhook's greeting reaching a stream that did not prefetch it "
            "(not_prefetched: the agent says it again under the stream's turn)",
            ["reason"],
        )


@dataclass
class _Live:
    """A prefetch with its subscription."""

    entry: Entry[Msg]
    span: tracing.Span = tracing.INVALID_SPAN  # the call's root span, begun at the webhook
    sub: Subscription | None = None
    forward: Handler | None = None  # once replayed: the stream's handler takes the rest

    def end_trace(self, outcome: str) -> None:
        """The call's span ends here: its stream never took it over."""
        tracing.end_span(self.span, outcome=outcome)
        self.span = tracing.INVALID_SPAN


class Claim:
    """A prefetch the stream took: replay what it holds into the stream's handler."""

    def __init__(self, owner: Prefetches, live: _Live) -> None:
        self._owner = owner
        self._live = live

    @property
    def held(self) -> int:
        return len(self._live.entry.held.items)

    @property
    def span(self) -> tracing.Span:
        """The call's root span begun at the webhook (the stream carries it on and ends
        it; the invalid span when tracing is off)."""
        return self._live.span

    async def replay(self, handler: Handler) -> int:
        """Hand every held message to ``handler`` in arrival order (those arriving
        meanwhile too), then drain the prefetch's subscription into ``handler``; returns
        how many were replayed."""
        live, items = self._live, self._live.entry.held.items
        done = 0
        try:
            while done < len(items):
                msg = items[done]
                done += 1
                await _deliver(handler, msg, live.entry.session_id)
            live.forward = handler  # no await since the loop's last check: nothing missed
            items.clear()
        finally:
            await self._owner.release(live, drain=True)
        return done

    async def release(self) -> None:
        """Give the prefetch up without replaying it (the stream's start failed)."""
        self._live.end_trace("start_failed")
        await self._owner.release(self._live, drain=False)


async def _deliver(handler: Handler, msg: Msg, session_id: str) -> None:
    """One held message to the stream's handler, in the trace context it arrived with."""
    try:
        with tracing.attached(tracing.extract(msg.headers)):
            await handler(msg)
    except Exception:
        log.exception("held greeting audio not handled", session_id=session_id)


class Prefetches:
    """The process's greeting prefetches (owned by the :class:`~.gateway.Gateway`)."""

    def __init__(
        self,
        bus: Bus,
        metrics: Metrics,
        book: PrefetchBook[Msg] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.m = PrefetchMetrics(metrics)
        self.book: PrefetchBook[Msg] = book or PrefetchBook()
        self.clock = clock
        self._live: dict[str, _Live] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._live

    def session_of_call(self, call_sid: str) -> str | None:
        """The session whose prefetch this call has (its incoming webhook came again)."""
        return self.book.session_of_call(call_sid, self.clock())

    async def start(
        self, session_id: str, call_sid: str, span: tracing.Span = tracing.INVALID_SPAN
    ) -> Opened:
        """Hold the session's audio from now on; raises when the bus refuses the
        subscription (nothing is then held). ``span`` (the call's root span) is carried
        on to the stream that claims the prefetch, or ended when none does."""
        opened = self.book.open(session_id, call_sid, self.clock())
        self.m.prefetches.labels(opened.value).inc()
        if opened is not Opened.STARTED:
            return opened
        entry = self.book.get(session_id)
        assert entry is not None
        live = self._live[session_id] = _Live(entry, span)
        self._gauge()
        try:
            live.sub = await self.bus.subscribe(
                subjects.audio(session_id), functools.partial(self._on_msg, live)
            )
        except BaseException:
            self.book.take(session_id, self.clock())
            self._live.pop(session_id, None)
            self._gauge()
            self.m.prefetches.labels("failed").inc()
            raise
        self._arm()
        return opened

    async def cancel(self, session_id: str) -> None:
        """Drop the session's prefetch (``CallIncoming`` could not be published: the
        greeting is written when the stream starts instead)."""
        self.book.take(session_id, self.clock())
        live = self._live.pop(session_id, None)
        if live is not None:
            self.m.prefetches.labels("failed").inc()
            live.end_trace("greeting_not_requested")
            await self.release(live, drain=False)

    def claim(self, session_id: str) -> Claim | None:
        """The session's prefetch for its stream, if this process holds a live one."""
        entry = self.book.take(session_id, self.clock())
        live = self._live.pop(session_id, None)
        if live is None:
            return None
        if entry is None:  # the TTL ran out a moment ago; the timer has not fired yet
            self._expire(live)
            return None
        self.m.prefetches.labels("taken").inc()
        self._gauge()
        log.info(
            "greeting prefetch taken",
            session_id=session_id,
            held=len(entry.held.items),
            dropped=entry.held.dropped,
        )
        return Claim(self, live)

    async def close(self) -> None:
        """Release every prefetch (the process shuts down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lives = list(self._live.values())
        self._live.clear()
        for live in lives:
            self.book.take(live.entry.session_id, self.clock())
            live.end_trace("gateway_shutdown")
        self._gauge()
        await asyncio.gather(*(self.release(live, drain=False) for live in lives))
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def _on_msg(self, live: _Live, msg: Msg) -> None:
        if live.forward is not None:
            await live.forward(msg)
        elif not live.entry.held.add(msg, len(msg.data)):
            self.m.dropped.labels("over_bound").inc()
            if live.entry.held.dropped == 1:
                log.warning(
                    "greeting prefetch full; audio dropped", session_id=live.entry.session_id
                )

    async def release(self, live: _Live, *, drain: bool) -> None:
        """Stop the prefetch's subscription: drained (what it received still goes to
        the stream's handler) or dropped. Errors (a closed connection) are ignored."""
        sub, live.sub = live.sub, None
        if sub is None:
            return
        if drain:
            try:
                await asyncio.wait_for(sub.drain(), _DRAIN_TIMEOUT_S)  # type: ignore[no-untyped-call]
                return
            except Exception:
                log.warning("greeting prefetch not drained", session_id=live.entry.session_id)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    def _gauge(self) -> None:
        self.m.open.set(len(self._live))

    def _arm(self) -> None:
        """(Re)arm the one timer that expires the oldest prefetch."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.book.next_expiry()
        if due is not None:
            delay = max(0.0, due - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        for entry in self.book.expired(self.clock()):
            live = self._live.pop(entry.session_id, None)
            if live is not None:
                self._expire(live)
        self._arm()

    def _expire(self, live: _Live) -> None:
        entry = live.entry
        self.m.prefetches.labels("expired").inc()
        self._gauge()
        log.info(
            "greeting prefetch expired untaken",
            session_id=entry.session_id,
            held=len(entry.held.items),
        )
        entry.held.items.clear()
        live.end_trace("no_stream")  # hung up first, or the stream went to another replica
        task = asyncio.get_running_loop().create_task(self.release(live, drain=False))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
