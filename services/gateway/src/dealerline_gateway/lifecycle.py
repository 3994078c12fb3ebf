"""The start and the end of one media stream, as the rest of the fleet sees them.

Start: the ``start`` frame's session id and one-time token are checked (:func:`admit`;
while the process drains a stream is refused before its token is spent), then
:meth:`Lifecycle.attach` registers the stream, counts it in ``gateway_active_streams``,
subscribes to the call's audio (taking over the greeting this process has held since the
incoming webhook, :mod:`.prefetch`) and command subjects and starts watching for a
hand-off to the human conference; ``StreamStarted`` goes out on the control subject and
as a durable job for the agent (``call.<sid>.agent_job``: the greeting survives an agent
replica dying), saying whether the greeting was held here (``greeting_prefetched``: the
agent then does not greet again) and with the stream's start as ``at``, from which the
greeting is timed.

End: :meth:`Lifecycle.detach` unsubscribes; :meth:`Lifecycle.announce_end` decides whether
Twilio's stop was a hand-off (:mod:`.handoff`) and publishes ``StreamStopped`` and, unless
the call goes on in the conference, ``CallEndedEvent``; :meth:`Lifecycle.release` drops
the stream from the registry (and from the gauge, when the end has not already). A start that fails half way is undone by the
same steps, with nothing published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects, tracing
from dealerline_common.conversation import turn_id_for_call
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    META_HEADER,
    AudioMeta,
    CallEndedEvent,
    StreamStarted,
    StreamStopped,
    agent_job_id,
    from_header,
)

from .call import StreamCall
from .codec import StartFrame
from .handoff import HandoffWatch
from .streams import OpenStream, StreamDeps
from .tokens import StreamGrant, TokenStore

log = get_logger(__name__)

_CALL_ENDED_TIMEOUT_S = 5.0

Handler = Callable[[Msg], Awaitable[None]]


def _greeting_meta(msg: Msg, greeting_turn_id: str) -> AudioMeta | None:
    """The metadata of an audio message of the webhook's greeting turn, else None."""
    raw = (msg.headers or {}).get(META_HEADER)
    if raw is None or greeting_turn_id not in raw:  # cheap: most audio is another turn's
        return None
    try:
        meta = from_header(AudioMeta, msg.headers)
    except (ValueError, ValidationError):
        return None  # the stream's handler counts it
    return meta if meta.turn_id == greeting_turn_id else None


def _adopt_trace(call: StreamCall, span: tracing.Span) -> None:
    """Carry on the call's trace begun at its webhook (where the greeting was asked for):
    its root span becomes the stream's, ended with the stream. The root span the stream
    started for itself is dropped unended, so it is never exported: one call, one trace."""
    if not span.is_recording():
        return
    call.span, call.ctx = span, tracing.context_with(span)
    span.set_attribute("stream_sid", call.stream_sid)
    span.set_attribute("resumed", call.grant.resumed)


class Refused(Exception):
    """The stream is not admitted (``reason`` is the ``streams_rejected_total`` label)."""

    def __init__(self, reason: str, session_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.session_id = session_id


async def admit(start: StartFrame, tokens: TokenStore, draining: bool) -> StreamGrant:
    """The grant of the token the stream presents (used up now); raises :class:`Refused`.

    The token must be one the signed webhook issued for this session and for the call
    Twilio names in ``start.callSid`` (not the ``call_sid`` custom parameter): a stream
    for another call is refused (``call_mismatch``) before the token is spent."""
    params = start.custom_parameters
    token = str(params.get("token") or "")
    session_id = str(params.get("session_id") or "")
    try:
        subjects.check_session_id(session_id)
    except ValueError:
        raise Refused("bad_session_id") from None
    call_sid = start.call_sid
    if not isinstance(call_sid, str) or not call_sid:
        raise Refused("no_call_sid", session_id)
    if params.get("call_sid") not in (None, call_sid):
        raise Refused("call_mismatch", session_id)
    if draining:
        # Before admission, so the one-time token is not spent on a refused stream.
        raise Refused("draining", session_id)
    try:
        grant = await tokens.admit(token, session_id, call_sid)
    except Exception:
        log.exception("media stream admission failed", session_id=session_id)
        raise Refused("start_failed", session_id) from None
    if grant is None:
        raise Refused("bad_token", session_id)
    return grant


class Lifecycle:
    """What one admitted stream holds in its process and on the bus."""

    def __init__(self, deps: StreamDeps, stream: OpenStream) -> None:
        self._deps = deps
        self._stream = stream
        self._subs: list[Subscription] = []
        self._handoff: HandoffWatch | None = None  # is a move to the human conference due?
        self._counted = False  # in gateway_active_streams
        self.started_at = time.time()  # set again when the stream is attached
        self.greeting_prefetched = False  # this process held the webhook's greeting

    async def attach(self, call: StreamCall, on_audio: Handler, on_command: Handler) -> None:
        d = self._deps
        self.started_at = time.time()
        d.streams.register(self._stream)
        d.gm.active_streams.inc()
        self._counted = True
        # The greeting held since the webhook (a new call on this process only): claimed
        # before the stream's own subscription, replayed into it after.
        claim = None if call.grant.resumed else d.prefetches.claim(call.session_id)
        self.greeting_prefetched = claim is not None
        audio = self._audio_handler(call, on_audio)
        try:
            self._subs.append(await d.bus.subscribe(subjects.audio(call.session_id), audio))
        except BaseException:
            if claim is not None:
                await claim.release()
            raise
        if claim is not None:
            _adopt_trace(call, claim.span)
            replayed = await claim.replay(audio)
            log.info("greeting prefetch replayed", session_id=call.session_id, messages=replayed)
        self._subs.append(await d.bus.subscribe(subjects.command(call.session_id), on_command))
        self._handoff = HandoffWatch(d.handoffs, d.bus, call.session_id, call.call_sid)
        await self._handoff.start()

    def _audio_handler(self, call: StreamCall, on_audio: Handler) -> Handler:
        """The stream's audio handler, with the webhook's greeting (turn
        ``turn_id_for_call``) sorted out: on a stream that prefetched it, it is timed from
        this stream's start (``timings.stream_started``: its origin for playback, the start
        of its ``greeting`` stage); on any other stream it is dropped, since the agent
        says it again under the stream's own greeting turn."""
        greeting = turn_id_for_call(call.call_sid)
        prefetched, started_at = self.greeting_prefetched, self.started_at
        dropped = self._deps.prefetches.m.dropped

        async def handle(msg: Msg) -> None:
            meta = _greeting_meta(msg, greeting)
            if meta is not None:
                if not prefetched:
                    dropped.labels("not_prefetched").inc()
                    return
                if meta.timings.stream_started is None:
                    meta.timings.stream_started = started_at
                    msg.headers = {**(msg.headers or {}), **meta.header()}
            await on_audio(msg)

        return handle

    async def announce_start(self, call: StreamCall) -> None:
        """``StreamStarted`` on the control subject (every agent replica records the
        stream) and as a durable job on ``call.<sid>.agent_job`` (one replica greets, or
        sees the greeting is held here; another takes the job over if it dies)."""
        grant = call.grant
        started = StreamStarted(
            session_id=call.session_id,
            call_sid=grant.call_sid,
            stream_sid=call.stream_sid,
            resumed=grant.resumed,
            reason=grant.reason,
            from_number=call.from_number,
            to_number=call.to_number,
            at=self.started_at,
            greeting_prefetched=self.greeting_prefetched,
        )
        bus = self._deps.bus
        with tracing.attached(call.ctx):  # the greeting turn joins the call's trace
            await bus.publish(subjects.control(call.session_id), started)
            await asyncio.wait_for(
                bus.publish_durable(
                    subjects.agent_job(call.session_id), started, msg_id=agent_job_id(started)
                ),
                self._deps.settings.event_publish_timeout_s,
            )

    async def detach(self) -> None:
        """Leave the call's subjects (errors ignored)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def forget_handoff(self) -> None:
        """A start undone: stop watching for a hand-off without deciding anything."""
        if self._handoff is not None:
            await self._handoff.stop()
            self._handoff = None

    def uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._deps.gm.active_streams.dec()

    def release(self) -> None:
        """The stream is gone: out of the gauge and the registry."""
        self.uncount()
        self._deps.streams.unregister(self._stream)

    async def announce_end(self, call: StreamCall, reason: str) -> None:
        """``StreamStopped`` (``handoff``, ``stop`` or ``disconnect``) and, unless the call
        was handed to the conference, ``CallEndedEvent`` (publish errors are logged)."""
        sid = call.session_id
        handoff = await self._is_handoff(call, reason)
        stopped_reason = "handoff" if handoff else "stop" if reason == "stop" else "disconnect"
        bus = self._deps.bus
        try:
            with tracing.attached(call.ctx):
                await bus.publish(
                    subjects.control(sid),
                    StreamStopped(
                        session_id=sid,
                        call_sid=call.call_sid,
                        stream_sid=call.stream_sid,
                        reason=stopped_reason,
                    ),
                )
                if not handoff:  # moved to the conference: the call goes on
                    await asyncio.wait_for(
                        bus.publish_durable(
                            subjects.events(sid), CallEndedEvent(session_id=sid, reason=reason)
                        ),
                        _CALL_ENDED_TIMEOUT_S,
                    )
        except Exception:
            log.exception("could not publish the end of the stream", session_id=sid)

    async def _is_handoff(self, call: StreamCall, reason: str) -> bool:
        """Whether Twilio stopped the stream because the call was moved into the human
        conference, not hung up (see :mod:`.handoff`)."""
        watch, self._handoff = self._handoff, None
        if watch is None:
            return False
        try:
            handoff = reason in ("stop", "disconnect") and await watch.decide()
        finally:
            await watch.stop()
        if handoff:
            log.info("media stream handed off to the conference", session_id=call.session_id)
        return handoff
