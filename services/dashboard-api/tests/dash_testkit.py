"""The dashboard-api test kit: the real service (real NATS, a real database seeded with the
demo dealership), staff logins, an HTTP client and WebSocket helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from starlette.routing import BaseRoute
from websockets.asyncio.client import ClientConnection

from dealerline_common.bus import Bus
from dealerline_common.db.seed import seed
from dealerline_common.db.testing import empty_database, run_sync
from dealerline_common.messages import Wire
from dealerline_dashboard.accounts import set_password
from dealerline_dashboard.app import Service
from dealerline_dashboard.settings import DashboardSettings

SECRET = secrets.token_hex(32)
PASSWORD = "correct horse battery staple"
SALES = "maria.lopez@sunrisemotors.example"  # Maria Lopez, sales, +14155550111
SERVICE = "david.kim@sunrisemotors.example"  # David Kim, service
MANAGER = "priya.shah@sunrisemotors.example"  # Priya Shah, manager
SALES_PHONE = "+14155550111"


def make_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    url = empty_database(request, kind, tmp_path)
    run_sync(seed(url))
    for email in (SALES, SERVICE, MANAGER):
        run_sync(set_password(url, email, PASSWORD))
    return url


@dataclass
class Dash:
    service: Service
    http: httpx.AsyncClient
    bus: Bus  # the test's own connection
    db_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.http.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.service.http.port}"

    async def token(self, email: str) -> str:
        if email not in self.tokens:
            r = await self.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            self.tokens[email] = r.json()["access_token"]
        return self.tokens[email]

    async def auth(self, email: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(email)}"}

    async def get(self, path: str, email: str = SALES, **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers=await self.auth(email), **kw)

    async def post(self, path: str, email: str = SALES, **kw: Any) -> httpx.Response:
        return await self.http.post(path, headers=await self.auth(email), **kw)

    async def ws(self, path: str, email: str | None = SALES, **kw: Any) -> ClientConnection:
        """A socket on ``path`` that sends ``email``'s token as its first message (the
        token never goes in the URL); ``email=None`` sends nothing."""
        ws = await websockets.connect(self.ws_base + path, **kw)
        if email is not None:
            await send_token(ws, await self.token(email))
        return ws

    async def publish_event(self, subject: str, event: Wire | bytes) -> int:
        ack = await self.bus.publish_durable(subject, event)
        return int(ack.seq)

    async def stop(self) -> None:
        await self.http.aclose()
        await self.service.drain()
        await self.bus.close()


async def start_dashboard(nats_url: str, db_url: str, tmp_path: Path, **overrides: Any) -> Dash:
    settings = DashboardSettings(
        nats_url=nats_url,
        http_port=0,
        http_host="127.0.0.1",
        database_url=db_url,
        auth_secret=SECRET,
        js_file_storage=False,
        web_dir=overrides.pop("web_dir", tmp_path / "no-web-ui"),
        log_json=False,
        **overrides,
    )
    service = Service(settings)
    await service.start()
    bus = Bus(nats_url, "dashboard-test", file_storage=False)
    await bus.connect()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=10)
    return Dash(service, http, bus, db_url)


def app_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route ``app`` serves, those of the routers it includes too (a FastAPI that
    keeps an included router as one entry of ``app.routes`` lists them through
    ``iter_route_contexts``; an older one copies them into ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return [context.original_route for context in iter_route_contexts(app.routes)]


async def send_token(ws: ClientConnection, token: str) -> None:
    await ws.send(json.dumps({"type": "auth", "token": token}))


async def recv_json(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), timeout_s)
    frame: dict[str, Any] = json.loads(data)
    return frame


async def recv_until(
    ws: ClientConnection, count: int, *, kind: str | None = None, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The next ``count`` frames (of type ``kind``, others skipped)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while len(out) < count:
            frame = await recv_json(ws, timeout_s)
            if kind is None or frame.get("type") == kind:
                out.append(frame)
    return out


async def close_code(ws: ClientConnection, timeout_s: float = 10.0) -> int | None:
    """Read until the server closes the socket; its close code."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    return ws.close_code


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """The sum of every sample of ``name`` on /metrics."""
    text = (await http.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
