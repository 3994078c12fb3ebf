"""The fake gateway the phone simulator's tests talk to: a FastAPI + uvicorn app that
validates Twilio signatures, answers Connect/Stream TwiML and records the Media Stream,
plus small helpers (poll until, loud noise audio)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from dealerline_common.ops import HttpServer

PUBLIC = "https://dealer.example.com"
STREAM_URL = "wss://dealer.example.com/api/voice/media-stream"
TOKEN = "0123456789abcdef0123456789abcdef"

DEFAULT_TWIML = f"""<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect>
    <Stream url="{STREAM_URL}">
      <Parameter name="session_id" value="sess_test"/>
      <Parameter name="stream_token" value="tok123"/>
    </Stream>
  </Connect>
</Response>"""


class FakeGateway:
    """Plays the gateway's side: signed webhook in, TwiML out, Media Stream recorded."""

    def __init__(self) -> None:
        self.validator = RequestValidator(TOKEN)
        self.twiml = DEFAULT_TWIML
        self.content_type = "application/xml"
        self.webhooks: list[tuple[dict[str, str], bool]] = []
        self.handshake_signature: str | None = None
        self.handshake_valid: bool | None = None
        self.received: list[dict[str, Any]] = []
        self.ws: WebSocket | None = None
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        app = FastAPI()

        @app.post("/api/voice/incoming")
        async def incoming(request: Request) -> Response:
            form = await request.form()
            params = {k: str(v) for k, v in form.items()}
            signature = request.headers.get("x-twilio-signature", "")
            valid = bool(self.validator.validate(PUBLIC + "/api/voice/incoming", params, signature))
            self.webhooks.append((params, valid))
            if not valid:
                return Response("bad signature", status_code=403)
            return Response(self.twiml, media_type=self.content_type)

        @app.websocket("/api/voice/media-stream")
        async def stream(ws: WebSocket) -> None:
            self.handshake_signature = ws.headers.get("x-twilio-signature")
            self.handshake_valid = bool(
                self.validator.validate(STREAM_URL, {}, self.handshake_signature or "")
            )
            await ws.accept()
            self.ws = ws
            self.connected.set()
            try:
                while True:
                    msg = json.loads(await ws.receive_text())
                    self.received.append(msg)
                    if self.on_message is not None:
                        await self.on_message(msg)
            except WebSocketDisconnect:
                pass
            finally:
                self.disconnected.set()

        self.server = HttpServer(app, "127.0.0.1", 0)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def stream_sid(self) -> str:
        return str(next(m for m in self.received if m["event"] == "start")["streamSid"])

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("event") == name]

    async def send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_text(json.dumps(msg))

    async def send_media(self, data: bytes, chunk: int = 320) -> None:
        for i in range(0, len(data), chunk):
            payload = base64.b64encode(data[i : i + chunk]).decode()
            await self.send(
                {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
            )

    async def send_mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> None:
        await self.send({"event": "clear", "streamSid": self.stream_sid})


async def until(pred: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def noise(n: int, seed: int) -> bytes:
    """Loud distinguishable mu-law bytes (never 0xFF/0x7F silence)."""
    rng = np.random.default_rng(seed)
    return bytes(rng.integers(0x00, 0x60, n, dtype=np.uint8))
