"""One simulated inbound call: the caller's side of Twilio's bidirectional Media Streams.

A :class:`Call` opens a stream (``connected`` then ``start``), keeps the caller's line
running (:class:`~dealerline_sim.caller_line.CallerLine`), plays what the server sends
(:class:`~dealerline_sim.playout.Playout`) and records every message both ways. With a
:class:`CallHost` (``TwilioSim``'s call leg) the call outlives its stream: the host may end
a stream (``stop``) and open a new one, and learns when streams start and end and when the
caller hangs up. Without one, the server closing the socket ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from dealerline_sim import media_stream as wire
from dealerline_sim.call_records import (
    ClearRecord,
    HeardSegment,
    MarkEcho,
    SaidUtterance,
    StreamEndReason,
    StreamRecord,
    TalkOverRecord,
)
from dealerline_sim.caller_line import CallerLine, SilenceMode
from dealerline_sim.caller_speech import has_pauses, spoken_text, synthesize_line
from dealerline_sim.playout import Playout
from dealerline_sim.sids import new_sid
from dealerline_sim.stream_socket import StreamSocket, StreamTasks
from dealerline_sim.twiml import SimulatorError, StreamInstruction
from dealerline_sim.voice import Transcriber, synthesize_ulaw

__all__ = ["Call", "CallHost", "CallPlacer"]


class CallPlacer(Protocol):
    """What a call needs from the simulator that placed it (``PhoneSimulator``)."""

    account_sid: str
    pace: float
    caller_voice: str
    sign_stream_handshake: bool

    def sign(self, url_or_path: str, params: Mapping[str, str] | None = None) -> str: ...

    def signature_headers(
        self, url_or_path: str, params: Mapping[str, str] | None = None
    ) -> dict[str, str]: ...

    def local_ws_url(self, public_ws_url: str) -> str: ...

    async def prepare(self, *texts: str, voice: str | None = None) -> None: ...


class CallHost(Protocol):
    """What owns a call's life beyond its Media Stream (``TwilioSim``'s call leg)."""

    def stream_started(self, call: Call, stream: StreamRecord) -> None: ...

    def stream_ended(self, call: Call, stream: StreamRecord) -> None: ...

    def spoke_without_stream(self, call: Call, text: str | None) -> None: ...

    async def caller_hung_up(self, call: Call) -> None: ...


class Call:
    """One live call: the caller's side of a Twilio bidirectional Media Stream."""

    def __init__(
        self,
        sim: CallPlacer,
        *,
        call_sid: str,
        from_number: str,
        to_number: str,
        instruction: StreamInstruction,
        silence: SilenceMode,
    ) -> None:
        self.sim = sim
        self.pace = sim.pace
        self.call_sid = call_sid
        self.account_sid = sim.account_sid
        self.stream_sid = new_sid("MZ")
        self.from_number = from_number
        self.to_number = to_number
        self.instruction = instruction
        self.custom_parameters: dict[str, str] = dict(instruction.parameters)
        self.stream_url = instruction.url
        self.local_stream_url = sim.local_ws_url(instruction.url)
        self.webhook_params: dict[str, str] = {}  # the incoming-call webhook, as sent
        self.webhook_url = ""
        self.streams: list[StreamRecord] = []
        self.host: CallHost | None = None
        self.in_conference: str | None = None  # the room name while a host has it in one
        # what we sent / received
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.protocol_errors: list[str] = []
        self.warnings: list[str] = []
        self.dropped_on_close_bytes = 0
        # what the caller said (the line) and heard (the playout)
        self.said: list[SaidUtterance] = []
        self.dtmf_sent: list[str] = []
        self.talk_overs: list[TalkOverRecord] = []  # the caller talked over the agent
        self.line = CallerLine(silence)
        self.playout = Playout(self.pace, self._send_mark, self.warnings.append)
        # the playout fills these; the call shows the same objects
        self.heard_audio: bytearray = self.playout.heard_audio
        self.heard_segments: list[HeardSegment] = self.playout.heard_segments
        self.clears: list[ClearRecord] = self.playout.clears
        self.mark_echoes: list[MarkEcho] = self.playout.mark_echoes
        self.outbound_media_sizes: list[int] = self.playout.outbound_media_sizes
        # lifecycle
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.closed = asyncio.Event()
        self.closed_by_server = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.stop_sent = False

        self._socket: StreamSocket | None = None
        self._hanging_up = False
        self._ending_stream: StreamEndReason | None = None
        self._tasks = StreamTasks()

    # -- what the caller heard and said ---------------------------------------------------

    @property
    def speech_ended_at(self) -> float | None:
        """Wall time the caller's last voiced frame went out."""
        return self.line.speech_ended_at

    @property
    def silence(self) -> SilenceMode:
        return self.line.silence

    @silence.setter
    def silence(self, mode: SilenceMode) -> None:
        self.line.silence = mode

    @property
    def first_media_received_at(self) -> float | None:
        """Wall time of the first outbound media of the whole call."""
        times = [s.first_received_at for s in self.heard_segments if s.first_received_at]
        return min(times) if times else None

    @property
    def pending_audio_bytes(self) -> int:
        """Outbound audio received but not played yet."""
        return self.playout.pending_bytes

    def heard_on_stream(self, n: int) -> bytes:
        """Everything played to the caller on the ``n``-th stream (1-based)."""
        return self.streams[n - 1].heard_audio

    async def transcribe_stream(self, n: int, transcriber: Transcriber) -> str:
        audio = self.heard_on_stream(n)
        return await transcriber.transcribe_ulaw(audio) if audio else ""

    async def transcribe_heard(self, transcriber: Transcriber) -> list[HeardSegment]:
        """Fill ``text`` of every heard segment (empty string for silence)."""
        for seg in self.heard_segments:
            seg.text = await transcriber.transcribe_ulaw(bytes(seg.audio)) if seg.audio else ""
        return self.heard_segments

    # -- the call and its streams ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    @property
    def current_stream(self) -> StreamRecord | None:
        """The Media Stream open now (None in a conference, between streams, or ended)."""
        if self.streams and self.streams[-1].is_open and self._socket is not None:
            return self.streams[-1]
        return None

    async def wait_for_stream(self, n: int, timeout_s: float = 10.0) -> StreamRecord:
        """Wait until the ``n``-th stream (1-based) has started; returns its record."""
        if n < 1:
            raise ValueError("streams are counted from 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if len(self.streams) >= n and self.streams[n - 1].ready:
                return self.streams[n - 1]
            if self.closed.is_set():
                raise SimulatorError(f"the call ended with {len(self.streams)} stream(s), not {n}")
            if loop.time() >= deadline:
                raise TimeoutError(f"stream {n} did not start within {timeout_s}s")
            await asyncio.sleep(0.005)

    async def wait_closed(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout_s)

    async def wait_until_quiet(
        self, quiet_s: float = 1.0, timeout_s: float = 30.0, *, min_bytes: int = 1
    ) -> None:
        """Wait until the agent has said something since the last :meth:`say` returned
        (or since the call started), all of it has played, and nothing new has arrived
        for ``quiet_s`` simulated seconds. Raises ``TimeoutError`` after ``timeout_s``
        wall seconds, :class:`SimulatorError` if the call ends before the agent spoke."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        poll = max(0.002, min(0.02, quiet_s / self.pace / 4))
        playout = self.playout
        while True:
            now = loop.time()
            if (
                playout.reply_bytes >= min_bytes
                and playout.idle
                and (now - playout.last_activity) * self.pace >= quiet_s
            ):
                return
            if self.closed.is_set() or self.current_stream is None:
                if playout.reply_bytes >= min_bytes:
                    return
                raise SimulatorError("the stream ended before the agent said anything")
            if now >= deadline:
                raise TimeoutError(
                    f"agent not quiet within {timeout_s}s "
                    f"(reply bytes {playout.reply_bytes}, pending {self.pending_audio_bytes})"
                )
            await asyncio.sleep(poll)

    async def wait_for_mark_echo(self, name: str, timeout_s: float = 10.0) -> MarkEcho:
        return await self.playout.wait_for_mark_echo(name, timeout_s)

    # -- the caller -----------------------------------------------------------------------

    async def say(self, text: str, *, voice: str | None = None) -> SaidUtterance:
        """Speak ``text`` in the caller's Kokoro voice; returns after the last frame.

        ``text`` may hold pause marks (``"five five five <pause 800> one two three"``,
        :mod:`dealerline_sim.caller_speech`): the silence between the chunks is sent too,
        and the record's ``text`` is the words alone. With no stream open but a host (the
        call is in a conference), the words are recorded on the host's timeline instead
        (kind ``speech``) and nothing is sent."""
        if self.is_open and self.current_stream is None and self.host is not None:
            return self._speak_without_stream(spoken_text(text), 0)
        voice = voice or self.sim.caller_voice
        if has_pauses(text):
            line = await synthesize_line(text, voice)
            return await self.say_audio(line.audio, text=line.text)
        ulaw = await synthesize_ulaw(text, voice)
        return await self.say_audio(ulaw, text=text)

    def _speak_without_stream(self, text: str | None, size: int) -> SaidUtterance:
        now = time.time()
        record = SaidUtterance(text, size, started_at=now, speech_ended_at=now, finished_at=now)
        self.said.append(record)
        assert self.host is not None
        self.host.spoke_without_stream(self, text)
        return record

    async def say_audio(self, mulaw: bytes, *, text: str | None = None) -> SaidUtterance:
        """Send raw 8 kHz mu-law as the caller's voice (20 ms frames, the last padded)."""
        if not self.is_open:
            raise SimulatorError("the call has ended")
        if self.current_stream is None:
            if self.host is not None:
                return self._speak_without_stream(text, len(mulaw))
            raise SimulatorError("no media stream is open")
        record = SaidUtterance(text=text, audio_bytes=len(mulaw))
        self.said.append(record)
        if not mulaw:
            return record
        await self.line.speak(record, bytes(mulaw))
        # what the agent says from now on is the reply to this
        self.playout.reply_bytes = 0
        return record

    async def send_dtmf(self, digit: str) -> None:
        """The caller presses a key (``dtmf`` event, track ``inbound_track``)."""
        if digit not in wire.DTMF_DIGITS or len(digit) != 1:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        ok = await self._send(lambda seq: wire.dtmf_message(seq, self.stream_sid, digit))
        if not ok:
            raise SimulatorError(
                "the call has ended" if self.closed.is_set() else "no media stream is open"
            )
        self.dtmf_sent.append(digit)

    async def hangup(self) -> None:
        """The caller hangs up: ``stop`` then the socket closes (if a stream is open), and
        the host learns the call has ended (a conference it was in may end). Idempotent."""
        if self._hanging_up:
            await self._tasks.join_receiver()
            return
        self._hanging_up = True
        was_open = not self.closed.is_set()
        if self.current_stream is not None:
            await self._tasks.stop_workers()
            self.stop_sent = await self._send_stop()
            await self._close_ws()
            await self._tasks.join_receiver()
            self._finish_stream("caller-hangup")
        self._mark_closed()
        if self.host is not None and was_open:
            await self.host.caller_hung_up(self)

    async def __aenter__(self) -> Call:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.hangup()

    # -- what the host (TwilioSim) does to the call ----------------------------------------

    async def open_stream(self, instruction: StreamInstruction) -> StreamRecord:
        """Open a new Media Stream for ``<Connect><Stream>`` after a redirect; returns once
        ``connected`` and ``start`` (with the new ``customParameters``) have been sent."""
        if self.closed.is_set():
            raise SimulatorError("the call has ended")
        if self.current_stream is not None:
            raise SimulatorError("one bidirectional stream per call: the current one is open")
        self.instruction = instruction
        self.custom_parameters = dict(instruction.parameters)
        self.stream_url = instruction.url
        self.local_stream_url = self.sim.local_ws_url(instruction.url)
        self.stream_sid = new_sid("MZ")
        self._ending_stream = None
        self.playout.reply_bytes = 0
        self.stop_sent = False
        self.closed_by_server = False
        await self._open()
        return self.streams[-1]

    async def end_stream(self, reason: StreamEndReason, *, send_stop: bool = True) -> None:
        """Twilio ends the stream (REST redirect or hang-up): ``stop``, then the socket
        closes. The call itself stays open unless the host ends it."""
        stream = self.current_stream
        if stream is None:
            return
        self._ending_stream = reason
        await self._tasks.stop_workers()
        if send_stop:
            self.stop_sent = await self._send_stop()
        await self._close_ws()
        await self._tasks.join_receiver()
        self._finish_stream(reason)

    def end_call(self) -> None:
        """The host ended the call (after :meth:`end_stream` if one was open)."""
        self._mark_closed()

    # -- the stream's life ----------------------------------------------------------------

    async def _open(self) -> None:
        record = StreamRecord(
            index=len(self.streams) + 1,
            stream_sid=self.stream_sid,
            url=self.stream_url,
            local_url=self.local_stream_url,
            parameters=dict(self.custom_parameters),
        )
        self.streams.append(record)
        self.playout.stream = record
        self._socket = await self._connect()
        loop = asyncio.get_running_loop()
        record.started_at = time.time()
        if self.started_at is None:
            self.started_at = record.started_at
        self.playout.last_activity = loop.time()
        await self._socket.send_raw(wire.connected_message())
        await self._send(self._start_message)
        t0 = loop.time()
        self._tasks.start(
            self._receiver(),
            self.playout.run(),
            self.line.send_frames(t0, self.pace, self._send_media),
        )
        record.ready = True
        if self.host is not None:
            self.host.stream_started(self, record)

    async def _connect(self) -> StreamSocket:
        """The WebSocket handshake (signed like Twilio's); a failure ends the stream
        (``open-failed``) and, without a host, the call (Twilio error 31920)."""
        sim = self.sim
        signed = sim.signature_headers(self.stream_url, {}) if sim.sign_stream_handshake else {}
        try:
            return await StreamSocket.connect(self.local_stream_url, signed, self.sent)
        except Exception as exc:
            self._socket = None
            self._finish_stream("open-failed")
            if self.host is None:
                self._mark_closed()
            raise SimulatorError(
                f"could not open the Media Stream at {self.local_stream_url} "
                f"(public {self.stream_url}): {exc!r} — Twilio error 31920"
            ) from exc

    def _finish_stream(self, reason: StreamEndReason) -> None:
        """The current stream is over: drop what was not played, fail pending speech."""
        self.dropped_on_close_bytes += self.playout.drop_pending()
        self.line.fail_pending("the stream ended while the caller spoke")
        if not self.streams:
            return
        record = self.streams[-1]
        if record.closed.is_set():
            return
        record.ended_at = time.time()
        record.end_reason = reason
        record.stop_sent = self.stop_sent
        record.closed_by_server = self.closed_by_server
        record.close_code = self.close_code
        record.close_reason = self.close_reason
        record.closed.set()
        if self.host is not None:
            self.host.stream_ended(self, record)

    def _mark_closed(self) -> None:
        if self.closed.is_set():
            return
        if self.streams and not self.streams[-1].closed.is_set():
            self._finish_stream(self._ending_stream or "caller-hangup")
        else:
            self._finish_stream("caller-hangup")  # drops leftovers; the record is final
        self.ended_at = time.time()
        self.closed.set()

    async def _close_ws(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()

    # -- caller → server ------------------------------------------------------------------

    async def _send(self, build: Callable[[str], dict[str, Any]]) -> bool:
        """Send a sequenced message on the open stream; False when there is none."""
        if self._socket is None or self.current_stream is None:
            return False
        return await self._socket.send(build)

    def _start_message(self, seq: str) -> dict[str, Any]:
        return wire.start_message(
            seq,
            account_sid=self.account_sid,
            stream_sid=self.stream_sid,
            call_sid=self.call_sid,
            parameters=self.custom_parameters,
        )

    async def _send_media(self, chunk: str, timestamp: str, payload: str) -> bool:
        return await self._send(
            lambda seq: wire.media_message(seq, self.stream_sid, chunk, timestamp, payload)
        )

    async def _send_mark(self, name: str) -> bool:
        return await self._send(lambda seq: wire.mark_message(seq, self.stream_sid, name))

    async def _send_stop(self) -> bool:
        return await self._send(
            lambda seq: wire.stop_message(seq, self.stream_sid, self.account_sid, self.call_sid)
        )

    # -- server → caller ------------------------------------------------------------------

    async def _receiver(self) -> None:
        socket = self._socket
        assert socket is not None
        try:
            async for raw in socket.ws:
                await self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            ending = self._hanging_up or self._ending_stream is not None
            self.close_code = socket.close_code
            self.close_reason = socket.close_reason
            if not ending:
                self.closed_by_server = True
                await self._tasks.stop_workers()
                self._finish_stream("server-closed")
                if self.host is None:
                    self._mark_closed()

    async def _handle(self, raw: str | bytes) -> None:
        try:
            msg = wire.parse_frame(raw)
        except wire.ProtocolViolation as exc:
            self.protocol_errors.append(wire.protocol_error(str(exc), raw))
            return
        self.received.append(msg)
        try:
            event = wire.parse_event(msg, self.stream_sid)
        except wire.ProtocolViolation as exc:
            self.protocol_errors.append(wire.protocol_error(str(exc), raw))
            return
        if isinstance(event, wire.Media):
            self.playout.on_media(event.data)
        elif isinstance(event, wire.Mark):
            await self.playout.on_mark(event.name)
        else:
            await self.playout.on_clear()
