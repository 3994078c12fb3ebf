"""Every JSON answer under ``/api`` passes through :class:`MaskResponses`, which masks
each phone number in it (:func:`.masking.mask_all`) unless the route recorded a caller who
sees whole numbers. It fails closed: a route that names no caller (or a new one that
forgets) is masked, so no full number reaches a sales user from any route."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .store import Viewer

AUDIENCE_KEY = "dealerline.audience"


@dataclass
class Audience:
    """Who the answer is for, filled in by the route's dependencies."""

    viewer: Viewer | None = None


def set_viewer(conn: HTTPConnection, viewer: Viewer) -> None:
    audience = conn.scope.get(AUDIENCE_KEY)
    if isinstance(audience, Audience):
        audience.viewer = viewer


def _masked(body: bytes, viewer: Viewer | None) -> bytes:
    if viewer is not None and viewer.full_numbers:
        return body
    value = json.loads(body)
    if viewer is None:
        return json.dumps(Viewer(0, "", False).mask(value), separators=(",", ":")).encode()
    return json.dumps(viewer.mask(value), separators=(",", ":")).encode()


class MaskResponses:
    def __init__(self, app: ASGIApp, prefix: str = "/api") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        audience = Audience()
        scope[AUDIENCE_KEY] = audience
        start: Message | None = None
        chunks: list[bytes] = []

        async def masked_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            body = b"".join(chunks)
            if dict(headers).get(b"content-type", b"").startswith(b"application/json") and body:
                body = _masked(body, audience.viewer)
            await send(
                {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            )
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, masked_send)
