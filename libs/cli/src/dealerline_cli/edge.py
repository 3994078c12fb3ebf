"""The edge of ``make run``: one public port that routes as the production Ingress does
(deploy/k8s/values.yaml ``ingress.routes``), so one URL (one tunnel) serves every Twilio
webhook and the dashboard.

- the human leg's webhooks (:data:`ESCALATION_WEBHOOK_PATHS`) → the escalation service
- everything else under ``/api/voice/`` (the incoming-call webhook, ``escalate``,
  ``return-to-ai``, the media-stream WebSocket) → the gateway
- ``/livez`` and ``/readyz`` are the edge's own; ``/metrics`` is not served (the Ingress
  blocks the services' ops endpoints too)
- everything else (the web UI, ``/api/*``, the ``/ws/*`` sockets) → dashboard-api

A small ASGI proxy on uvicorn: HTTP through httpx, WebSockets through websockets (both
directions, text and binary, close codes passed on; a handshake the service refuses is
refused to the client with the same status). Request headers pass as they came
(``X-Twilio-Signature`` included; ``Host`` too for HTTP), less the hop-by-hop ones, with
``X-Forwarded-For`` appended and ``X-Forwarded-Proto``/``-Host`` set unless a tunnel in
front already set them. The services check Twilio's signatures against their configured
public URL, so they validate whatever address the edge itself listens on.

(asgiproxy, the one maintained library for this, accepts the client's WebSocket before the
service has accepted its own, so a refused media-stream handshake would look accepted, and
passes hop-by-hop headers on.)

``python -m dealerline_cli.edge --port P --gateway URL --escalation URL --dashboard URL``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

ESCALATION_WEBHOOK_PATHS = (
    "/api/voice/human-answer",
    "/api/voice/human-detected",
    "/api/voice/human-confirmed",
    "/api/voice/human-status",
    "/api/voice/conference-status",
)
GATEWAY_PREFIX = "/api/voice/"
OWN_PATHS = ("/livez", "/readyz")
BLOCKED_PATHS = ("/metrics",)

MAX_BODY_BYTES = 4 * 1024 * 1024  # webhooks and dashboard requests are a few KiB
MAX_WS_MESSAGE_BYTES = 16 * 1024 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Made anew by the websockets client for its own handshake with the service (the client's
# Origin is passed through its own argument).
WS_HANDSHAKE = frozenset({"host", "origin"})

log = logging.getLogger("dealerline.edge")

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Routes:
    gateway: str
    escalation: str
    dashboard: str

    def upstream(self, path: str) -> tuple[str, str]:
        """(service name, base URL) that serves ``path``."""
        if path in ESCALATION_WEBHOOK_PATHS:
            return "escalation", self.escalation.rstrip("/")
        if path.startswith(GATEWAY_PREFIX):
            return "gateway", self.gateway.rstrip("/")
        return "dashboard-api", self.dashboard.rstrip("/")


def _latin1(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


def forward_headers(scope: Scope, *, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The client's request headers to send on: hop-by-hop ones (and those ``Connection``
    names) and ``drop`` left out, ``X-Forwarded-For/Proto/Host`` added."""
    headers = _latin1(scope.get("headers", []))
    named = {
        token.strip().lower()
        for k, v in headers
        if k == "connection"
        for token in v.split(",")
        if token.strip()
    }
    skip = HOP_BY_HOP | named | {"content-length"} | {d.lower() for d in drop}
    out = [(k, v) for k, v in headers if k not in skip and not k.startswith("sec-websocket-")]
    have = {k for k, _ in out}
    client = scope.get("client")
    peer = client[0] if client else None
    if peer:
        earlier = [v for k, v in out if k == "x-forwarded-for"]
        out = [(k, v) for k, v in out if k != "x-forwarded-for"]
        out.append(("x-forwarded-for", ", ".join([*earlier, peer])))
    if "x-forwarded-proto" not in have:
        secure = scope.get("scheme") in ("https", "wss")
        out.append(("x-forwarded-proto", "https" if secure else "http"))
    host = next((v for k, v in headers if k == "host"), None)
    if "x-forwarded-host" not in have and host:
        out.append(("x-forwarded-host", host))
    return out


def _target(base: str, scope: Scope, *, websocket: bool = False) -> str:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    url: str = base + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    if websocket:
        url = "ws" + url.removeprefix("http")  # http → ws, https → wss
    return url


async def _plain(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Edge:
    """The ASGI app. Its HTTP client is opened and closed by the ASGI lifespan."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.http: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.http = httpx.AsyncClient(
                    timeout=httpx.Timeout(60.0, connect=5.0),
                    trust_env=False,
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.http is not None:
                    await self.http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _body(self, receive: Any) -> bytes | None:
        """The request body, or None when it is larger than :data:`MAX_BODY_BYTES`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path in OWN_PATHS:
            await _plain(send, 200, "ok")
            return
        if path in BLOCKED_PATHS:
            await _plain(send, 404, "not served here")
            return
        name, base = self.routes.upstream(path)
        body = await self._body(receive)
        if body is None:
            await _plain(send, 413, "request body too large")
            return
        assert self.http is not None, "the edge serves requests only after its startup"
        request = self.http.build_request(
            scope["method"], _target(base, scope), headers=forward_headers(scope), content=body
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("%s unavailable for %s %s: %r", name, scope["method"], path, exc)
            await _plain(send, 502, f"{name} is not answering")
            return
        try:
            headers = [
                (k, v)
                for k, v in response.headers.raw
                if k.decode("latin-1").lower() not in HOP_BY_HOP
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        name, base = self.routes.upstream(scope["path"])
        origin = next((v for k, v in _latin1(scope.get("headers", [])) if k == "origin"), None)
        try:
            upstream = await connect(
                _target(base, scope, websocket=True),
                additional_headers=forward_headers(scope, drop=WS_HANDSHAKE),
                origin=origin,  # type: ignore[arg-type]
                subprotocols=scope.get("subprotocols") or None,
                user_agent_header=None,
                compression=None,
                open_timeout=10.0,
                ping_interval=None,
                max_size=MAX_WS_MESSAGE_BYTES,
                proxy=None,
            )
        except InvalidStatus as exc:
            await _deny(scope, send, exc.response.status_code, bytes(exc.response.body or b""))
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            log.warning("%s refused the WebSocket %s: %r", name, scope["path"], exc)
            await _deny(scope, send, 502, f"{name} is not answering".encode())
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay(upstream, receive, send)


async def _deny(scope: Scope, send: Any, status: int, body: bytes) -> None:
    """Refuse the client's handshake with ``status`` (plain close where the server cannot
    send an HTTP response to a WebSocket request: it answers 403 then)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _sendable(code: int | None, otherwise: int) -> int:
    """``code`` if a close frame may carry it (1005, 1006 and 1015 only say none came)."""
    if code is None or code in (1004, 1005, 1006, 1015) or not 1000 <= code < 5000:
        return otherwise
    return code


async def _client_to_upstream(upstream: ClientConnection, receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await upstream.close(_sendable(message.get("code"), 1000))
            return
        if message.get("text") is not None:
            await upstream.send(message["text"])
        elif message.get("bytes") is not None:
            await upstream.send(message["bytes"])


async def _upstream_to_client(upstream: ClientConnection, send: Any) -> None:
    try:
        async for data in upstream:
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})
    except ConnectionClosed:
        pass
    code = _sendable(upstream.close_code, 1011)
    await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})


async def _relay(upstream: ClientConnection, receive: Any, send: Any) -> None:
    """Pass messages both ways until either side closes; the other side is closed too."""
    tasks = [
        asyncio.create_task(_client_to_upstream(upstream, receive), name="edge:client-to-up"),
        asyncio.create_task(_upstream_to_client(upstream, send), name="edge:up-to-client"),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task


class _RefusalIsNoError(logging.Filter):
    """uvicorn logs a handshake refused with an HTTP response (a refusal passed on) as
    "returned without completing handshake", an ERROR though it was answered as asked."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dealerline_cli.edge",
        description="One public port for the fleet: Twilio's webhooks, the media stream "
        "and the dashboard, routed as the production Ingress routes them.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    p.add_argument("--gateway", required=True, help="the gateway's base URL")
    p.add_argument("--escalation", required=True, help="the escalation service's base URL")
    p.add_argument("--dashboard", required=True, help="dashboard-api's base URL")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = Edge(Routes(args.gateway, args.escalation, args.dashboard))
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        proxy_headers=False,  # the peer is the client: X-Forwarded-For is appended to
        access_log=False,  # request lines would carry query strings into the log
        log_level="warning",
        lifespan="on",
        ws_max_size=MAX_WS_MESSAGE_BYTES,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)  # configures uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(_RefusalIsNoError())
    server.run()


if __name__ == "__main__":
    main()
