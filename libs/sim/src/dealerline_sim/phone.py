"""Twilio's side of an inbound phone call, for tests and the offline demo.

The simulator behaves as ``/work/shared/TWILIO.md`` describes real Twilio:

- the incoming-call webhook is a signed, form-encoded POST with Twilio's parameters;
- the TwiML answer must be ``<Response><Connect><Stream url="wss://…">`` (443, no query);
- the bidirectional Media Stream sends ``connected``, ``start`` (sequenceNumber "1"), then
  ``media`` frames of 160 mu-law bytes every 20 ms (``pace`` times faster in simulated
  time), ``dtmf`` and finally ``stop``; every message after ``start`` carries the next
  sequenceNumber;
- what the server sends back (``media``/``mark``/``clear``) is played out on a real-time
  clock: a mark is echoed only once the audio queued before it has played, ``clear``
  drops unplayed audio and echoes every pending mark at once; anything else is recorded
  in ``Call.protocol_errors`` (Twilio error 31924).

Typical use::

    async with PhoneSimulator("http://127.0.0.1:8080", "https://dealer.example.com",
                              auth_token, pace=4.0) as sim:
        async with await sim.place_call("+14155550100", "+14155550199") as call:
            await call.wait_until_quiet(quiet_s=1.0, timeout_s=60)   # the greeting
            await call.say("I'd like to book an oil change.")
            await call.wait_until_quiet(quiet_s=1.0, timeout_s=60)   # the reply
        await call.transcribe_heard(Transcriber())

With Twilio's REST side (``dealerline_sim.twilio_rest.TwilioSim``) a call lives on after its
first stream: ``TwilioSim.phone(...)`` (or ``TwilioSim.attach``) makes the simulator hand
every placed call to it, so the application can redirect the call (``calls(sid).update(url=…)``:
the stream gets ``stop`` and closes, the new TwiML runs — a ``<Dial><Conference>`` or a new
``<Connect><Stream>``), hang it up, or find it in a conference. The same :class:`Call` keeps
working across streams: ``call.streams`` lists them (:class:`StreamRecord`, each with its
own heard segments), ``await call.wait_for_stream(2)`` waits for the second one,
``call.say`` always speaks into the current one, and ``call.closed`` is set only when the
*call* ends. Without a host, the server closing the socket ends the call, as before.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dealerline_common.audio import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    ULAW_SILENCE,
    frames,
    pcm16_to_ulaw,
    rms,
    ulaw_to_pcm16,
)
from dealerline_sim.twiml import (
    SimulatorError,
    StreamInstruction,
    TwimlError,
    parse_connect_stream,
)
from dealerline_sim.voice import Transcriber, synthesize_ulaw

__all__ = [
    "Call",
    "CallHost",
    "CallerScript",
    "ClearRecord",
    "HeardSegment",
    "MarkEcho",
    "PhoneSimulator",
    "SaidUtterance",
    "SilenceMode",
    "SimulatorError",
    "StreamInstruction",
    "StreamRecord",
    "Transcriber",
    "Turn",
    "TwimlError",
    "WebhookError",
    "join_heard",
    "new_sid",
    "run_script",
]

SilenceMode = Literal["digital", "comfort_noise", "none"]
"""What the caller's line carries when the caller says nothing: mu-law 0xFF frames,
low-level noise (RMS ~ 20, far under any VAD threshold), or no frames at all (some
carriers send none during silence, so media timestamps jump)."""

VOICED_RMS = 300.0  # a frame louder than this counts as speech for speech_ended_at
MAX_BUFFERED_BYTES = 10 * 60 * SAMPLE_RATE  # Twilio drops audio beyond 10 minutes buffered
DTMF_DIGITS = set("0123456789*#")
TWILIO_USER_AGENT = "TwilioProxy/1.1"
TWILIO_WS_USER_AGENT = "Twilio.TmeWs/1.0"
FORGED_TOKEN = "0" * 32


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


class WebhookError(SimulatorError):
    """The webhook did not answer 200 with TwiML (Twilio error 11200 and the like)."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(f"{message}: HTTP {response.status_code} {response.text[:500]!r}")
        self.response = response


@dataclass
class HeardSegment:
    """Outbound (agent → caller) audio grouped by the mark that follows it.

    ``audio`` holds only what was actually played to the caller; audio dropped by a
    ``clear`` is counted in ``dropped_bytes``. ``mark_name`` is None for audio that no
    mark has followed (yet, or before a clear). Times are wall clock (``time.time()``).
    """

    mark_name: str | None = None
    audio: bytearray = field(default_factory=bytearray)
    first_played_at: float | None = None
    last_played_at: float | None = None
    cleared: bool = False
    received_bytes: int = 0
    dropped_bytes: int = 0
    first_received_at: float | None = None
    mark_received_at: float | None = None
    mark_echoed_at: float | None = None
    text: str | None = None
    stream_sid: str | None = None

    @property
    def heard_ms(self) -> float:
        return len(self.audio) * 1000.0 / SAMPLE_RATE


StreamEndReason = Literal["caller-hangup", "server-closed", "redirect", "api-hangup", "open-failed"]


@dataclass(eq=False)
class StreamRecord:
    """One Media Stream of a call. A call redirected back to ``<Connect><Stream>`` gets a
    new one (new ``streamSid``, its own ``customParameters``, counters from 1 again).

    ``end_reason``: ``caller-hangup`` (the test hung up), ``server-closed`` (the gateway
    closed the socket), ``redirect`` (a REST redirect: ``stop`` was sent), ``api-hangup``
    (REST ``Status=completed``: ``stop`` was sent), ``open-failed`` (no WebSocket).
    """

    index: int  # 1-based: call.streams[index - 1]
    stream_sid: str
    url: str
    local_url: str
    parameters: dict[str, str]
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: StreamEndReason | None = None
    stop_sent: bool = False
    closed_by_server: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    segments: list[HeardSegment] = field(default_factory=list)
    ready: bool = False  # ``connected`` and ``start`` sent, media flowing
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def heard_audio(self) -> bytes:
        return b"".join(bytes(s.audio) for s in self.segments)

    @property
    def is_open(self) -> bool:
        return self.started_at is not None and not self.closed.is_set()


class CallHost(Protocol):
    """What owns a call's life beyond its Media Stream (``TwilioSim``'s call leg)."""

    def stream_started(self, call: Call, stream: StreamRecord) -> None: ...

    def stream_ended(self, call: Call, stream: StreamRecord) -> None: ...

    def spoke_without_stream(self, call: Call, text: str | None) -> None: ...

    async def caller_hung_up(self, call: Call) -> None: ...


@dataclass
class SaidUtterance:
    """Something the caller said: wall times of its first/last voiced frame sent."""

    text: str | None
    audio_bytes: int
    started_at: float | None = None
    speech_ended_at: float | None = None
    finished_at: float | None = None


@dataclass
class ClearRecord:
    at: float
    dropped_bytes: int
    echoed_marks: list[str]


@dataclass
class MarkEcho:
    name: str
    echoed_at: float
    cleared: bool  # echoed because of a clear, not because its audio played
    heard_bytes: int  # len(call.heard_audio) when it was echoed


class _Audio:
    __slots__ = ("data", "offset", "seg")

    def __init__(self, seg: HeardSegment, data: bytes) -> None:
        self.seg = seg
        self.data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


class _Mark:
    __slots__ = ("seg",)

    def __init__(self, seg: HeardSegment) -> None:
        self.seg = seg


class _Inflight:
    __slots__ = ("chunk", "end", "seg", "start")

    def __init__(self, seg: HeardSegment, chunk: bytes, start: float, end: float) -> None:
        self.seg = seg
        self.chunk = chunk
        self.start = start
        self.end = end


class _Utterance:
    def __init__(
        self, record: SaidUtterance, frame_list: list[bytes], future: asyncio.Future[None]
    ) -> None:
        self.record = record
        self.frames = frame_list
        self.pos = 0
        self.future = future
        voiced = [i for i, f in enumerate(frame_list) if rms(ulaw_to_pcm16(f)) > VOICED_RMS]
        self.first_voiced = voiced[0] if voiced else 0
        self.last_voiced = voiced[-1] if voiced else len(frame_list) - 1


def _comfort_noise_frames(count: int = 50, level: float = 20.0) -> list[bytes]:
    rng = np.random.default_rng(1234)
    noise = rng.normal(0.0, level, count * FRAME_BYTES).astype(np.int16)
    data = pcm16_to_ulaw(noise)
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


_DIGITAL_SILENCE = bytes([ULAW_SILENCE]) * FRAME_BYTES


class PhoneSimulator:
    """Plays Twilio for a gateway listening at ``http_base`` whose public (signed) base
    URL is ``public_url``.

    ``pace`` > 1 runs simulated time faster than real time: caller frames go out every
    ``20 ms / pace`` and the playout clock plays outbound audio ``pace`` times faster.
    """

    def __init__(
        self,
        http_base: str,
        public_url: str,
        auth_token: str,
        *,
        account_sid: str | None = None,
        pace: float = 1.0,
        caller_voice: str = "jm_kumo",
        silence: SilenceMode = "digital",
        sign_stream_handshake: bool = True,
        forwarded_headers: bool = False,
        http_timeout_s: float = 30.0,
    ) -> None:
        if pace <= 0:
            raise ValueError("pace must be positive")
        self.http_base = http_base.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or new_sid("AC")
        self.pace = pace
        self.caller_voice = caller_voice
        self.silence: SilenceMode = silence
        self.sign_stream_handshake = sign_stream_handshake
        self.forwarded_headers = forwarded_headers
        self.validator = RequestValidator(auth_token)
        self.calls: list[Call] = []
        self._call_observers: list[Callable[[Call], None]] = []
        self._http = httpx.AsyncClient(
            base_url=self.http_base, timeout=http_timeout_s, trust_env=False
        )

    def add_call_observer(self, observer: Callable[[Call], None]) -> None:
        """``observer(call)`` runs for every placed call once its TwiML has been accepted,
        before its stream opens (``TwilioSim`` registers the call and becomes its host)."""
        self._call_observers.append(observer)

    # -- signing and webhooks ------------------------------------------------------------

    def public_url_for(self, path: str) -> str:
        """The URL Twilio would request (and sign) for ``path``."""
        if path.startswith(("http://", "https://", "ws://", "wss://")):
            return path
        return self.public_url + (path if path.startswith("/") else "/" + path)

    def sign(self, url_or_path: str, params: Mapping[str, str] | None = None) -> str:
        """``X-Twilio-Signature`` for a request to ``url_or_path`` with form ``params``."""
        return str(
            self.validator.compute_signature(self.public_url_for(url_or_path), dict(params or {}))
        )

    @staticmethod
    def forged_signature(url: str, params: Mapping[str, str] | None = None) -> str:
        """A well-formed signature made with the wrong auth token."""
        return str(RequestValidator(FORGED_TOKEN).compute_signature(url, dict(params or {})))

    def _local_path(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            prefix = urlsplit(self.public_url).path.rstrip("/")
            p = (
                parts.path[len(prefix) :]
                if prefix and parts.path.startswith(prefix)
                else parts.path
            )
            return p + (f"?{parts.query}" if parts.query else "")
        return path if path.startswith("/") else "/" + path

    async def post_webhook(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        forged: bool = False,
        unsigned: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A form-encoded POST signed as Twilio signs it (over ``public_url + path``).

        ``forged=True`` signs with a wrong token; ``unsigned=True`` sends no signature.
        ``path`` may also be a full public URL (as found in TwiML ``action`` attributes).
        """
        url = self.public_url_for(path)
        form = {k: str(v) for k, v in params.items()}
        hdrs: dict[str, str] = {
            "User-Agent": TWILIO_USER_AGENT,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        if self.forwarded_headers:
            pub = urlsplit(self.public_url)
            hdrs["X-Forwarded-Proto"] = pub.scheme
            hdrs["X-Forwarded-Host"] = pub.netloc
        if not unsigned:
            hdrs["X-Twilio-Signature"] = (
                self.forged_signature(url, form) if forged else self.sign(url, form)
            )
        hdrs.update(headers or {})
        return await self._http.post(self._local_path(path), data=form, headers=hdrs)

    def incoming_call_params(
        self, call_sid: str, from_number: str, to_number: str
    ) -> dict[str, str]:
        """The parameters of Twilio's incoming-call webhook."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": to_number,
            "CalledCity": "SAN FRANCISCO",
            "CalledCountry": "US",
            "CalledState": "CA",
            "CalledZip": "94105",
            "Caller": from_number,
            "CallerCity": "OAKLAND",
            "CallerCountry": "US",
            "CallerState": "CA",
            "CallerZip": "94612",
            "Direction": "inbound",
            "From": from_number,
            "FromCity": "OAKLAND",
            "FromCountry": "US",
            "FromState": "CA",
            "FromZip": "94612",
            "To": to_number,
            "ToCity": "SAN FRANCISCO",
            "ToCountry": "US",
            "ToState": "CA",
            "ToZip": "94105",
        }

    def local_ws_url(self, public_ws_url: str) -> str:
        """Map the public ``wss://`` stream URL from TwiML to where the gateway listens."""
        stream = urlsplit(public_ws_url)
        pub = urlsplit(self.public_url)
        if stream.hostname != pub.hostname:
            raise SimulatorError(
                f"<Stream url> host {stream.hostname!r} is not the public host "
                f"{pub.hostname!r} the gateway was configured with ({public_ws_url})"
            )
        local = urlsplit(self.http_base)
        scheme = "wss" if local.scheme == "https" else "ws"
        path = stream.path
        prefix = pub.path.rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        return urlunsplit((scheme, local.netloc, local.path.rstrip("/") + path, "", ""))

    # -- calls ----------------------------------------------------------------------------

    async def prepare(self, *texts: str, voice: str | None = None) -> None:
        """Synthesize caller lines ahead of time (cached), so ``say`` starts at once."""
        for text in texts:
            await synthesize_ulaw(text, voice or self.caller_voice)

    async def place_call(
        self,
        from_number: str,
        to_number: str,
        *,
        call_sid: str | None = None,
        path: str = "/api/voice/incoming",
        extra_params: Mapping[str, str] | None = None,
        forged: bool = False,
        silence: SilenceMode | None = None,
    ) -> Call:
        """Ring the gateway: signed incoming-call webhook, TwiML check, Media Stream.

        Returns once ``connected`` and ``start`` have been sent; the caller's line then
        carries silence frames until :meth:`Call.say`.
        """
        sid = call_sid or new_sid("CA")
        params = self.incoming_call_params(sid, from_number, to_number)
        params.update(extra_params or {})
        resp = await self.post_webhook(path, params, forged=forged)
        if resp.status_code != 200:
            raise WebhookError("incoming-call webhook failed (Twilio error 11200)", resp)
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("text/xml", "application/xml"):
            raise WebhookError(
                f"incoming-call webhook answered Content-Type {ctype!r}, not TwiML XML", resp
            )
        instruction = parse_connect_stream(resp.text)
        call = Call(
            self,
            call_sid=sid,
            from_number=from_number,
            to_number=to_number,
            instruction=instruction,
            silence=silence or self.silence,
        )
        call.webhook_params = params
        call.webhook_url = self.public_url_for(path)
        self.calls.append(call)
        for observer in self._call_observers:
            observer(call)
        await call._open()
        return call

    async def aclose(self) -> None:
        """Hang up every open call and close the HTTP client."""
        for call in self.calls:
            await call.hangup()
        await self._http.aclose()

    async def __aenter__(self) -> PhoneSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Call:
    """One live call: the caller's side of a Twilio bidirectional Media Stream."""

    def __init__(
        self,
        sim: PhoneSimulator,
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
        self.silence: SilenceMode = silence
        self.webhook_params: dict[str, str] = {}  # the incoming-call webhook, as sent
        self.webhook_url = ""
        self.streams: list[StreamRecord] = []
        self.host: CallHost | None = None
        self.in_conference: str | None = None  # the room name while a host has it in one
        # what we sent / received
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.outbound_media_sizes: list[int] = []
        self.protocol_errors: list[str] = []
        self.warnings: list[str] = []
        # what the caller heard
        self.heard_audio = bytearray()
        self.heard_segments: list[HeardSegment] = []
        self.clears: list[ClearRecord] = []
        self.mark_echoes: list[MarkEcho] = []
        self.dropped_on_close_bytes = 0
        # what the caller said
        self.said: list[SaidUtterance] = []
        self.speech_ended_at: float | None = None
        self.dtmf_sent: list[str] = []
        # lifecycle
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.closed = asyncio.Event()
        self.closed_by_server = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.stop_sent = False

        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._seq = itertools.count(1)
        self._speech: deque[_Utterance] = deque()
        self._queue: deque[_Audio | _Mark] = deque()
        self._queued_bytes = 0
        self._inflight: _Inflight | None = None
        self._open_segment: HeardSegment | None = None
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._reply_bytes = 0
        self._last_activity = 0.0
        self._noise = _comfort_noise_frames() if silence == "comfort_noise" else []
        self._noise_pos = 0
        self._hanging_up = False
        self._ending_stream: StreamEndReason | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self._playout_task: asyncio.Task[None] | None = None
        self._receiver_task: asyncio.Task[None] | None = None

    # -- public API -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    @property
    def current_stream(self) -> StreamRecord | None:
        """The Media Stream open now (None in a conference, between streams, or ended)."""
        if self.streams and self.streams[-1].is_open and self._ws is not None:
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

    def heard_on_stream(self, n: int) -> bytes:
        """Everything played to the caller on the ``n``-th stream (1-based)."""
        return self.streams[n - 1].heard_audio

    async def transcribe_stream(self, n: int, transcriber: Transcriber) -> str:
        audio = self.heard_on_stream(n)
        return await transcriber.transcribe_ulaw(audio) if audio else ""

    @property
    def first_media_received_at(self) -> float | None:
        """Wall time of the first outbound media of the whole call."""
        times = [s.first_received_at for s in self.heard_segments if s.first_received_at]
        return min(times) if times else None

    @property
    def pending_audio_bytes(self) -> int:
        """Outbound audio received but not played yet."""
        inflight = len(self._inflight.chunk) if self._inflight else 0
        return self._queued_bytes + inflight

    async def say(self, text: str, *, voice: str | None = None) -> SaidUtterance:
        """Speak ``text`` in the caller's Kokoro voice; returns after the last frame.

        With no stream open but a host (the call is in a conference), the words are
        recorded on the host's timeline instead (kind ``speech``) and nothing is sent."""
        if self.is_open and self.current_stream is None and self.host is not None:
            return self._speak_without_stream(text, 0)
        ulaw = await synthesize_ulaw(text, voice or self.sim.caller_voice)
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
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._speech.append(_Utterance(record, frames(bytes(mulaw)), future))
        await future
        # what the agent says from now on is the reply to this
        self._reply_bytes = 0
        return record

    async def send_dtmf(self, digit: str) -> None:
        """The caller presses a key (``dtmf`` event, track ``inbound_track``)."""
        if digit not in DTMF_DIGITS or len(digit) != 1:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        ok = await self._send(
            lambda seq: {
                "event": "dtmf",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )
        if not ok:
            raise SimulatorError(
                "the call has ended" if self.closed.is_set() else "no media stream is open"
            )
        self.dtmf_sent.append(digit)

    async def hangup(self) -> None:
        """The caller hangs up: ``stop`` then the socket closes (if a stream is open), and
        the host learns the call has ended (a conference it was in may end). Idempotent."""
        if self._hanging_up:
            await self._join_receiver()
            return
        self._hanging_up = True
        was_open = not self.closed.is_set()
        if self.current_stream is not None:
            await self._stop_workers()
            self.stop_sent = await self._send_stop()
            await self._close_ws()
            await self._join_receiver()
            self._finish_stream("caller-hangup")
        self._mark_closed()
        if self.host is not None and was_open:
            await self.host.caller_hung_up(self)

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
        self._seq = itertools.count(1)
        self._ending_stream = None
        self._reply_bytes = 0
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
        await self._stop_workers()
        if send_stop:
            self.stop_sent = await self._send_stop()
        await self._close_ws()
        await self._join_receiver()
        self._finish_stream(reason)

    def end_call(self) -> None:
        """The host ended the call (after :meth:`end_stream` if one was open)."""
        self._mark_closed()

    async def _send_stop(self) -> bool:
        return await self._send(
            lambda seq: {
                "event": "stop",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    async def _close_ws(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

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
        while True:
            now = loop.time()
            if (
                self._reply_bytes >= min_bytes
                and not self._queue
                and self._inflight is None
                and (now - self._last_activity) * self.pace >= quiet_s
            ):
                return
            if self.closed.is_set() or self.current_stream is None:
                if self._reply_bytes >= min_bytes:
                    return
                raise SimulatorError("the stream ended before the agent said anything")
            if now >= deadline:
                raise TimeoutError(
                    f"agent not quiet within {timeout_s}s "
                    f"(reply bytes {self._reply_bytes}, pending {self.pending_audio_bytes})"
                )
            await asyncio.sleep(poll)

    async def wait_for_mark_echo(self, name: str, timeout_s: float = 10.0) -> MarkEcho:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for echo in self.mark_echoes:
                if echo.name == name:
                    return echo
            if loop.time() >= deadline:
                raise TimeoutError(f"mark {name!r} not echoed within {timeout_s}s")
            await asyncio.sleep(0.005)

    async def transcribe_heard(self, transcriber: Transcriber) -> list[HeardSegment]:
        """Fill ``text`` of every heard segment (empty string for silence)."""
        for seg in self.heard_segments:
            seg.text = await transcriber.transcribe_ulaw(bytes(seg.audio)) if seg.audio else ""
        return self.heard_segments

    async def __aenter__(self) -> Call:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.hangup()

    # -- connection -----------------------------------------------------------------------

    async def _open(self) -> None:
        record = StreamRecord(
            index=len(self.streams) + 1,
            stream_sid=self.stream_sid,
            url=self.stream_url,
            local_url=self.local_stream_url,
            parameters=dict(self.custom_parameters),
        )
        self.streams.append(record)
        headers: dict[str, str] = {}
        if self.sim.sign_stream_handshake:
            headers["X-Twilio-Signature"] = self.sim.sign(self.stream_url, {})
        try:
            self._ws = await connect(
                self.local_stream_url,
                additional_headers=headers,
                user_agent_header=TWILIO_WS_USER_AGENT,
                compression=None,
                proxy=None,
                open_timeout=10,
            )
        except Exception as exc:
            self._ws = None
            self._finish_stream("open-failed")
            if self.host is None:
                self._mark_closed()
            raise SimulatorError(
                f"could not open the Media Stream at {self.local_stream_url} "
                f"(public {self.stream_url}): {exc!r} — Twilio error 31920"
            ) from exc
        loop = asyncio.get_running_loop()
        record.started_at = time.time()
        if self.started_at is None:
            self.started_at = record.started_at
        self._last_activity = loop.time()
        await self._send_raw({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            lambda seq: {
                "event": "start",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(self.custom_parameters),
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": SAMPLE_RATE,
                        "channels": 1,
                    },
                },
            }
        )
        t0 = loop.time()
        self._receiver_task = asyncio.create_task(self._receiver(), name="phone-sim-receiver")
        self._playout_task = asyncio.create_task(self._playout(), name="phone-sim-playout")
        self._sender_task = asyncio.create_task(self._media_sender(t0), name="phone-sim-sender")
        record.ready = True
        if self.host is not None:
            self.host.stream_started(self, record)

    async def _send_raw(self, msg: dict[str, Any]) -> bool:
        assert self._ws is not None
        async with self._send_lock:
            try:
                await self._ws.send(json.dumps(msg))
            except ConnectionClosed:
                return False
            self.sent.append(msg)
            return True

    async def _send(self, build: Callable[[str], dict[str, Any]]) -> bool:
        """Send a sequenced message; the counter is shared by every message type."""
        if self._ws is None or self.current_stream is None:
            return False
        async with self._send_lock:
            msg = build(str(next(self._seq)))
            try:
                await self._ws.send(json.dumps(msg))
            except ConnectionClosed:
                return False
            self.sent.append(msg)
            return True

    def _finish_stream(self, reason: StreamEndReason) -> None:
        """The current stream is over: drop what was not played, fail pending speech."""
        self.dropped_on_close_bytes += self.pending_audio_bytes
        self._queue.clear()
        self._queued_bytes = 0
        self._inflight = None
        self._open_segment = None
        while self._speech:
            u = self._speech.popleft()
            if not u.future.done():
                u.future.set_exception(SimulatorError("the stream ended while the caller spoke"))
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

    async def _stop_workers(self) -> None:
        tasks = [t for t in (self._sender_task, self._playout_task) if t is not None]
        current = asyncio.current_task()
        for t in tasks:
            if t is not current:
                t.cancel()
        for t in tasks:
            if t is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _join_receiver(self) -> None:
        task = self._receiver_task
        if task is None or task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:
            pass

    # -- caller → gateway -----------------------------------------------------------------

    def _next_frame(self) -> tuple[bytes | None, _Utterance | None, int]:
        if self._speech:
            u = self._speech[0]
            idx = u.pos
            u.pos += 1
            return u.frames[idx], u, idx
        if self.silence == "digital":
            return _DIGITAL_SILENCE, None, -1
        if self.silence == "comfort_noise":
            frame = self._noise[self._noise_pos % len(self._noise)]
            self._noise_pos += 1
            return frame, None, -1
        return None, None, -1

    async def _media_sender(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        frame_s = FRAME_MS / 1000.0 / self.pace
        slot = 0  # 20 ms slots since start (simulated time)
        chunk = 1
        try:
            while True:
                delay = t0 + (slot + 1) * frame_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                payload, utt, idx = self._next_frame()
                if payload is not None:
                    b64 = base64.b64encode(payload).decode("ascii")
                    ts = str(slot * FRAME_MS)
                    ok = await self._send(self._media_builder(str(chunk), ts, b64))
                    if not ok:
                        return
                    chunk += 1
                    if utt is not None:
                        self._after_speech_frame(utt, idx)
                slot += 1
        finally:
            while self._speech:
                u = self._speech.popleft()
                if not u.future.done():
                    u.future.set_exception(SimulatorError("the call ended while the caller spoke"))

    def _media_builder(
        self, chunk: str, timestamp: str, payload: str
    ) -> Callable[[str], dict[str, Any]]:
        def build(seq: str) -> dict[str, Any]:
            return {
                "event": "media",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": chunk,
                    "timestamp": timestamp,
                    "payload": payload,
                },
            }

        return build

    def _after_speech_frame(self, utt: _Utterance, idx: int) -> None:
        now = time.time()
        if idx == utt.first_voiced:
            utt.record.started_at = now
        if idx == utt.last_voiced:
            utt.record.speech_ended_at = now
            self.speech_ended_at = now
        if utt.pos >= len(utt.frames):
            utt.record.finished_at = now
            if self._speech and self._speech[0] is utt:
                self._speech.popleft()
            if not utt.future.done():
                utt.future.set_result(None)

    # -- gateway → caller -----------------------------------------------------------------

    async def _receiver(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                await self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            ending = self._hanging_up or self._ending_stream is not None
            ws = self._ws
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason
            if not ending:
                self.closed_by_server = True
                await self._stop_workers()
                self._finish_stream("server-closed")
                if self.host is None:
                    self._mark_closed()

    def _error(self, what: str, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else repr(raw[:80])
        self.protocol_errors.append(f"31924: {what}: {text[:300]}")

    async def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self._error("binary WebSocket frame (Twilio takes JSON text frames only)", raw)
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            self._error("message is not JSON", raw)
            return
        if not isinstance(msg, dict):
            self._error("message is not a JSON object", raw)
            return
        self.received.append(msg)
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            self._error(f"unknown event {event!r}", raw)
            return
        if msg.get("streamSid") != self.stream_sid:
            self._error(f"{event} with streamSid {msg.get('streamSid')!r}", raw)
            return
        if event == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._error("media without media.payload string", raw)
                return
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self._error("media.payload is not base64", raw)
                return
            if not data:
                self._error("empty media.payload", raw)
                return
            self._on_media(data)
        elif event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str) or not name:
                self._error("mark without mark.name string", raw)
                return
            await self._on_mark(name)
        else:
            await self._on_clear()

    def _segment(self) -> HeardSegment:
        if self._open_segment is None:
            self._open_segment = HeardSegment(stream_sid=self.stream_sid)
            self.heard_segments.append(self._open_segment)
            if self.streams:
                self.streams[-1].segments.append(self._open_segment)
        return self._open_segment

    def _on_media(self, data: bytes) -> None:
        self.outbound_media_sizes.append(len(data))
        if self._queued_bytes + len(data) > MAX_BUFFERED_BYTES:
            self.warnings.append("more than 10 minutes of audio buffered: dropped")
            return
        seg = self._segment()
        seg.received_bytes += len(data)
        if seg.first_received_at is None:
            seg.first_received_at = time.time()
        self._queue.append(_Audio(seg, data))
        self._queued_bytes += len(data)
        self._reply_bytes += len(data)
        self._last_activity = asyncio.get_running_loop().time()
        self._wake.set()

    async def _on_mark(self, name: str) -> None:
        seg = self._segment()
        seg.mark_name = name
        seg.mark_received_at = time.time()
        self._open_segment = None
        if not self._queue and self._inflight is None:
            await self._echo(seg, cleared=False)
        else:
            self._queue.append(_Mark(seg))

    async def _on_clear(self) -> None:
        loop = asyncio.get_running_loop()
        dropped = 0
        inflight = self._inflight
        if inflight is not None:
            self._inflight = None
            played = int((loop.time() - inflight.start) * SAMPLE_RATE * self.pace)
            played = max(0, min(len(inflight.chunk), played))
            if played:
                self._commit(inflight.seg, inflight.chunk[:played], inflight.start)
            rest = len(inflight.chunk) - played
            if rest:
                inflight.seg.dropped_bytes += rest
                inflight.seg.cleared = True
                dropped += rest
            self._interrupt.set()
        marks: list[HeardSegment] = []
        for item in self._queue:
            if isinstance(item, _Audio):
                item.seg.dropped_bytes += item.remaining
                item.seg.cleared = True
                dropped += item.remaining
            else:
                marks.append(item.seg)
        self._queue.clear()
        self._queued_bytes = 0
        if self._open_segment is not None:
            self._open_segment = None  # later audio starts a new segment
        self.clears.append(
            ClearRecord(
                at=time.time(),
                dropped_bytes=dropped,
                echoed_marks=[s.mark_name or "" for s in marks],
            )
        )
        for seg in marks:
            await self._echo(seg, cleared=True)

    async def _echo(self, seg: HeardSegment, *, cleared: bool) -> None:
        name = seg.mark_name or ""
        now = time.time()
        seg.mark_echoed_at = now
        if cleared:
            seg.cleared = True
        self.mark_echoes.append(MarkEcho(name, now, cleared, len(self.heard_audio)))
        await self._send(
            lambda seq: {
                "event": "mark",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def _commit(self, seg: HeardSegment, data: bytes, start: float) -> None:
        """``data`` has been played to the caller (it started at loop time ``start``)."""
        loop_now = asyncio.get_running_loop().time()
        wall_now = time.time()
        if seg.first_played_at is None:
            seg.first_played_at = wall_now - (loop_now - start)
        seg.last_played_at = wall_now
        seg.audio += data
        self.heard_audio += data
        self._last_activity = loop_now

    def _take_chunk(self) -> tuple[HeardSegment, bytes] | None:
        """Up to one 20 ms frame of queued audio, never across a mark or segment."""
        if not self._queue or not isinstance(self._queue[0], _Audio):
            return None
        seg = self._queue[0].seg
        out = bytearray()
        while self._queue and len(out) < FRAME_BYTES:
            item = self._queue[0]
            if not isinstance(item, _Audio) or item.seg is not seg:
                break
            n = min(FRAME_BYTES - len(out), item.remaining)
            out += item.data[item.offset : item.offset + n]
            item.offset += n
            if item.remaining == 0:
                self._queue.popleft()
        self._queued_bytes -= len(out)
        return seg, bytes(out)

    async def _echo_head_marks(self) -> None:
        while self._queue and isinstance(self._queue[0], _Mark):
            item = self._queue.popleft()
            assert isinstance(item, _Mark)
            await self._echo(item.seg, cleared=False)

    async def _playout(self) -> None:
        """Plays buffered audio at real time / pace and echoes marks behind it."""
        loop = asyncio.get_running_loop()
        frame_s = FRAME_MS / 1000.0 / self.pace
        clock: float | None = None  # loop time the previous chunk ended
        while True:
            await self._echo_head_marks()
            taken = self._take_chunk()
            if taken is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            seg, chunk = taken
            now = loop.time()
            start = clock if clock is not None and now - clock < frame_s else now
            end = start + len(chunk) / SAMPLE_RATE / self.pace
            inflight = _Inflight(seg, chunk, start, end)
            self._inflight = inflight
            self._interrupt.clear()
            timeout = end - loop.time()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._interrupt.wait(), timeout)
            if self._inflight is not inflight:  # cleared while playing
                clock = None
                continue
            self._inflight = None
            self._commit(seg, chunk, start)
            clock = end


# -- scripted callers ------------------------------------------------------------------------


@dataclass
class Turn:
    """One exchange: what the caller said (None for the greeting) and what followed."""

    index: int
    caller_text: str | None
    caller_started_at: float | None
    caller_ended_at: float | None
    segments: list[HeardSegment]
    heard_text: str | None = None

    @property
    def mark_names(self) -> list[str]:
        return [s.mark_name for s in self.segments if s.mark_name]

    @property
    def heard_audio(self) -> bytes:
        return b"".join(bytes(s.audio) for s in self.segments)

    @property
    def first_media_at(self) -> float | None:
        times = [s.first_received_at for s in self.segments if s.first_received_at]
        return min(times) if times else None

    @property
    def latency_s(self) -> float | None:
        """Wall seconds from the end of the caller's speech to the reply's first audio."""
        if self.caller_ended_at is None or self.first_media_at is None:
            return None
        return self.first_media_at - self.caller_ended_at

    @property
    def cleared(self) -> bool:
        return any(s.cleared for s in self.segments)


@dataclass
class CallerScript:
    """What a scripted caller says, one line per turn, and how long it waits."""

    lines: list[str]
    wait_for_greeting: bool = True
    quiet_s: float = 1.2
    timeout_s: float = 60.0

    async def run(self, call: Call, transcriber: Transcriber | None = None) -> list[Turn]:
        return await run_script(
            call,
            self.lines,
            transcriber,
            wait_for_greeting=self.wait_for_greeting,
            quiet_s=self.quiet_s,
            timeout_s=self.timeout_s,
        )


async def run_script(
    call: Call,
    lines: Sequence[str] | CallerScript,
    transcriber: Transcriber | None = None,
    *,
    wait_for_greeting: bool = True,
    quiet_s: float = 1.2,
    timeout_s: float = 60.0,
) -> list[Turn]:
    """Turn-taking: wait for the greeting, then say each line and wait for the reply.

    Returns one :class:`Turn` per exchange (the greeting first, with ``caller_text``
    None); with a ``transcriber`` each turn's ``heard_text`` is what the caller heard.
    """
    if isinstance(lines, CallerScript):
        script = lines
        lines, wait_for_greeting = script.lines, script.wait_for_greeting
        quiet_s, timeout_s = script.quiet_s, script.timeout_s
    voice = call.sim.caller_voice
    turns: list[Turn] = []
    if wait_for_greeting:
        await asyncio.gather(
            call.wait_until_quiet(quiet_s, timeout_s), call.sim.prepare(*lines, voice=voice)
        )
        turns.append(Turn(0, None, None, None, list(call.heard_segments)))
    else:
        await call.sim.prepare(*lines, voice=voice)
    for line in lines:
        said = await call.say(line)
        first = len(call.heard_segments)
        await call.wait_until_quiet(quiet_s, timeout_s)
        turns.append(
            Turn(
                len(turns),
                line,
                said.started_at,
                said.speech_ended_at,
                call.heard_segments[first:],
            )
        )
    if transcriber is not None:
        for turn in turns:
            audio = turn.heard_audio
            turn.heard_text = await transcriber.transcribe_ulaw(audio) if audio else ""
    return turns


def join_heard(segments: Iterable[HeardSegment]) -> bytes:
    return b"".join(bytes(s.audio) for s in segments)
