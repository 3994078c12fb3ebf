"""The dashboards' WebSockets against real NATS/JetStream and real WebSocket clients:
a late joiner gets the call's events so far, then live ones, in order and without
duplicates; the sales socket's snapshot and live frames; the slow-client policy; a
restarted dashboard still knows the live calls."""

from __future__ import annotations

import asyncio
import json
import socket

import websockets
from dash_testkit import MANAGER, SALES, Dash, close_code, metric, recv_json, recv_until

from dealerline_common import subjects
from dealerline_common.messages import (
    CallEndedEvent,
    CallStartedEvent,
    EscalationStatus,
    HumanCallStatus,
    HumanStatusEvent,
    StateUpdateEvent,
    StreamStartedEvent,
    TranscriptEvent,
)


def said(sid: str, i: int, text: str = "") -> TranscriptEvent:
    return TranscriptEvent(
        session_id=sid, role="user" if i % 2 else "assistant", text=text or f"turn {i}"
    )


async def test_late_joiner_gets_the_call_so_far_then_live_in_order_without_duplicates(
    dash: Dash,
) -> None:
    sid = "sess_latejoiner"
    other = "sess_othercall"
    await dash.publish_event(subjects.events(sid), CallStartedEvent(session_id=sid, call_sid="CA1"))
    await dash.publish_event(
        subjects.events(sid), StreamStartedEvent(session_id=sid, stream_sid="MZ1")
    )
    for i in range(20):
        await dash.publish_event(subjects.events(sid), said(sid, i))
        await dash.publish_event(subjects.events(other), said(other, i))  # not this call's
    # Something no reader understands sits in the stream too: it is skipped.
    await dash.publish_event(subjects.events(sid), b'{"type": "dealerline.event.unknown.v9"}')
    await dash.publish_event(subjects.events(sid), b"not json")

    # Joins while the call goes on: events keep coming during the replay.
    async def keep_talking() -> None:
        for i in range(20, 60):
            await dash.publish_event(subjects.events(sid), said(sid, i))
            await asyncio.sleep(0.005)

    talker = asyncio.create_task(keep_talking())
    await asyncio.sleep(0.05)
    ws = await dash.ws(f"/ws/{sid}")
    try:
        await talker
        await dash.publish_event(
            subjects.events(sid), CallEndedEvent(session_id=sid, reason="hangup")
        )
        frames = await recv_until(ws, 2 + 60 + 1)
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(set(seqs)), "strictly increasing stream sequence, no repeats"
        assert [f["type"] for f in frames[:2]] == ["call_started", "stream_started"]
        assert [f["data"]["text"] for f in frames[2:-1]] == [f"turn {i}" for i in range(60)]
        assert frames[-1]["type"] == "call_ended" and frames[-1]["data"]["reason"] == "hangup"
        assert all(f["session_id"] == sid for f in frames)
        assert set(frames[0]) == {"seq", "type", "session_id", "at", "data"}
        with_timeout = asyncio.wait_for(ws.recv(), 0.5)
        try:
            extra = await with_timeout
        except TimeoutError:
            extra = None
        assert extra is None, f"nothing after the last event, got {extra!r}"
    finally:
        await ws.close()

    # A second late joiner after the end gets exactly the same frames.
    async with await dash.ws(f"/ws/{sid}", MANAGER) as again:
        replay = await recv_until(again, len(frames))
        assert [f["seq"] for f in replay] == seqs


async def test_per_call_socket_masks_numbers_for_sales_not_for_managers(dash: Dash) -> None:
    sid = "sess_masking"
    state = {"customer": {"id": 1, "name": "John Carter", "phone": "+14155550123"}}
    await dash.publish_event(subjects.events(sid), StateUpdateEvent(session_id=sid, state=state))
    await dash.publish_event(
        subjects.events(sid),
        TranscriptEvent(session_id=sid, role="user", text="call me on 415 555 0199 please"),
    )
    async with await dash.ws(f"/ws/{sid}", SALES) as ws:
        update, spoken = await recv_until(ws, 2)
    assert update["data"]["state"]["customer"]["phone"] == "+1*******123"
    assert update["data"]["state"]["customer"]["name"] == "John Carter"
    assert "555 0199" not in spoken["data"]["text"] and "199" in spoken["data"]["text"]
    async with await dash.ws(f"/ws/{sid}", MANAGER) as ws:
        update, spoken = await recv_until(ws, 2)
    assert update["data"]["state"]["customer"]["phone"] == "+14155550123"
    assert spoken["data"]["text"] == "call me on 415 555 0199 please"
    async with await dash.ws("/ws/not.a.session", SALES) as bad:
        assert await close_code(bad) == 4400


async def test_sales_socket_snapshot_then_every_call_and_escalation(dash: Dash) -> None:
    sid = "sess_salesview"
    await dash.publish_event(
        subjects.events(sid),
        CallStartedEvent(session_id=sid, call_sid="CA9", from_masked="+1*******123"),
    )
    await _until(lambda: sid in dash.service.dashboard.view.calls)
    async with await dash.ws("/ws/sales") as ws:
        snapshot = await recv_json(ws)
        assert snapshot["type"] == "snapshot" and "seq" not in snapshot
        live = snapshot["data"]["live_calls"]
        assert [c["session_id"] for c in live] == [sid]
        assert live[0]["state"] == "ai" and live[0]["handler"] == "AI"
        assert live[0]["caller"] == "+1*******123"
        assert {s["name"] for s in snapshot["data"]["staff"]} >= {"Maria Lopez", "Priya Shah"}

        # A ring from the escalation service (the core subject) and its event copy.
        ringing = dict(
            session_id=sid, status=HumanCallStatus.RINGING, staff_name="Maria Lopez", attempt=1
        )
        await dash.bus.publish(subjects.escalation(sid), EscalationStatus(task_id="t1", **ringing))
        frame = await recv_json(ws)
        assert frame["type"] == "escalation" and frame["data"]["status"] == "ringing"
        assert frame["data"]["staff_name"] == "Maria Lopez"
        seq = await dash.publish_event(
            subjects.events(sid), HumanStatusEvent(task_id="t1", **ringing)
        )
        frame = await recv_json(ws)
        assert frame["type"] == "human_status" and frame["seq"] == seq
        # The same news twice is one escalation change: the next frame is the next event.
        other = "sess_second"
        seq2 = await dash.publish_event(
            subjects.events(other), CallStartedEvent(session_id=other, call_sid="CA10")
        )
        frame = await recv_json(ws)
        assert (frame["type"], frame["seq"], frame["session_id"]) == ("call_started", seq2, other)

        live = {c["session_id"]: c for c in (await dash.get("/api/calls/live")).json()}
        assert live[sid]["state"] == "escalating"
        assert live[sid]["escalation"]["staff_name"] == "Maria Lopez"
        escalations = (await dash.get("/api/escalations")).json()
        assert [e["session_id"] for e in escalations] == [sid]
        assert escalations[0]["final"] is False and escalations[0]["caller"] == "+1*******123"

        await dash.bus.publish(
            subjects.escalation(sid),
            EscalationStatus(
                task_id="t1",
                session_id=sid,
                status=HumanCallStatus.IN_CONFERENCE,
                staff_name="Maria Lopez",
                attempt=1,
            ),
        )
        frame = await recv_json(ws)
        assert frame["data"]["status"] == "in_conference"
        live = {c["session_id"]: c for c in (await dash.get("/api/calls/live")).json()}
        assert (live[sid]["state"], live[sid]["handler"]) == ("in_conference", "Maria Lopez")

        await dash.publish_event(
            subjects.events(sid), CallEndedEvent(session_id=sid, reason="hangup")
        )
        frame = await recv_json(ws)
        assert frame["type"] == "call_ended"
        live = {c["session_id"]: c for c in (await dash.get("/api/calls/live")).json()}
        assert live[sid]["state"] == "ended"


async def test_a_slow_client_is_closed_with_4008_and_the_others_keep_up(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(ws_send_queue=64, events_batch=16)
    sid = "sess_slowclient"
    big = "x" * 32_000
    fast_sales = await dash.ws("/ws/sales")
    assert (await recv_json(fast_sales))["type"] == "snapshot"
    fast_call = await dash.ws(f"/ws/{sid}")
    # The slow ones read nothing at all, buffer almost nothing on their side, and take
    # the frames uncompressed (the text compresses to nothing).
    slow = {"max_queue": 1, "compression": None}
    slow_sales = await dash.ws("/ws/sales", sock=tiny_socket(dash), **slow)
    slow_call = await dash.ws(f"/ws/{sid}", sock=tiny_socket(dash), **slow)

    received: dict[str, list[int]] = {"sales": [], "call": []}

    async def read(ws: websockets.ClientConnection, key: str, count: int) -> None:
        while len(received[key]) < count:
            frame = json.loads(await ws.recv())
            if frame.get("session_id") == sid and "seq" in frame:
                received[key].append(frame["seq"])

    count = 400
    readers = [
        asyncio.create_task(read(fast_sales, "sales", count)),
        asyncio.create_task(read(fast_call, "call", count)),
    ]
    published = []
    for i in range(count):
        published.append(await dash.publish_event(subjects.events(sid), said(sid, i, big)))
    async with asyncio.timeout(30):
        await asyncio.gather(*readers)
    assert received["sales"] == published
    assert received["call"] == published

    await _until_async(
        lambda: metric(dash.http, "dealerline_dashboard_ws_slow_drops_total"), 2, timeout_s=15
    )
    assert await close_code(slow_sales) == 4008
    assert slow_sales.close_reason == "too slow"
    assert await close_code(slow_call) == 4008
    # The fast ones are still served.
    seq = await dash.publish_event(subjects.events(sid), said(sid, 0, "still here"))
    assert (await recv_json(fast_sales))["seq"] == seq
    assert (await recv_json(fast_call))["seq"] == seq
    await fast_sales.close()
    await fast_call.close()


async def test_a_restarted_dashboard_knows_the_calls_still_live(start_dash) -> None:  # type: ignore[no-untyped-def]
    first: Dash = await start_dash()
    live, over = "sess_stilllive", "sess_finished"
    for sid in (live, over):
        await first.publish_event(
            subjects.events(sid), CallStartedEvent(session_id=sid, call_sid=f"CA-{sid}")
        )
        await first.publish_event(subjects.events(sid), said(sid, 1))
    await first.publish_event(subjects.events(over), CallEndedEvent(session_id=over, reason="x"))
    await first.publish_event(
        subjects.events(live),
        HumanStatusEvent(session_id=live, status=HumanCallStatus.CALLING, task_id="t9", attempt=1),
    )
    second: Dash = await start_dash()  # a new replica (or a restart) replays the stream
    calls = {c["session_id"]: c for c in (await second.get("/api/calls/live")).json()}
    assert calls[live]["state"] == "escalating"
    assert calls[live]["call_sid"] == f"CA-{live}"
    assert calls[over]["state"] == "ended"
    assert [e["session_id"] for e in (await second.get("/api/escalations")).json()] == [live]


def tiny_socket(dash: Dash) -> socket.socket:
    """A client socket with a small fixed receive buffer (no autotuning to megabytes), so
    a client that does not read backs up the server after a few frames."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    sock.connect(("127.0.0.1", dash.service.http.port))
    sock.setblocking(False)
    return sock


async def _until(check, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def _until_async(read, at_least: float, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while await read() < at_least:
            await asyncio.sleep(0.05)


async def test_readers_survive_losing_their_consumers(dash: Dash) -> None:
    """A NATS restart or a long outage removes the ephemeral consumers: every reader makes
    a new one after the last sequence it sent, so nothing repeats and nothing is lost."""
    sid = "sess_consumerlost"
    first = await dash.publish_event(subjects.events(sid), said(sid, 0))
    sales = await dash.ws("/ws/sales")
    call = await dash.ws(f"/ws/{sid}")
    try:
        assert (await recv_json(sales))["type"] == "snapshot"
        assert (await recv_json(call))["seq"] == first
        consumers = await dash.bus.js.consumers_info(subjects.STREAM_EVENTS)
        assert len(consumers) >= 2  # the live feed's and this socket's
        for info in consumers:
            await dash.bus.js.delete_consumer(subjects.STREAM_EVENTS, info.name)
        later = [await dash.publish_event(subjects.events(sid), said(sid, i)) for i in (1, 2, 3)]
        assert [f["seq"] for f in await recv_until(call, 3)] == later
        assert [f["seq"] for f in await recv_until(sales, 3)] == later
    finally:
        await sales.close()
        await call.close()
