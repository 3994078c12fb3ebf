"""Gateway test kit: the app in uvicorn on a free port against a real nats-server, a test
bus client, a signed-webhook helper and a scripted Twilio media-stream client.

(Imported by the tests as a plain module: conftest.py puts this folder on sys.path,
because pytest's importlib mode does not let tests import conftest.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np
from fastapi import FastAPI
from nats.aio.msg import Msg
from pydantic import SecretStr
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from dealerline_common import audio
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import StreamStarted, parse_control, parse_event
from dealerline_common.ops import HttpServer
from dealerline_gateway.app import create_app
from dealerline_gateway.settings import GatewaySettings
from dealerline_gateway.ws_protocol import GatewayWebSocketProtocol

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://dealer.example.com"
CALLER = "+14158675309"
DEALER = "+18005551212"


T = TypeVar("T")


def voiced_signal(seconds: float, level: float = 0.3) -> bytes:
    """A deterministic vowel-like signal (pitch ~140 Hz with harmonics and syllable-rate
    amplitude modulation) as mu-law; webrtcvad calls every frame of it speech."""
    sr = audio.SAMPLE_RATE
    t = np.arange(int(sr * seconds)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum((1.0 / k) * np.sin(k * phase) for k in range(1, 20))
    x = np.asarray(x) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x = x / np.max(np.abs(x)) * level
    return audio.pcm16_to_ulaw(audio.float_to_pcm16(x.astype(np.float32)))


@functools.cache
def kokoro_ulaw(text: str, voice: str = "jm_kumo") -> bytes:
    """``text`` spoken by the embedded Kokoro, as 8 kHz mu-law (peak 0.4)."""
    from kokoro_onnx import Kokoro

    from dealerline_common.models import bundled_voices_path, kokoro_int8_path

    k = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
    samples, rate = k.create(text, voice=voice, speed=1.0, lang="en-us")
    x = audio.resample(samples, rate, audio.SAMPLE_RATE)
    x = x / max(1e-6, float(np.abs(x).max())) * 0.4
    return audio.pcm16_to_ulaw(audio.float_to_pcm16(x))


def silence(seconds: float) -> bytes:
    return bytes([audio.ULAW_SILENCE]) * (int(audio.SAMPLE_RATE * seconds) // 160 * 160)


@dataclass
class Running:
    app: FastAPI
    settings: GatewaySettings
    bus: Bus  # the gateway's own
    probe: Bus  # the test's
    http: HttpServer

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http.port}/api/voice/media-stream"


def make_settings(nats_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "nats_url": nats_url,
        "http_port": 0,
        "js_file_storage": False,
        "stream_token_ttl_s": 60.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@contextlib.asynccontextmanager
async def running_gateway(nats_server: NatsServer, **overrides: Any) -> AsyncIterator[Running]:
    settings = make_settings(nats_server.url, **overrides)
    bus = Bus(settings.nats_url, "gateway", file_storage=False)
    await bus.connect()
    await bus.ensure_streams()
    app = create_app(settings, bus)
    gw = app.state.gateway
    # The gateway loads the installed model itself: a test that expects the smart rule
    # must not silently run on the silence fallback.
    assert settings.end_of_turn != "smart" or gw.stream_deps.turn_model is not None
    await gw.start()
    http = HttpServer(
        app,
        "127.0.0.1",
        0,
        ws_max_size=settings.ws_max_message_bytes,
        ws_protocol=GatewayWebSocketProtocol,
    )
    await http.start()
    probe = Bus(settings.nats_url, "probe", file_storage=False)
    await probe.connect()
    try:
        yield Running(app, settings, bus, probe, http)
    finally:
        await app.state.gateway.drain(2.0)
        await http.stop()
        await probe.close()
        await bus.close()


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


async def post_signed(
    client: httpx.AsyncClient, path: str, params: dict[str, str], *, signature: str | None = None
) -> httpx.Response:
    sig = signature if signature is not None else sign(PUBLIC_URL + path, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": sig})


def call_params(call_sid: str = "CA0123456789abcdef0123456789abcdef") -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "From": CALLER,
        "To": DEALER,
        "Caller": CALLER,
        "Called": DEALER,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }


def stream_parameters(twiml: str) -> tuple[str, dict[str, str]]:
    """The <Stream url> and its <Parameter>s from a TwiML answer."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return stream.attrib["url"], params


async def start_call(
    run: Running, call_sid: str = "CA0123456789abcdef0123456789abcdef"
) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=run.base) as client:
        resp = await post_signed(client, "/api/voice/incoming", call_params(call_sid))
    assert resp.status_code == 200, resp.text
    _, params = stream_parameters(resp.text)
    return params


class Collector:
    """Core subscription that queues every message of a subject."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def handler(self, msg: Msg) -> None:
        await self.queue.put(msg)

    async def get(self, within_s: float = 15.0) -> Msg:
        return await asyncio.wait_for(self.queue.get(), within_s)


async def next_of(c: Collector, kind: type[T], within_s: float = 15.0) -> T:
    """The next control (or event) message of one type on ``c``; others are skipped."""

    async def find() -> T:
        while True:
            msg = await c.queue.get()
            parsed = parse_control(msg.data) if "control" in msg.subject else parse_event(msg.data)
            if isinstance(parsed, kind):
                return parsed

    return await asyncio.wait_for(find(), within_s)


async def collect(bus: Bus, subject: str) -> Collector:
    c = Collector()
    await bus.subscribe(subject, c.handler)
    await bus.nc.flush()
    return c


@dataclass
class FakeTwilio:
    """Twilio's side of one bidirectional media stream."""

    ws: ClientConnection
    stream_sid: str = "MZ0123456789abcdef0123456789abcdef"
    call_sid: str = "CA0123456789abcdef0123456789abcdef"
    seq: int = 0
    chunk: int = 0
    ts_ms: int = 0
    received: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    def __post_init__(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="fake-twilio-reader")

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                await self.received.put(json.loads(raw))
        except Exception:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    async def send(self, body: dict[str, Any] | str | bytes) -> None:
        if isinstance(body, dict):
            if body.get("event") != "connected":
                self.seq += 1
                body = {"sequenceNumber": str(self.seq), **body}
            body = json.dumps(body)
        await self.ws.send(body)

    async def start(self, params: dict[str, str]) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC0123456789abcdef0123456789abcdef",
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    async def media(self, ulaw: bytes, pace_every: int = 25) -> None:
        """Send audio as 20 ms media frames (yielding now and then, not in real time)."""
        for i, frame in enumerate(audio.frames(ulaw)):
            self.chunk += 1
            await self.send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self.chunk),
                        "timestamp": str(self.ts_ms),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
            self.ts_ms += 20
            if i % pace_every == 0:
                await asyncio.sleep(0.005)

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def stop(self) -> None:
        await self.send(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": "AC0", "callSid": self.call_sid},
            }
        )

    async def next_event(self, event: str, within_s: float = 15.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                msg = await self.received.get()
                if msg.get("event") == event:
                    return msg

        return await asyncio.wait_for(find(), within_s)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


STREAM_URL = "wss://dealer.example.com/api/voice/media-stream"  # what Twilio signs


def stream_signature(token: str = AUTH_TOKEN) -> dict[str, str]:
    """The handshake headers Twilio sends: ``X-Twilio-Signature`` over the public wss URL."""
    return {"X-Twilio-Signature": sign(STREAM_URL, {}, token)}


@contextlib.asynccontextmanager
async def twilio_stream(
    run: Running,
    call_sid: str = "CA0123456789abcdef0123456789abcdef",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[FakeTwilio]:
    """A media stream opened as Twilio does (signed handshake unless ``headers`` given)."""
    ws = await connect(
        run.ws_url, additional_headers=stream_signature() if headers is None else headers
    )
    fake = FakeTwilio(ws, call_sid=call_sid)
    try:
        yield fake
    finally:
        await fake.close()


async def open_call(run: Running, fake: FakeTwilio, control: Collector) -> dict[str, str]:
    """A call answered by the webhook and its stream started by ``fake``: the stream's
    parameters, once the gateway said ``StreamStarted`` for its session."""
    params = await start_call(run, fake.call_sid)
    await fake.start(params)
    started = await next_of(control, StreamStarted)
    assert started.session_id == params["session_id"]
    return params


async def open_session(run: Running, fake: FakeTwilio, control: Collector) -> str:
    """:func:`open_call`'s session id."""
    return (await open_call(run, fake, control))["session_id"]
