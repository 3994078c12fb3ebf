"""Telling a hand-off to the human conference apart from a hang-up.

When the escalation service redirects the caller's call to ``/api/voice/escalate``, Twilio
ends the media stream with ``stop`` - exactly as when the caller hangs up - and fetches the
conference TwiML. That stop must not end the call (no ``CallEndedEvent``; ``StreamStopped``
says ``reason="handoff"``). Twilio may send the stop before or after it fetches the new
URL, and the webhook may reach another gateway replica than the one holding the stream, so:

- ``/api/voice/escalate`` records a marker for the session in a NATS KV bucket (any
  replica reads it); ``/api/voice/return-to-ai`` removes it;
- each media session follows the session's ``call.<sid>.escalation`` statuses: once the
  caller's transfer is imminent (CONFIRMED or IN_CONFERENCE, not final) a stop waits up to
  ``grace_s`` for the marker to appear; otherwise a stop is judged at once, so an ordinary
  hang-up is never delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationStatus, HumanCallStatus, loads

from .kv_bucket import LazyBucket

log = get_logger(__name__)

BUCKET = "dl_handoffs"
TTL_S = 600.0
# Replicas' clocks differ a little; a marker is never older than the stream it moves by
# more than this (a marker of an earlier escalation is far older, and removed anyway).
CLOCK_SKEW_S = 2.0
_IMMINENT = frozenset({HumanCallStatus.CONFIRMED, HumanCallStatus.IN_CONFERENCE})


def _key(session_id: str) -> str:
    return f"h_{subjects.check_session_id(session_id)}"


class Handoffs(LazyBucket):
    """The hand-off markers, shared by every gateway replica."""

    def __init__(self, bus: Bus, grace_s: float, poll_s: float = 0.05) -> None:
        super().__init__(bus, BUCKET, TTL_S)
        self.grace_s = grace_s
        self.poll_s = poll_s

    async def mark(self, session_id: str, call_sid: str | None) -> None:
        body = {"call_sid": call_sid, "at": time.time()}
        await (await self.kv()).put(_key(session_id), json.dumps(body).encode())

    async def clear(self, session_id: str) -> None:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await (await self.kv()).delete(_key(session_id))

    async def marked(self, session_id: str, call_sid: str | None, since: float) -> bool:
        """A hand-off of this call was requested after ``since`` (the stream's start)."""
        try:
            entry = await (await self.kv()).get(_key(session_id))
        except nats.js.errors.KeyNotFoundError:  # includes KeyDeletedError
            return False
        if not entry.value:
            return False
        try:
            body = json.loads(entry.value)
            at = float(body["at"])
            marked_call = body.get("call_sid")
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable hand-off marker", session_id=session_id)
            return False
        if call_sid and marked_call and marked_call != call_sid:
            return False
        return at >= since - CLOCK_SKEW_S

    async def is_handoff(
        self, session_id: str, call_sid: str | None, since: float, expected: bool
    ) -> bool:
        """Whether the stream that began at ``since`` stopped because the call was moved
        to the conference; waits up to ``grace_s`` only when a transfer was ``expected``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.grace_s if expected else 0.0)
        while True:
            try:
                if await self.marked(session_id, call_sid, since):
                    return True
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("hand-off marker unreadable", session_id=session_id, error=repr(exc))
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.poll_s)


class HandoffWatch:
    """One media session's view of its call's escalation: is a transfer imminent?"""

    def __init__(self, handoffs: Handoffs, bus: Bus, session_id: str, call_sid: str | None) -> None:
        self.handoffs = handoffs
        self.bus = bus
        self.session_id = session_id
        self.call_sid = call_sid
        self.started_at = time.time()
        self.expected = False
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(subjects.escalation(self.session_id), self._on_status)

    async def _on_status(self, msg: Msg) -> None:
        try:
            status = loads(EscalationStatus, msg.data)
        except ValidationError:
            return
        self.expected = status.status in _IMMINENT and not status.final

    async def decide(self) -> bool:
        try:
            return await self.handoffs.is_handoff(
                self.session_id, self.call_sid, self.started_at, self.expected
            )
        except Exception:
            log.exception("hand-off decision failed; treating the stop as a hang-up")
            return False

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
