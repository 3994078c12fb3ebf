"""One Twilio Media Stream: inbound frames -> VAD -> endpointed utterances on the bus;
audio from TTS -> ordered media + marks back to Twilio; barge-in; hang-up.

A malformed frame is counted, logged and skipped: it never closes the socket. Every task a
session starts is named, kept in :attr:`MediaSession._tasks` and cancelled with a deadline
when the stream ends; a task that dies with an error is logged and closes the stream
(Twilio then goes on with the TwiML after ``<Connect>``) rather than leaving the call mute
or deaf. A stream whose admission fails (the token bucket or the bus erring) is refused
like one with a bad token, leaving nothing registered. While the gateway drains, a new
stream is refused before its token is spent (readiness is false, so the load balancer
sends the caller's next attempt elsewhere).

Tracing (when on): the stream is the call's root span ``gateway.call``; each utterance
opens a ``gateway.turn`` (from the caller's first voiced frame to the first media frame
of the reply) with a ``gateway.endpointing`` child (last voiced frame to end declared);
the utterance carries the turn's context to STT, and the reply's audio comes back with
the TTS span's, under which each sentence's ``gateway.playback`` span is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dealerline_common import audio, subjects, tracing
from dealerline_common.bus import msg_payload
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import (
    AudioMeta,
    BargeIn,
    CallEndedEvent,
    Dtmf,
    HangupRequest,
    LatencyEvent,
    StreamStarted,
    StreamStartedEvent,
    StreamStopped,
    TurnPlayed,
    TurnTimings,
    UtteranceMeta,
    Wire,
    from_header,
    new_id,
    parse_control,
)

from .handoff import HandoffWatch
from .playback import Playback, Sentence
from .tokens import StreamGrant
from .vad import Discarded, Endpointer, EndpointerConfig, SpeechStart, Utterance, make_vad

if TYPE_CHECKING:
    from .app import Gateway

log = get_logger(__name__)

POLICY_VIOLATION = 1008
SILENT_FRAME = bytes([audio.ULAW_SILENCE]) * audio.FRAME_BYTES
_TASK_DEADLINE_S = 2.0
_REMEMBERED_UTTERANCES = 16
_TASK_FAILED = 1011  # WebSocket "internal error"
# Frame errors that repeat for every frame of a misbehaving stream: logged once per stream
# (still counted every time).
_LOG_ONCE = frozenset({"media_before_start"})


class BadFrame(Exception):
    """A frame that cannot be understood; it is skipped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Publish:
    subject: str
    data: bytes | Wire
    headers: dict[str, str] | None = None
    msg_id: str | None = None
    durable: bool = True
    meta: UtteranceMeta | None = None  # its header is stamped with the send time
    trace_ctx: tracing.Context | None = None  # published as a child of this


class _Stop(Exception):
    """The stream is over (Twilio sent ``stop``, or the stream was refused)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaSession:
    def __init__(self, gateway: Gateway, ws: WebSocket) -> None:
        self.gw = gateway
        self.ws = ws
        s = gateway.settings
        self.settings = s
        self.session_id: str | None = None
        self.call_sid: str | None = None
        self.stream_sid: str | None = None
        self.vad = make_vad(s.vad_kind, s.vad_aggressiveness, s.energy_threshold)
        self.endpointer = Endpointer(
            EndpointerConfig.from_ms(
                start_frames=s.speech_start_frames,
                start_window=max(s.speech_start_window, s.speech_start_frames),
                end_silence_ms=s.end_silence_ms,
                min_speech_ms=s.min_speech_ms,
                preroll_ms=s.preroll_ms,
                tail_ms=s.tail_ms,
                max_utterance_s=s.max_utterance_s,
            )
        )
        self.playback = Playback(s.outbound_queue_max)
        self._send_lock = asyncio.Lock()
        self._outbox: asyncio.Queue[_Publish] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._inbuf = b""
        self._next_ts: float | None = None
        self._last_frame_at = time.monotonic()
        self._utt_index = 0
        self._utt_during_playback = False
        self._barged = False  # this utterance already triggered a barge-in
        self._utt_timings: dict[str, TurnTimings] = {}
        self._hangup: asyncio.Task[None] | None = None
        self._close_reason: str | None = None
        self._logged_once: set[str] = set()
        self._finishing = False
        self._counted = False  # in gateway_active_streams
        self._handoff: HandoffWatch | None = None  # is a move to the human conference due?
        self._played: dict[str, None] = {}  # turns reported played (TurnPlayed), bounded
        self._call_span: tracing.Span = tracing.INVALID_SPAN
        self._call_ctx: tracing.Context | None = None
        self._turn_spans: dict[str, tracing.Span] = {}  # by utterance id, until first media
        self.done = asyncio.Event()

    # ----------------------------------------------------------------- tasks

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{name}:{self.session_id or '-'}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A per-call task ended: if it died with an error, log it and close the stream,
        so that Twilio ends or continues the call instead of it going on mute or deaf."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        name = task.get_name().split(":", 1)[0]
        log.error(
            "per-call task failed",
            session_id=self.session_id,
            task=name,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        self.gw.gm.task_failures.labels(name).inc()
        if self._finishing or self._close_reason is not None:
            return
        self._close_reason = f"task_failed:{name}"
        self._spawn("close", self._close_after_failure())

    async def _close_after_failure(self) -> None:
        async with self._send_lock:
            with contextlib.suppress(Exception):
                await self.ws.close(code=_TASK_FAILED)

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_TASK_DEADLINE_S)
            for t in pending:
                log.error("task did not stop in time", task=t.get_name())

    # ----------------------------------------------------------------- main loop

    async def run(self) -> None:
        await self.ws.accept()
        reason = "disconnect"
        try:
            while True:
                try:
                    message = await self.ws.receive()
                except (WebSocketDisconnect, RuntimeError):
                    break
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                try:
                    if text is None:
                        raise BadFrame("binary frame")
                    await self._on_frame(text)
                except BadFrame as exc:
                    self._bad_frame(exc.reason)
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

    def _bad_frame(self, reason: str) -> None:
        self.gw.gm.bad_frames.labels(reason).inc()
        if reason in _LOG_ONCE:
            if reason in self._logged_once:
                return
            self._logged_once.add(reason)
        log.warning("bad media-stream frame skipped", reason=reason, session_id=self.session_id)

    async def _on_frame(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            raise BadFrame("invalid_json") from None
        if not isinstance(frame, dict):
            raise BadFrame("not_an_object")
        event = frame.get("event")
        if event == "media":
            self._on_media(frame)
        elif event == "mark":
            self._on_mark(frame)
        elif event == "start":
            await self._on_start(frame)
        elif event == "connected":
            log.debug("media stream connected", protocol=frame.get("protocol"))
        elif event == "dtmf":
            await self._on_dtmf(_obj(frame, "dtmf"))
        elif event == "stop":
            raise _Stop("stop")
        else:
            raise BadFrame("unknown_event")

    # ----------------------------------------------------------------- start

    async def _on_start(self, frame: dict[str, Any]) -> None:
        if self.session_id is not None:
            raise BadFrame("duplicate_start")
        start = _obj(frame, "start")
        stream_sid = _str(frame.get("streamSid") or start.get("streamSid"), "streamSid")
        params = start.get("customParameters")
        if not isinstance(params, dict):
            params = {}
        token = str(params.get("token") or "")
        session_id = str(params.get("session_id") or "")
        call_sid = start.get("callSid") or params.get("call_sid")
        try:
            subjects.check_session_id(session_id)
        except ValueError:
            await self._refuse("bad_session_id")
        if self.gw.health.draining:
            # Before admission, so the one-time token is not spent on a refused stream.
            await self._refuse("draining", session_id)
        try:
            grant = await self.gw.tokens.admit(
                token, session_id, str(call_sid) if isinstance(call_sid, str) else None
            )
        except Exception:
            log.exception("media stream admission failed", session_id=session_id)
            await self._refuse("start_failed", session_id)
            return
        if grant is None:
            await self._refuse("bad_token", session_id)
            return
        try:
            await self._admit(session_id, stream_sid, params, grant)
        except Exception:
            log.exception("media stream start failed", session_id=session_id)
            await self._abort_start()
            await self._refuse("start_failed", session_id)

    async def _admit(
        self, session_id: str, stream_sid: str, params: dict[str, Any], grant: StreamGrant
    ) -> None:
        self.session_id = session_id
        self.call_sid = grant.call_sid
        self.stream_sid = stream_sid
        from_number = params.get("from") or grant.from_number
        to_number = params.get("to") or grant.to_number
        if tracing.enabled():
            self._call_span = tracing.start_span(
                "gateway.call",
                context=tracing.Context(),  # a new trace: the call's root
                kind=tracing.SpanKind.SERVER,
                session_id=session_id,
                call_sid=grant.call_sid,
                stream_sid=stream_sid,
                resumed=grant.resumed,
                reason=grant.reason,
                caller=mask_phone(from_number),
            )
            self._call_ctx = tracing.context_with(self._call_span)
        self.gw.register(self)
        self.gw.gm.active_streams.inc()
        self._counted = True
        self._subs.append(await self.gw.bus.subscribe(subjects.audio(session_id), self._on_audio))
        self._subs.append(
            await self.gw.bus.subscribe(subjects.control(session_id), self._on_control)
        )
        self._handoff = HandoffWatch(self.gw.handoffs, self.gw.bus, session_id, grant.call_sid)
        await self._handoff.start()
        self._spawn("sender", self._sender())
        self._spawn("outbox", self._publisher())
        self._spawn("watchdog", self._watchdog())
        log.info(
            "media stream started",
            session_id=session_id,
            stream_sid=stream_sid,
            resumed=grant.resumed,
            caller=mask_phone(from_number),
            trace_id=tracing.trace_id(self._call_ctx),
        )
        with tracing.attached(self._call_ctx):  # the greeting turn joins the call's trace
            await self.gw.bus.publish(
                subjects.control(session_id),
                StreamStarted(
                    session_id=session_id,
                    call_sid=grant.call_sid,
                    stream_sid=stream_sid,
                    resumed=grant.resumed,
                    reason=grant.reason,
                    from_number=from_number,
                    to_number=to_number,
                ),
            )
        self._emit(
            subjects.events(session_id),
            StreamStartedEvent(session_id=session_id, stream_sid=stream_sid, resumed=grant.resumed),
        )

    async def _abort_start(self) -> None:
        """Undo a start that failed half way, so that nothing of the stream stays
        registered, subscribed or running (and no end-of-stream is published for it)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._handoff is not None:
            await self._handoff.stop()
            self._handoff = None
        self._finishing = True  # a task cancelled below must not try to close the stream
        await self._cancel_tasks()
        if self._counted:
            self._counted = False
            self.gw.gm.active_streams.dec()
        self._end_trace("start_failed")
        self.session_id = None
        self.gw.unregister(self)

    async def _refuse(self, reason: str, session_id: str | None = None) -> None:
        self.gw.gm.streams_rejected.labels(reason).inc()
        log.warning("media stream refused", reason=reason, session_id=session_id)
        with contextlib.suppress(Exception):
            await self.ws.close(code=POLICY_VIOLATION, reason=reason)
        raise _Stop("refused")

    # ----------------------------------------------------------------- inbound audio

    def _on_media(self, frame: dict[str, Any]) -> None:
        if self.session_id is None:
            raise BadFrame("media_before_start")
        media = _obj(frame, "media")
        track = media.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            return
        payload = _str(media.get("payload"), "payload")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadFrame("bad_base64") from None
        ts: float | None
        try:
            ts = float(media["timestamp"]) if "timestamp" in media else None
        except (TypeError, ValueError):
            ts = None
        now = time.time()
        self._last_frame_at = time.monotonic()
        if ts is not None and self._next_ts is not None and not self._inbuf:
            gap = ts - self._next_ts
            if gap >= audio.FRAME_MS:  # the carrier sent nothing during silence
                missing = min(
                    int(gap // audio.FRAME_MS), self.endpointer.config.end_silence_frames + 1
                )
                for _ in range(missing):
                    self._process(SILENT_FRAME, False, now)
        if ts is not None:
            self._next_ts = ts + audio.duration_ms(data)
        self._inbuf += data
        while len(self._inbuf) >= audio.FRAME_BYTES:
            chunk, self._inbuf = self._inbuf[: audio.FRAME_BYTES], self._inbuf[audio.FRAME_BYTES :]
            self._process(chunk, self.vad.is_speech(audio.ulaw_to_pcm16(chunk)), now)

    def _process(self, chunk: bytes, voiced: bool, at: float) -> None:
        for ev in self.endpointer.feed(chunk, voiced, at):
            self._on_endpoint(ev)
        if (
            self.endpointer.in_speech
            and not self._barged
            and self.endpointer.voiced_ms >= self.settings.barge_in_min_speech_ms
            and self.playback.active()
        ):
            self._barged = True
            self._barge_in(at)

    def _on_endpoint(self, ev: SpeechStart | Utterance | Discarded) -> None:
        if isinstance(ev, SpeechStart):
            self._barged = False
            self._utt_during_playback = self.playback.active()
            log.debug("speech onset", session_id=self.session_id, frame=ev.index)
        elif isinstance(ev, Discarded):
            self.gw.gm.blips.inc()
        else:
            self._publish_utterance(ev)

    def _publish_utterance(self, utt: Utterance) -> None:
        assert self.session_id is not None
        utterance_id = new_id("utt")
        timings = TurnTimings(speech_started=utt.speech_started_at, speech_end=utt.speech_end_at)
        meta = UtteranceMeta(
            session_id=self.session_id,
            utterance_id=utterance_id,
            call_sid=self.call_sid,
            index=self._utt_index,
            duration_ms=utt.duration_ms,
            during_playback=self._utt_during_playback or self._barged,
            timings=timings,
        )
        self._utt_index += 1
        self._utt_during_playback = False
        self._utt_timings[utterance_id] = timings
        while len(self._utt_timings) > _REMEMBERED_UTTERANCES:
            self._utt_timings.pop(next(iter(self._utt_timings)))
        self.gw.gm.utterances.inc()
        self.gw.gm.endpoint_delay.observe(max(0.0, utt.ended_at - utt.speech_end_at))
        turn_ctx = self._start_turn_span(utterance_id, utt, meta) if tracing.enabled() else None
        log.info(
            "utterance endpointed",
            session_id=self.session_id,
            utterance_id=utterance_id,
            duration_ms=round(utt.duration_ms),
            reason=utt.reason,
        )
        self._outbox.put_nowait(
            _Publish(
                subjects.utterance(self.session_id),
                utt.audio,
                None,
                utterance_id,
                meta=meta,
                trace_ctx=turn_ctx,
            )
        )

    def _start_turn_span(
        self, utterance_id: str, utt: Utterance, meta: UtteranceMeta
    ) -> tracing.Context | None:
        """The turn's span, open until the reply's first media frame; its endpointing
        child is complete already (both are timed by the frames' arrival)."""
        turn = tracing.start_span(
            "gateway.turn",
            context=self._call_ctx,
            start_time=utt.speech_started_at,
            session_id=self.session_id,
            utterance_id=utterance_id,
            index=meta.index,
            during_playback=meta.during_playback,
            audio_ms=round(utt.duration_ms, 1),
        )
        turn_ctx = tracing.context_with(turn)
        endpointing = tracing.start_span(
            "gateway.endpointing",
            context=turn_ctx,
            start_time=utt.speech_end_at,
            reason=utt.reason,
            hangover_ms=round(max(0.0, utt.ended_at - utt.speech_end_at) * 1000.0, 1),
        )
        tracing.end_span(endpointing, end_time=utt.ended_at)
        self._turn_spans[utterance_id] = turn
        while len(self._turn_spans) > _REMEMBERED_UTTERANCES:
            oldest = next(iter(self._turn_spans))
            tracing.end_span(self._turn_spans.pop(oldest), outcome="no_reply")
        return turn_ctx

    async def _watchdog(self) -> None:
        """End an utterance when the carrier stops sending frames mid-speech, and skip a
        sentence of the reply that never arrived."""
        limit = self.settings.end_silence_ms / 1000.0 + 0.2
        while True:
            await asyncio.sleep(0.1)
            if self.endpointer.in_speech and time.monotonic() - self._last_frame_at > limit:
                ev = self.endpointer.flush(time.time())
                if ev is not None:
                    self._on_endpoint(ev)
            skipped = self.playback.release_stalled(
                time.time(), self.settings.sentence_gap_timeout_s
            )
            if skipped:
                self.gw.gm.playback_drops.labels("missing").inc(len(skipped))
                log.warning(
                    "sentences never arrived; skipped", session_id=self.session_id, seqs=skipped
                )

    # ----------------------------------------------------------------- barge-in

    def _barge_in(self, at: float) -> None:
        assert self.session_id is not None
        results = self.playback.barge_in(at)
        self.gw.gm.barge_ins.inc()
        if self._call_span.is_recording():
            self._call_span.add_event(
                "barge_in", {"turn_ids": [r.turn_id for r in results]}, tracing.ns(at)
            )
        self._spawn("clear", self._send_json({"event": "clear", "streamSid": self.stream_sid}))
        for r in results:
            log.info(
                "barge-in",
                session_id=self.session_id,
                turn_id=r.turn_id,
                heard_seqs=r.heard_seqs,
            )
            # Straight onto the core lane, not through the outbox, where it would wait
            # behind JetStream utterance publishes. The task is created now, so it writes
            # before the outbox publisher gets to the utterance that caused the barge-in.
            self._spawn(
                "barge_in",
                self._publish_barge_in(
                    BargeIn(
                        session_id=self.session_id,
                        turn_id=r.turn_id,
                        heard_text=r.heard_text,
                        heard_seqs=r.heard_seqs,
                    )
                ),
            )

    async def _publish_barge_in(self, message: BargeIn) -> None:
        try:
            with tracing.attached(self._call_ctx):
                await self.gw.bus.publish(subjects.control(message.session_id), message)
        except Exception:
            log.exception(
                "barge-in not published", session_id=message.session_id, turn_id=message.turn_id
            )

    # ----------------------------------------------------------------- keys

    async def _on_dtmf(self, dtmf: dict[str, Any]) -> None:
        digit = _str(dtmf.get("digit"), "dtmf.digit")
        if self.session_id is None:
            raise BadFrame("dtmf_before_start")
        try:
            message = Dtmf(session_id=self.session_id, digit=digit)
        except ValidationError:
            raise BadFrame("bad_dtmf_digit") from None
        # The digit itself is not logged: callers key in card and account numbers.
        log.info("dtmf received", session_id=self.session_id)
        with tracing.attached(self._call_ctx):
            await self.gw.bus.publish(subjects.control(self.session_id), message)

    # ----------------------------------------------------------------- marks

    def _on_mark(self, frame: dict[str, Any]) -> None:
        mark = _obj(frame, "mark")
        name = _str(mark.get("name"), "mark.name")
        heard = self.playback.mark_echoed(name, time.time())
        log.debug("mark echoed", session_id=self.session_id, mark=name, heard=heard)
        if heard:
            self._turn_played(name.rpartition(":")[0])

    def _turn_played(self, turn_id: str) -> None:
        """Publish ``TurnPlayed`` once a turn has been heard to its end (its last mark came
        back, or its closing message arrived after that); the escalation service waits for
        it before moving the caller. A barged-in turn is never reported played."""
        turn = self.playback.turns.get(turn_id)
        if (
            self.session_id is None
            or turn is None
            or turn.cancelled
            or not turn.done
            or turn_id in self._played
        ):
            return
        self._played[turn_id] = None
        while len(self._played) > 64:
            self._played.pop(next(iter(self._played)))
        self._spawn(
            "turn_played",
            self._publish_control(TurnPlayed(session_id=self.session_id, turn_id=turn_id)),
        )

    async def _publish_control(self, message: TurnPlayed) -> None:
        try:
            with tracing.attached(self._call_ctx):
                await self.gw.bus.publish(subjects.control(message.session_id), message)
        except Exception:
            log.exception("control message not published", session_id=message.session_id)

    # ----------------------------------------------------------------- playback

    async def _on_audio(self, msg: Msg) -> None:
        try:
            meta = from_header(AudioMeta, msg.headers)
        except (ValueError, ValidationError):
            log.warning("audio message without valid metadata", session_id=self.session_id)
            self.gw.gm.playback_drops.labels("bad_meta").inc()
            return
        if meta.session_id != self.session_id:
            self.gw.gm.playback_drops.labels("wrong_session").inc()
            return
        offered = self.playback.offer(
            meta, msg_payload(msg), time.time(), tracing.current_context()
        )
        for drop in offered:
            self.gw.gm.playback_drops.labels(drop.reason).inc()
        self._turn_played(meta.turn_id)  # a closing message after the last mark came back

    async def _sender(self) -> None:
        per_chunk = self.settings.playback_frames_per_chunk
        while True:
            sentence = await self.playback.queue.get()
            try:
                await self._send_sentence(sentence, per_chunk)
            except Exception:
                # One bad sentence (e.g. its turn was forgotten meanwhile) is skipped; the
                # sender goes on with the next one.
                self.gw.gm.playback_drops.labels("send_error").inc()
                log.exception(
                    "sentence not sent; skipped",
                    session_id=self.session_id,
                    turn_id=sentence.turn_id,
                    seq=sentence.seq,
                )
            finally:
                self.playback.finished_sending(sentence)

    async def _send_sentence(self, sentence: Sentence, per_chunk: int) -> None:
        with tracing.span(
            "gateway.playback",
            context=sentence.trace_ctx or self._call_ctx,
            session_id=self.session_id,
            turn_id=sentence.turn_id,
            seq=sentence.seq,
            audio_ms=sentence.duration_ms,
        ) as sp:
            sent = await self._send_chunks(sentence, per_chunk)
            if sp.is_recording():
                sp.set_attribute("outcome", "played" if sent else "cancelled")

    async def _send_chunks(self, sentence: Sentence, per_chunk: int) -> bool:
        """Media then a mark; False when the sentence stopped being playable meanwhile."""
        for chunk in audio.chunks(sentence.audio, per_chunk):
            async with self._send_lock:
                if not self.playback.playable(sentence):
                    self.gw.gm.playback_drops.labels("cancelled").inc()
                    return False
                await self._send_raw(
                    {
                        "event": "media",
                        "streamSid": self.stream_sid,
                        "media": {"payload": base64.b64encode(chunk).decode()},
                    }
                )
                if self.playback.sent_chunk(sentence, time.time()):
                    self._first_media(sentence)
        async with self._send_lock:
            if not self.playback.playable(sentence):
                return False
            await self._send_raw(
                {
                    "event": "mark",
                    "streamSid": self.stream_sid,
                    "mark": {"name": sentence.mark_name},
                }
            )
            self.playback.sent_mark(sentence)
        return True

    def _first_media(self, sentence: Sentence) -> None:
        assert self.session_id is not None
        turn = self.playback.turns[sentence.turn_id]
        timings = (turn.timings or sentence.meta.timings).model_copy()
        utterance_id = turn.utterance_id or sentence.meta.utterance_id
        ours = self._utt_timings.get(utterance_id) if utterance_id else None
        if ours is not None:
            for name in ("speech_started", "speech_end", "utterance_published"):
                if getattr(timings, name) is None:
                    setattr(timings, name, getattr(ours, name))
        timings.first_media = turn.first_media_at
        stages = timings.stages_ms()
        for stage, ms in stages.items():
            self.gw.gm.stage_latency.labels(stage).observe(ms / 1000.0)
        turn_span = self._turn_spans.pop(utterance_id, None) if utterance_id else None
        if turn_span is not None:
            tracing.end_span(
                turn_span,
                end_time=turn.first_media_at,
                turn_id=sentence.turn_id,
                outcome="answered",
                **{f"latency_ms.{stage}": ms for stage, ms in stages.items()},
            )
        log.info(
            "first media of turn", session_id=self.session_id, turn_id=sentence.turn_id, **stages
        )
        self._emit(
            subjects.events(self.session_id),
            LatencyEvent(
                session_id=self.session_id,
                turn_id=sentence.turn_id,
                utterance_id=utterance_id,
                timings=timings,
                stages_ms=stages,
            ),
        )

    async def _send_json(self, body: dict[str, Any]) -> None:
        async with self._send_lock:
            await self._send_raw(body)

    async def _send_raw(self, body: dict[str, Any]) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.ws.send_text(json.dumps(body, separators=(",", ":")))

    # ----------------------------------------------------------------- control

    async def _on_control(self, msg: Msg) -> None:
        try:
            ctl = parse_control(msg.data)
        except ValidationError:
            log.warning("unknown control message", session_id=self.session_id)
            return
        if (
            isinstance(ctl, HangupRequest)
            and ctl.session_id == self.session_id
            and self._hangup is None
        ):
            log.info("hang-up requested", session_id=self.session_id, after_turn=ctl.after_turn)
            self._hangup = self._spawn("hangup", self._hangup_after(ctl))

    async def _hangup_after(self, req: HangupRequest) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hangup_timeout_s
        while not self.playback.turn_done(req.after_turn):
            self.playback.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("hang-up: turn not heard in time", session_id=self.session_id)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.playback.changed.wait(), min(remaining, 1.0))
        self._close_reason = f"hangup:{req.reason}" if req.reason else "hangup"
        async with self._send_lock:
            with contextlib.suppress(Exception):
                await self.ws.close(code=1000)

    # ----------------------------------------------------------------- bus out

    def _emit(self, subject: str, event: Wire) -> None:
        self._outbox.put_nowait(_Publish(subject, event, trace_ctx=self._call_ctx))

    async def _publisher(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                await self._publish(item)
            except Exception:
                log.exception("publish failed", subject=item.subject)
            finally:
                self._outbox.task_done()

    async def _publish(self, item: _Publish) -> None:
        headers = item.headers
        if item.meta is not None:
            item.meta.timings.utterance_published = time.time()
            headers = item.meta.header()
        with tracing.attached(item.trace_ctx):
            if item.durable:
                await self.gw.bus.publish_durable(item.subject, item.data, headers, item.msg_id)
            else:
                await self.gw.bus.publish(item.subject, item.data, headers)

    # ----------------------------------------------------------------- end

    async def close(self, code: int = 1001) -> None:
        """Close the socket from our side (drain deadline)."""
        self._close_reason = self._close_reason or "gateway_shutdown"
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)

    async def _finish(self, reason: str) -> None:
        self._finishing = True
        try:
            if self.session_id is None:
                return
            sid = self.session_id
            for sub in self._subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            self._subs.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), _TASK_DEADLINE_S)
            await self._cancel_tasks()
            self.gw.gm.active_streams.dec()
            log.info("media stream ended", session_id=sid, reason=reason)
            handoff = await self._is_handoff(reason)
            stopped_reason = "handoff" if handoff else "stop" if reason == "stop" else "disconnect"
            try:
                with tracing.attached(self._call_ctx):
                    await self.gw.bus.publish(
                        subjects.control(sid),
                        StreamStopped(
                            session_id=sid,
                            call_sid=self.call_sid,
                            stream_sid=self.stream_sid,
                            reason=stopped_reason,
                        ),
                    )
                    if not handoff:  # moved to the conference: the call goes on
                        await asyncio.wait_for(
                            self.gw.bus.publish_durable(
                                subjects.events(sid), CallEndedEvent(session_id=sid, reason=reason)
                            ),
                            5.0,
                        )
            except Exception:
                log.exception("could not publish the end of the stream", session_id=sid)
            self.gw.unregister(self)
        finally:
            await self._cancel_tasks()
            self._end_trace(reason)
            self.done.set()

    async def _is_handoff(self, reason: str) -> bool:
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
            log.info("media stream handed off to the conference", session_id=self.session_id)
        return handoff

    def _end_trace(self, reason: str) -> None:
        """End the call's span and the turns never answered (idempotent)."""
        for turn in self._turn_spans.values():
            tracing.end_span(turn, outcome="call_ended")
        self._turn_spans.clear()
        tracing.end_span(self._call_span, reason=reason)
        self._call_span = tracing.INVALID_SPAN


def _obj(frame: dict[str, Any], key: str) -> dict[str, Any]:
    value = frame.get(key)
    if not isinstance(value, dict):
        raise BadFrame(f"missing_{key}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadFrame(f"missing_{what}")
    return value
