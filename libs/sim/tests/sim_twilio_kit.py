"""A tiny Starlette app standing in for our services in the Twilio simulator's tests: it
checks every Twilio signature against its public URL, records requests (and Media Stream
messages) in one shared order, and answers TwiML from handlers the test sets. It depends
on neither the gateway nor the escalation service."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from dealerline_common.ops import HttpServer

TOKEN = "0123456789abcdef0123456789abcdef"
TIME_SCALE = 0.02  # 50x: a 45 s ring timeout takes 0.9 s
GW_PUBLIC = "https://dealer.example.com"
ESC_PUBLIC = "https://esc.example.com"
STREAM_URL = "wss://dealer.example.com/api/voice/media-stream"
STAFF = "+14155550123"
DEALER = "+14155550199"
CUSTOMER = "+14155550100"


def connect_stream(**params: str) -> str:
    body = "".join(f'<Parameter name="{k}" value="{v}"/>' for k, v in params.items())
    return f'<Response><Connect><Stream url="{STREAM_URL}">{body}</Stream></Connect></Response>'


@dataclass
class Req:
    path: str
    query: str
    method: str
    params: dict[str, str]
    valid: bool
    headers: dict[str, str]
    order: int


@dataclass
class WsSession:
    messages: list[dict[str, Any]] = field(default_factory=list)
    ws: WebSocket | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stream_sid(self) -> str:
        return str(next(m for m in self.messages if m["event"] == "start")["streamSid"])

    @property
    def start(self) -> dict[str, Any]:
        return next(m for m in self.messages if m["event"] == "start")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == name]

    async def send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_text(json.dumps(msg))


Handler = Callable[[Req], str | Response | Awaitable[str | Response]]


class FakeApp:
    """Serves ``public`` (e.g. https://esc.example.com) from a local port."""

    def __init__(self, public: str, order: list[str], token: str = TOKEN) -> None:
        self.public = public.rstrip("/")
        self.order = order
        self.validator = RequestValidator(token)
        self.requests: list[Req] = []
        self.handlers: dict[str, Handler] = {}
        self.sessions: list[WsSession] = []
        self.on_session: Callable[[WsSession], Coroutine[Any, Any, None]] | None = None
        app = Starlette(
            routes=[
                WebSocketRoute("/api/voice/media-stream", self._ws),
                Route("/{path:path}", self._http, methods=["GET", "POST"]),
            ]
        )
        self.server = HttpServer(app, "127.0.0.1", 0)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return self.public + path

    def on(self, path: str, handler: Handler) -> None:
        self.handlers[path] = handler

    def to(self, path: str) -> list[Req]:
        return [r for r in self.requests if r.path == path]

    async def _http(self, request: Request) -> Response:
        query = request.url.query
        if request.method == "POST":
            body = (await request.body()).decode()
            params = dict(parse_qsl(body, keep_blank_values=True))
            url = self.public + request.url.path + (f"?{query}" if query else "")
            valid = self.validator.validate(
                url, params, request.headers.get("x-twilio-signature", "")
            )
        else:
            params = dict(parse_qsl(query, keep_blank_values=True))
            valid = self.validator.validate(
                self.public + request.url.path + f"?{query}",
                {},
                request.headers.get("x-twilio-signature", ""),
            )
        self.order.append(f"http:{request.url.path}")
        req = Req(
            request.url.path,
            query,
            request.method,
            params,
            bool(valid),
            dict(request.headers),
            len(self.order) - 1,
        )
        self.requests.append(req)
        if not valid:
            return Response("bad signature", status_code=403)
        handler = self.handlers.get(request.url.path)
        if handler is None:
            return Response("", status_code=204)
        result = handler(req)
        if not isinstance(result, str | Response):
            result = await result
        if isinstance(result, Response):
            return result
        return Response(result, media_type="text/xml")

    async def _ws(self, ws: WebSocket) -> None:
        await ws.accept()
        session = WsSession(ws=ws)
        self.sessions.append(session)
        task: asyncio.Task[None] | None = None
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                session.messages.append(msg)
                if msg.get("event") in ("start", "stop"):
                    self.order.append(f"ws:{msg['event']}:{len(self.sessions)}")
                if msg.get("event") == "start":
                    session.started.set()
                    if self.on_session is not None:
                        task = asyncio.create_task(self.on_session(session))
                if msg.get("event") == "stop":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            session.closed.set()
            with contextlib.suppress(Exception):
                await ws.close()


def gather(action: str, prompt: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (
        f'<Response><Gather numDigits="1" action="{action}" timeout="10"{extra}>'
        f"<Say>{prompt}</Say></Gather><Say>Goodbye.</Say><Hangup/></Response>"
    )


def escalation_flow(esc: FakeApp, room: str, *, conference_callback: bool = True) -> None:
    """The seed's two-step DTMF confirmation, then the human's conference TwiML."""
    esc.on(
        "/api/voice/human-answer",
        lambda r: gather(
            "/api/voice/human-detected",
            "Incoming customer call. Press any key to accept.",
            finishOnKey="",
        ),
    )
    esc.on(
        "/api/voice/human-detected",
        lambda r: gather(
            "/api/voice/human-confirmed",
            "A customer needs help with a trade-in. Press 1 to accept, any other key to decline.",
        ),
    )
    callback = (
        f' statusCallback="{esc.url("/api/voice/conference-status")}"'
        ' statusCallbackEvent="start end join leave"'
        if conference_callback
        else ""
    )

    def confirmed(r: Req) -> str:
        if r.params.get("Digits") == "1":
            return (
                "<Response><Say>Connecting you to the customer now.</Say><Dial>"
                f'<Conference startConferenceOnEnter="true" endConferenceOnExit="false"{callback}>'
                f"{room}</Conference></Dial></Response>"
            )
        return "<Response><Say>Declined. Goodbye.</Say><Hangup/></Response>"

    esc.on("/api/voice/human-confirmed", confirmed)


async def started(*apps: FakeApp) -> None:
    for app in apps:
        await app.server.start()


async def stopped(*apps: FakeApp) -> None:
    for app in apps:
        await app.server.stop()
