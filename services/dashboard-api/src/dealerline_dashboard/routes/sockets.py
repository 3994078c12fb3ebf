"""The two WebSockets: ``/ws/sales`` (a snapshot, then everything from the live feed) and
``/ws/{session_id}`` (one call's events from its first, at the client's pace, then live).
Both take the token as ``?token=`` and close with 4401 without a good one."""

import json
from collections.abc import Coroutine
from functools import partial
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.websockets import WebSocket

from dealerline_common import subjects
from dealerline_common.logs import get_logger

from ..dashboard import Dashboard
from ..events import EventReader, event_frame
from ..sockets import CLOSE_BAD_REQUEST, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, WsClient, close_socket
from ..store import staff_json
from .deps import Dash, Principal, principal_of

log = get_logger(__name__)

router = APIRouter()


async def ws_principal(dash: Dashboard, ws: WebSocket) -> Principal | None:
    """Accept the socket; its staff member, or None once it is closed with 4401."""
    await ws.accept()
    try:
        return await principal_of(dash, ws.query_params.get("token"))
    except HTTPException:
        await close_socket(ws, CLOSE_UNAUTHORIZED, "unauthorized")
        return None


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
    )


async def run_client(
    dash: Dashboard, client: WsClient, producer: Coroutine[Any, Any, None] | None = None
) -> None:
    """Serve ``client`` until it closes, counted in the clients gauge."""
    dash.ws_clients.labels(client.kind).inc()
    try:
        code = await client.serve(producer)
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
    client.offer(json.dumps(dash.snapshot(staff, start.timestamp()), separators=(",", ":")))
    dash.hub.clients.add(client)
    try:
        await run_client(dash, client)
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
        await run_client(dash, client, replay_then_live(client, reader))
    finally:
        dash.call_clients.discard(client)
