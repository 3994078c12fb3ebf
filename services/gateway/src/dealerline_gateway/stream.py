"""One Twilio Media Stream: the session that routes each inbound frame (:mod:`.codec`)
and wires the call's parts together: the caller's audio (:mod:`.caller_audio`, its events
run by :mod:`.listener`: the end of the turn, holding playback, barge-in) becoming
utterances on the bus (:mod:`.turns`, :mod:`.outbox`), the reply's audio played back
(:mod:`.playback`, :mod:`.sender`), runs of key presses (:mod:`.keypad`) and
turns played (:mod:`.control_lane`), hang-up on request, and the stream's start and end
(:mod:`.lifecycle`).

A malformed frame is counted, logged and skipped: it never closes the socket (a frame
naming another stream is one). A per-call task that dies with an error (:mod:`.tasks`)
closes the stream with 1011 (Twilio then goes on with the TwiML after ``<Connect>``)
rather than leaving the call mute or deaf. A stream whose admission fails (the token
bucket or the bus erring) is refused like one with a bad token, leaving nothing
registered; while the gateway drains, a new stream is refused before its token is spent.

Hostile input holds neither the event loop nor the other calls: uvicorn closes a socket
whose message is over ``ws_max_message_bytes`` (1009, counted as ``message_too_big``);
the codec refuses a media payload over ``media_payload_max_bytes`` before decoding it;
a socket that sends no ``start`` within ``stream_start_timeout_s`` is refused (1008,
``start_timeout``); a socket sending far more messages than Twilio does is closed
(1008, ``flood``, :mod:`.flood`); the session yields to the loop between messages; the
caller's audio costs linear work per payload and the call's utterances waiting for the
bus are capped (:mod:`.listener`).

Tracing (when on): the stream is the call's root span ``gateway.call`` (:mod:`.call`);
each utterance opens a ``gateway.turn`` span (:mod:`.turns`); each sentence played is a
``gateway.playback`` span under the TTS span that made it (:mod:`.sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import NoReturn

from nats.aio.msg import Msg
from pydantic import ValidationError
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from dealerline_common import subjects, tracing
from dealerline_common.bus import msg_payload
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import (
    AudioMeta,
    HangupRequest,
    StreamStartedEvent,
    from_header,
    parse_command,
)

from . import codec
from .call import StreamCall
from .caller_audio import CallerAudio, CallerEvent
from .codec import BadFrame, DtmfFrame, MarkFrame, MediaFrame, StartFrame
from .control_lane import ControlLane
from .flood import MessageBudget
from .keypad import KEYS, KeyRuns
from .lifecycle import Lifecycle, Refused, admit
from .listener import Listener
from .outbox import Outbox
from .playback import Playback, Sentence
from .sender import Sender
from .streams import StreamDeps
from .tasks import CANCEL_DEADLINE_S, CallTasks
from .tokens import StreamGrant
from .turns import TurnLatency

log = get_logger(__name__)

POLICY_VIOLATION = 1008
_MESSAGE_TOO_BIG = 1009  # uvicorn closed the socket: a message over ws_max_message_bytes
_TASK_FAILED = 1011  # WebSocket "internal error"
_STALL_SWEEP_S = 0.1


class _Stop(Exception):
    """The stream is over (Twilio sent ``stop``, or the stream was refused)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaSession:
    def __init__(self, deps: StreamDeps, ws: WebSocket) -> None:
        self.deps = deps
        self.ws = ws
        self.settings = deps.settings
        self.call: StreamCall | None = None  # once admitted
        self.playback = Playback(deps.settings.outbound_queue_max)
        smart = deps.settings.end_of_turn == "smart" and deps.turn_model is not None
        self.caller = CallerAudio(deps.settings, self.playback, self._on_caller, smart=smart)
        self.listener: Listener | None = None  # once admitted
        self.outbox = Outbox(deps.bus)
        self.tasks = CallTasks(deps.gm, self._on_task_failure)
        self.lifecycle = Lifecycle(deps, self)
        self.sender: Sender | None = None  # once admitted
        self.turns: TurnLatency | None = None  # once admitted
        self.control: ControlLane | None = None  # once admitted
        self.keys = KeyRuns(deps.settings.dtmf_interdigit_s)
        self._keys_timer: asyncio.TimerHandle | None = None  # ends the open run of keys
        self._hangup: asyncio.Task[None] | None = None
        self._close_reason: str | None = None
        self._logged_once: set[str] = set()
        self._finishing = False
        self.done = asyncio.Event()

    @property
    def session_id(self) -> str | None:
        return self.call.session_id if self.call is not None else None

    # ----------------------------------------------------------------- main loop

    async def run(self) -> None:
        await self.ws.accept()
        reason = "disconnect"
        loop = asyncio.get_running_loop()
        start_by = loop.time() + self.settings.stream_start_timeout_s
        budget = MessageBudget(loop.time())
        try:
            while True:
                try:
                    message = await self._receive(start_by)
                except _Stop as stop:
                    reason = stop.reason
                    break
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == _MESSAGE_TOO_BIG:
                        reason = "message_too_big"
                        self._bad_frame(reason)
                    break
                try:
                    if not budget.take(loop.time(), started=self.call is not None):
                        await self._refuse("flood", self.session_id)
                    await self._on_frame(self._parse(message))
                except BadFrame as exc:
                    self._bad_frame(self._judge(exc))
                except _Stop as stop:
                    reason = stop.reason
                    break
                except Exception:
                    log.exception("frame handler failed", session_id=self.session_id)
                    self._bad_frame("handler_error")
        finally:
            if self._close_reason is not None and reason == "disconnect":
                reason = self._close_reason
            await self._finish(reason)

    async def _receive(self, start_by: float) -> Message:
        """The next message (a gone socket reads as a disconnect). Until the stream has
        started, only until ``start_by`` (loop time): a socket that sends no ``start`` by
        then is refused, so it holds nothing for longer.

        It yields to the loop first, every time: uvicorn queues all the messages of one
        network read at once and taking a queued one does not suspend, so without it one
        socket's burst (thousands of small messages) would run to its end before any
        other call's playback or frames got a turn."""
        await asyncio.sleep(0)
        try:
            if self.call is not None:
                return await self.ws.receive()
            async with asyncio.timeout_at(start_by):
                return await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return {"type": "websocket.disconnect"}
        except TimeoutError:
            await self._refuse("start_timeout")

    def _parse(self, message: Message) -> codec.InboundFrame:
        text = message.get("text")
        return codec.parse_frame(
            text if text is not None else b"",
            stream_sid=self.call.stream_sid if self.call is not None else None,
            max_payload=self.settings.media_payload_max_bytes,
        )

    def _judge(self, exc: BadFrame) -> str:
        """The reason a bad frame is counted under: a frame out of place in the stream
        counts as that, however malformed it is."""
        if exc.event == "media" and self.call is None:
            return "media_before_start"
        if exc.event == "start" and self.call is not None:
            return "duplicate_start"
        return exc.reason

    def _bad_frame(self, reason: str) -> None:
        """Count every bad frame; log each reason once per stream, so that a stream
        sending nothing but bad frames cannot flood the logs."""
        self.deps.gm.bad_frames.labels(reason).inc()
        if reason in self._logged_once:
            return
        self._logged_once.add(reason)
        log.warning("bad media-stream frame skipped", reason=reason, session_id=self.session_id)

    async def _on_frame(self, frame: codec.InboundFrame) -> None:
        if isinstance(frame, MediaFrame):
            self._on_media(frame)
        elif isinstance(frame, MarkFrame):
            self._on_mark(frame)
        elif isinstance(frame, StartFrame):
            await self._on_start(frame)
        elif isinstance(frame, codec.ConnectedFrame):
            log.debug("media stream connected", protocol=frame.protocol)
        elif isinstance(frame, DtmfFrame):
            self._on_dtmf(frame)
        else:
            raise _Stop("stop")

    # ----------------------------------------------------------------- start

    async def _on_start(self, start: StartFrame) -> None:
        if self.call is not None:
            raise BadFrame("duplicate_start")
        deps = self.deps
        try:
            grant = await admit(start, deps.tokens, deps.streams.draining)
        except Refused as refused:
            await self._refuse(refused.reason, refused.session_id)
        try:
            await self._open(start, grant)
        except Exception:
            log.exception("media stream start failed", session_id=grant.session_id)
            await self._abort_start()
            await self._refuse("start_failed", grant.session_id)

    async def _open(self, start: StartFrame, grant: StreamGrant) -> None:
        call = StreamCall.open(grant.session_id, start.stream_sid, start.custom_parameters, grant)
        self.call = call
        self.tasks.session_id = call.session_id
        gm = self.deps.gm
        self.turns = TurnLatency(call, gm)
        self.control = ControlLane(self.deps.bus, call, self.tasks.spawn)
        self.sender = Sender(
            self.ws,
            call,
            self.playback,
            gm,
            self.settings.playback_frames_per_chunk,
            self._first_media,
            self.settings.playback_lead_ms,
        )
        self.listener = Listener(
            self.deps,
            call,
            self.caller,
            self.playback,
            self.sender,
            self.control,
            self.turns,
            self.outbox,
            self.tasks.spawn,
        )
        await self.lifecycle.attach(call, self._on_audio, self._on_command)
        self.tasks.spawn("sender", self.sender.run())
        self.tasks.spawn("outbox", self.outbox.run())
        self.tasks.spawn("stall_sweep", self._sweep_stalls())
        log.info(
            "media stream started",
            session_id=call.session_id,
            stream_sid=call.stream_sid,
            resumed=grant.resumed,
            caller=mask_phone(call.from_number),
            trace_id=tracing.trace_id(call.ctx),
        )
        await self.lifecycle.announce_start(call)
        self.outbox.emit(
            subjects.events(call.session_id),
            StreamStartedEvent(
                session_id=call.session_id, stream_sid=call.stream_sid, resumed=grant.resumed
            ),
            call.ctx,
        )

    async def _abort_start(self) -> None:
        """Undo a start that failed half way, so that nothing of the stream stays
        registered, subscribed or running (and no end-of-stream is published for it)."""
        await self.lifecycle.detach()
        await self.lifecycle.forget_handoff()
        self._finishing = True  # a task cancelled below must not try to close the stream
        await self.tasks.cancel_all()
        self.lifecycle.uncount()
        self._end_trace("start_failed")
        self.call = None
        self.lifecycle.release()

    async def _refuse(self, reason: str, session_id: str | None = None) -> NoReturn:
        self.deps.gm.streams_rejected.labels(reason).inc()
        log.warning("media stream refused", reason=reason, session_id=session_id)
        with contextlib.suppress(Exception):
            await self.ws.close(code=POLICY_VIOLATION, reason=reason)
        raise _Stop("refused")

    # ----------------------------------------------------------------- the caller

    def _on_media(self, frame: MediaFrame) -> None:
        if self.call is None:
            raise BadFrame("media_before_start")
        if frame.inbound:
            self.caller.feed(frame)

    def _on_caller(self, ev: CallerEvent) -> None:
        if self.listener is not None:
            self.listener.on_event(ev)

    def _on_dtmf(self, frame: DtmfFrame) -> None:
        control = self.control
        if self.call is None or control is None:
            raise BadFrame("dtmf_before_start")
        if frame.digit not in KEYS:
            raise BadFrame("bad_dtmf_digit")
        # The digit itself is not logged: callers key in card and account numbers.
        log.info("dtmf received", session_id=self.session_id)
        for run in self.keys.press(frame.digit, time.time()):
            control.keys(run)
        self._arm_keys()

    def _arm_keys(self) -> None:
        """(Re)arm the one timer that ends the open run of keys."""
        if self._keys_timer is not None:
            self._keys_timer.cancel()
            self._keys_timer = None
        deadline = self.keys.deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.time())
            self._keys_timer = asyncio.get_running_loop().call_later(delay, self._keys_due)

    def _keys_due(self) -> None:
        self._keys_timer = None
        run = self.keys.expire(time.time())
        if run is not None and self.control is not None:
            self.control.keys(run)
        self._arm_keys()  # again if the clock was early

    def _drop_keys(self) -> None:
        """The stream ended: a run of keys not finished yet is dropped (the caller left)."""
        if self._keys_timer is not None:
            self._keys_timer.cancel()
            self._keys_timer = None
        self.keys.drop()

    async def _sweep_stalls(self) -> None:
        """The ``stall_sweep`` task: end an utterance when the carrier stops sending frames
        mid-speech, and skip a sentence of the reply that never arrived."""
        while True:
            await asyncio.sleep(_STALL_SWEEP_S)
            self.caller.end_if_stalled()
            skipped = self.playback.release_stalled(
                time.time(), self.settings.sentence_gap_timeout_s
            )
            if skipped:
                self.deps.gm.playback_drops.labels("missing").inc(len(skipped))
                log.warning(
                    "sentences never arrived; skipped", session_id=self.session_id, seqs=skipped
                )

    # ----------------------------------------------------------------- playback

    async def _on_audio(self, msg: Msg) -> None:
        drops = self.deps.gm.playback_drops
        try:
            meta = from_header(AudioMeta, msg.headers)
        except (ValueError, ValidationError):
            log.warning("audio message without valid metadata", session_id=self.session_id)
            drops.labels("bad_meta").inc()
            return
        if meta.session_id != self.session_id:
            drops.labels("wrong_session").inc()
            return
        offered = self.playback.offer(
            meta, msg_payload(msg), time.time(), tracing.current_context()
        )
        for drop in offered:
            drops.labels(drop.reason).inc()
        self._turn_played(meta.turn_id)  # a closing message after the last mark came back

    def _first_media(self, sentence: Sentence) -> None:
        call, turns = self.call, self.turns
        assert call is not None
        assert turns is not None
        event = turns.first_media(sentence, self.playback.turns[sentence.turn_id])
        self.outbox.emit(subjects.events(call.session_id), event, call.ctx)

    def _on_mark(self, frame: MarkFrame) -> None:
        heard = self.playback.mark_echoed(frame.name, time.time())
        log.debug("mark echoed", session_id=self.session_id, mark=frame.name, heard=heard)
        if heard:
            self._turn_played(frame.name.rpartition(":")[0])

    def _turn_played(self, turn_id: str) -> None:
        if self.control is not None:
            self.control.turn_played(turn_id, self.playback.turns.get(turn_id))

    # ----------------------------------------------------------------- hang-up

    async def _on_command(self, msg: Msg) -> None:
        try:
            req = parse_command(msg.data)
        except ValidationError:
            log.warning("unknown command message", session_id=self.session_id)
            return
        if req.session_id == self.session_id and self._hangup is None:
            log.info("hang-up requested", session_id=self.session_id, after_turn=req.after_turn)
            self._hangup = self.tasks.spawn("hangup", self._hangup_after(req))

    async def _hangup_after(self, req: HangupRequest) -> None:
        timeout_s = self.settings.hangup_timeout_s
        if not await self.playback.wait_turn_done(req.after_turn, timeout_s):
            log.warning("hang-up: turn not heard in time", session_id=self.session_id)
        self._close_reason = f"hangup:{req.reason}" if req.reason else "hangup"
        await self._close_socket(1000)

    # ----------------------------------------------------------------- end

    def _on_task_failure(self, name: str) -> None:
        if self._finishing or self._close_reason is not None:
            return
        self._close_reason = f"task_failed:{name}"
        self.tasks.spawn("close", self._close_socket(_TASK_FAILED))

    async def _close_socket(self, code: int) -> None:
        """Close the socket between two writes of the sender."""
        if self.sender is not None:
            await self.sender.close(code)
            return
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)

    async def close(self, code: int = 1001) -> None:
        """Close the socket from our side (drain deadline)."""
        self._close_reason = self._close_reason or "gateway_shutdown"
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)

    async def _finish(self, reason: str) -> None:
        self._finishing = True
        self._drop_keys()
        try:
            call = self.call
            if call is None:
                return
            await self.lifecycle.detach()
            await self.outbox.flush(CANCEL_DEADLINE_S)
            await self.tasks.cancel_all()
            self.lifecycle.uncount()
            log.info("media stream ended", session_id=call.session_id, reason=reason)
            await self.lifecycle.announce_end(call, reason)
            self.lifecycle.release()
        finally:
            await self.tasks.cancel_all()
            self._end_trace(reason)
            self.done.set()

    def _end_trace(self, reason: str) -> None:
        """End the call's span and the turns never answered (idempotent)."""
        if self.turns is not None:
            self.turns.end()
        if self.call is not None:
            self.call.end_trace(reason)
