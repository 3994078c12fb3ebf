"""The sockets follow the token and the account, and the token never travels in a URL:
against the real service (two replicas over one database where it matters), real NATS
and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json

import websockets
from dash_testkit import (
    MANAGER,
    SALES,
    Dash,
    close_code,
    recv_json,
    send_token,
)
from sqlalchemy import delete, update

from dealerline_common import subjects
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_common.messages import CallStartedEvent, TranscriptEvent
from dealerline_dashboard.app import WS_MAX_MESSAGE_BYTES

SID = "sess_guarded"


async def opened(dash: Dash, path: str, email: str = SALES) -> websockets.ClientConnection:
    """A socket on ``path`` that is being served (its first frame has come)."""
    ws = await dash.ws(path, email)
    first = await recv_json(ws)
    assert first["type"] in ("snapshot", "call_started"), first
    return ws


async def change_staff(db_url: str, email: str, **values: object) -> None:
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await session.execute(update(Staff).where(Staff.email == email).values(**values))
    finally:
        await engine.dispose()


async def test_a_socket_closes_when_its_token_expires(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(token_ttl_s=4)
    await dash.publish_event(subjects.events(SID), CallStartedEvent(session_id=SID, call_sid="CA1"))
    sales = await opened(dash, "/ws/sales")
    call = await opened(dash, f"/ws/{SID}")

    async def keep_talking() -> None:  # frames keep coming: they do not keep it open
        for i in range(10_000):
            await dash.publish_event(
                subjects.events(SID), TranscriptEvent(session_id=SID, role="user", text=f"{i}")
            )
            await asyncio.sleep(0.05)

    talker = asyncio.create_task(keep_talking())
    try:
        assert await close_code(sales, timeout_s=20) == 4401
        assert sales.close_reason == "token expired"
        assert await close_code(call, timeout_s=20) == 4401
    finally:
        talker.cancel()
    # The same token opens nothing any more.
    ws = await websockets.connect(dash.ws_base + "/ws/sales")
    await send_token(ws, await dash.token(SALES))
    assert await close_code(ws) == 4401


async def test_a_role_change_closes_the_sockets_at_once(dash: Dash) -> None:
    await dash.publish_event(subjects.events(SID), CallStartedEvent(session_id=SID, call_sid="CA1"))
    sales = await opened(dash, "/ws/sales")
    call = await opened(dash, f"/ws/{SID}")
    manager = await opened(dash, "/ws/sales", MANAGER)
    maria = (await dash.get("/api/me", SALES)).json()["id"]
    # Her socket was opened with numbers masked; as a manager it would not be.
    r = await dash.http.patch(
        f"/api/staff/{maria}", headers=await dash.auth(MANAGER), json={"role": "manager"}
    )
    assert r.status_code == 200, r.text
    assert await close_code(sales) == 4401
    assert sales.close_reason == "account changed"
    assert await close_code(call) == 4401
    # Somebody else's socket is not touched; a hunt-order change is no reason either.
    r = await dash.http.patch(
        f"/api/staff/{maria}", headers=await dash.auth(MANAGER), json={"hunt_order": 3}
    )
    assert r.status_code == 200
    again = await opened(dash, "/ws/sales", SALES)  # her old token, the new role
    await dash.publish_event(
        subjects.events(SID), TranscriptEvent(session_id=SID, role="user", text="hi")
    )
    assert (await recv_json(manager))["type"] == "transcript"
    assert (await recv_json(again))["type"] == "transcript"
    await again.close()
    await manager.close()


async def test_another_replica_closes_sockets_of_a_changed_account(start_dash) -> None:  # type: ignore[no-untyped-def]
    first: Dash = await start_dash(ws_recheck_s=0.5)
    second: Dash = await start_dash(ws_recheck_s=0.5)
    on_first = await opened(first, "/ws/sales")
    maria = (await first.get("/api/me", SALES)).json()["id"]
    # The manager demotes her on the other replica: this one hears of it on its re-check.
    r = await second.http.patch(
        f"/api/staff/{maria}", headers=await second.auth(MANAGER), json={"role": "service"}
    )
    assert r.status_code == 200
    assert await close_code(on_first) == 4401

    # Her login disabled (the password removed): sockets close and the token is refused.
    on_first = await opened(first, "/ws/sales")
    await change_staff(first.db_url, SALES, password_hash=None)
    assert await close_code(on_first) == 4401
    assert (await first.get("/api/me", SALES)).status_code == 401

    # Removed from the staff table: the same.
    on_first = await opened(first, "/ws/sales", MANAGER)
    engine = create_engine_from_url(first.db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await session.execute(delete(Staff).where(Staff.email == MANAGER))
    finally:
        await engine.dispose()
    assert await close_code(on_first) == 4401


async def test_a_token_in_the_url_is_refused(dash: Dash) -> None:
    token = await dash.token(SALES)
    for path in ("/ws/sales", f"/ws/{SID}"):
        async with websockets.connect(f"{dash.ws_base}{path}?token={token}") as ws:
            assert await close_code(ws) == 4401
            assert ws.close_reason == "send the token as the first message"


async def test_a_huge_message_before_login_closes_the_socket_unread(dash: Dash) -> None:
    """A socket is accepted before it is authorised: one message is capped at 64 KiB (uvicorn
    closes it with 1009 before holding it), not uvicorn's 16 MiB."""
    async with websockets.connect(dash.ws_base + "/ws/sales", max_size=None) as ws:
        await ws.send("x" * (WS_MAX_MESSAGE_BYTES + 1))
        assert await close_code(ws) == 1009
    ws = await dash.ws("/ws/sales")  # the next socket is served as ever
    try:
        assert (await recv_json(ws))["type"] == "snapshot"
    finally:
        await ws.close()


async def test_the_first_message_must_carry_the_token_in_time(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(ws_auth_timeout_s=0.5)
    token = await dash.token(SALES)
    firsts = [
        None,  # nothing at all: closed once the wait is over
        "not json",
        json.dumps({"type": "hello", "token": token}),
        '{"type": "auth", "token": 42}',
        json.dumps({"type": "auth", "token": token, "pad": "x" * 10_000}),  # too long
    ]
    for first in firsts:
        async with websockets.connect(dash.ws_base + "/ws/sales") as ws:
            if first is not None:
                await ws.send(first)
            assert await close_code(ws) == 4401, first
    async with websockets.connect(dash.ws_base + "/ws/sales") as ws:
        await send_token(ws, token)
        assert (await recv_json(ws))["type"] == "snapshot"
        # Anything the client sends afterwards is ignored; the socket goes on.
        await ws.send('{"type": "auth", "token": "garbage"}')
        await dash.publish_event(
            subjects.events(SID), CallStartedEvent(session_id=SID, call_sid="CA2")
        )
        assert (await recv_json(ws))["type"] == "call_started"
