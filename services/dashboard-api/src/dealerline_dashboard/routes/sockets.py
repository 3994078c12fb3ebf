"""The two WebSockets: ``/ws/sales`` (a snapshot, then everything from the live feed) and
``/ws/{session_id}`` (one call's events from its first, at the client's pace, then live).

A socket authenticates with its first message, ``{"type": "auth", "token": "…"}``, sent
within ``ws_auth_timeout_s`` (a token never travels in a URL, where proxies and access
logs keep it; one in the query string is refused). Without a good one it is closed with
4401. Afterwards the socket follows the token and the account: it is closed with 4401
when the token expires, or when the staff member's row no longer grants what the socket
was opened with (removed, login disabled, another role, another view of numbers): the
guard re-reads the row every ``ws_recheck_s`` and at once when this replica changes it
or hears of a duty change."""

import asyncio
import contextlib
import json
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.websockets import WebSocket

from dealerline_common import subjects
from dealerline_common.db.models import Staff
from dealerline_common.logs import get_logger

from ..dashboard import Dashboard
from ..events import EventReader, event_frame
from ..sockets import CLOSE_BAD_REQUEST, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, WsClient, close_socket
from ..store import staff_json
from .deps import Dash, Principal, principal_of

log = get_logger(__name__)

router = APIRouter()

MAX_AUTH_MESSAGE = 8192


async def first_message_token(dash: Dashboard, ws: WebSocket) -> str | None:
    """The token of the socket's first message (None: none in time, or not one)."""
    try:
        message = await asyncio.wait_for(ws.receive(), dash.settings.ws_auth_timeout_s)
    except TimeoutError:
        return None
    text = message.get("text")
    if message["type"] != "websocket.receive" or not text or len(text) > MAX_AUTH_MESSAGE:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("type") != "auth":
        return None
    token = body.get("token")
    return token if isinstance(token, str) else None


async def ws_principal(dash: Dashboard, ws: WebSocket) -> Principal | None:
    """Accept the socket and read its token; its staff member, or None once it is closed
    with 4401."""
    await ws.accept()
    if "token" in ws.query_params:
        log.warning("socket refused: token in the URL")
        await close_socket(ws, CLOSE_UNAUTHORIZED, "send the token as the first message")
        return None
    try:
        return await principal_of(dash, await first_message_token(dash, ws))
    except HTTPException:
        await close_socket(ws, CLOSE_UNAUTHORIZED, "unauthorized")
        return None


def grant(dash: Dashboard, staff: Staff) -> tuple[str, bool, bool]:
    """What a staff row allows a socket: the role, whole numbers, a login at all."""
    return staff.role, dash.full_numbers(staff.role), staff.password_hash is not None


async def guard(dash: Dashboard, client: WsClient, who: Principal) -> None:
    """Stop ``client`` with 4401 when the token expires or the account changes."""
    granted = grant(dash, who.staff)
    expires_at = who.claims.expires_at
    while True:
        left = expires_at - time.time()
        if left <= 0:
            client.stop(CLOSE_UNAUTHORIZED, "token expired")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.recheck.wait(), min(left, dash.settings.ws_recheck_s))
        client.recheck.clear()
        if time.time() >= expires_at:
            continue
        try:
            staff = await dash.store.staff_by_id(who.staff.id)
        except Exception as exc:  # the database is down: check again later
            log.warning("socket account re-check failed", staff_id=who.staff.id, error=repr(exc))
            continue
        if staff is None or grant(dash, staff) != granted:
            log.info("account changed; closing its socket", staff_id=who.staff.id)
            client.stop(CLOSE_UNAUTHORIZED, "account changed")
            return


def too_slow(dash: Dashboard, client: WsClient) -> None:
    dash.slow_drops.labels(client.kind).inc()
    log.warning(
        "socket too slow; closing it with 4008",
        socket=client.kind,
        staff_id=client.staff_id,
        queued=client.queue.qsize(),
    )


def new_client(dash: Dashboard, ws: WebSocket, kind: str, who: Principal) -> WsClient:
    return WsClient(
        ws,
        kind=kind,
        staff_id=who.staff.id,
        full_numbers=who.viewer.full_numbers,
        queue_size=dash.settings.ws_send_queue,
        on_too_slow=partial(too_slow, dash),
        expires_at=who.claims.expires_at,
    )


async def run_client(
    dash: Dashboard,
    client: WsClient,
    who: Principal,
    producer: Coroutine[Any, Any, None] | None = None,
) -> None:
    """Serve ``client`` (guarded) until it closes, counted in the clients gauge."""
    dash.ws_clients.labels(client.kind).inc()
    try:
        code = await client.serve(producer, guard(dash, client, who))
    finally:
        dash.ws_clients.labels(client.kind).dec()
    if code == CLOSE_TOO_SLOW:
        log.info("slow socket closed", socket=client.kind, staff_id=client.staff_id)


@router.websocket("/ws/sales")
async def ws_sales(ws: WebSocket, dash: Dash) -> None:
    who = await ws_principal(dash, ws)
    if who is None:
        return
    client = new_client(dash, ws, "sales", who)
    staff = [staff_json(s, who.viewer) for s in await dash.store.list_staff()]
    start, _, _ = await dash.store.today_bounds()
    # No await from the snapshot to joining the hub: every event after the snapshot
    # reaches this client, none before it.
    snapshot = who.viewer.mask(dash.snapshot(staff, start.timestamp()))
    client.offer(json.dumps(snapshot, separators=(",", ":")))
    dash.hub.clients.add(client)
    try:
        await run_client(dash, client, who)
    finally:
        dash.hub.clients.discard(client)


async def replay_then_live(client: WsClient, reader: EventReader) -> None:
    """Replay at the client's pace (put waits for room), then live without waiting
    (offer: a full queue closes the socket with 4008)."""
    try:
        caught_up = await reader.open() == 0
        while True:
            got = await reader.fetch(timeout_s=1.0)
            for stored in got:
                frame = event_frame(stored.seq, stored.event)
                if not caught_up:
                    await client.put(frame)
                elif not client.offer(frame):
                    return
            if not got or reader.pending == 0:
                caught_up = True
    finally:
        await reader.close()


@router.websocket("/ws/{session_id}")
async def ws_call(ws: WebSocket, session_id: str, dash: Dash) -> None:
    who = await ws_principal(dash, ws)
    if who is None:
        return
    try:
        subject = subjects.events(session_id)
    except ValueError:
        await close_socket(ws, CLOSE_BAD_REQUEST, "invalid session id")
        return
    client = new_client(dash, ws, "call", who)
    reader = EventReader(dash.bus.js, subject, batch=dash.settings.events_batch)
    dash.call_clients.add(client)
    try:
        await run_client(dash, client, who, replay_then_live(client, reader))
    finally:
        dash.call_clients.discard(client)
