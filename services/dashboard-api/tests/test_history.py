"""Call history, one call, today's appointments and callbacks, from the real database
(SQLite and PostgreSQL), and a live call's detail from its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dash_testkit import MANAGER, SALES, SERVICE, Dash
from sqlalchemy import select

from dealerline_common import subjects
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import (
    Appointment,
    Call,
    CallbackRequest,
    Customer,
    ServiceBay,
    ServiceType,
    TranscriptTurn,
)
from dealerline_common.db.testing import DATABASE_KINDS
from dealerline_common.messages import (
    CallStartedEvent,
    LatencyEvent,
    StateUpdateEvent,
    TranscriptEvent,
    TurnTimings,
)

NOW = datetime.now(UTC).replace(microsecond=0)


async def add_calls(db_url: str) -> None:
    """Three finished calls, as the aftercall service records them."""
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            calls = [
                Call(
                    session_id="sess_oilchange",
                    call_sid="CA1",
                    caller_phone="+14155550123",
                    started_at=NOW - timedelta(hours=3),
                    ended_at=NOW - timedelta(hours=3) + timedelta(seconds=95),
                    duration_s=95.0,
                    outcome="booked",
                    summary="Booked an oil change for Tuesday at nine.",
                    customer_name="John Carter",
                    end_reason="hangup",
                    barge_ins=1,
                    latency=[{"turn_id": "t1", "stages_ms": {"total": 812.0}}],
                    appointments=[{"action": "booked", "appointment_id": 1}],
                    turns=[
                        TranscriptTurn(
                            role="agent",
                            text="Sunrise Motors, how can I help?",
                            at=NOW - timedelta(hours=3),
                            turn_id="t0",
                        ),
                        TranscriptTurn(
                            role="caller",
                            text="I need an oil change, call me back on 415 555 0123",
                            at=NOW - timedelta(hours=3) + timedelta(seconds=5),
                            turn_id="t1",
                        ),
                    ],
                ),
                Call(
                    session_id="sess_brakes",
                    caller_phone="+14155550188",
                    started_at=NOW - timedelta(hours=2),
                    outcome="escalated",
                    summary="Asked about squeaky brakes; handed to Maria.",
                    customer_name="Ana Ruiz",
                    escalation=[{"status": "in_conference", "staff_name": "Maria Lopez"}],
                    turns=[
                        TranscriptTurn(
                            role="caller",
                            text="My brakes squeal 100% of the time",
                            at=NOW - timedelta(hours=2),
                            turn_id="t1",
                        )
                    ],
                ),
                Call(
                    session_id="sess_hours",
                    caller_phone=None,
                    started_at=NOW - timedelta(hours=1),
                    outcome="answered",
                    summary="Asked for the opening hours.",
                ),
            ]
            session.add_all(calls)
    finally:
        await engine.dispose()


def sessions_of(page: dict) -> list[str]:  # type: ignore[type-arg]
    return [c["session_id"] for c in page["items"]]


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_call_history_search_and_one_call(dash: Dash) -> None:
    await add_calls(dash.db_url)
    page = (await dash.get("/api/calls")).json()
    assert sessions_of(page) == ["sess_hours", "sess_brakes", "sess_oilchange"]  # newest first
    assert page["total"] == 3

    async def search(email: str = SALES, **params: str) -> list[str]:
        r = await dash.get("/api/calls", email, params=params)
        assert r.status_code == 200, r.text
        return sessions_of(r.json())

    assert await search(q="oil change") == ["sess_oilchange"]  # summary and transcript
    assert await search(q="SQUEAL") == ["sess_brakes"]  # transcript text, any case
    assert await search(q="ana ruiz") == ["sess_brakes"]  # caller name
    # Digits are a manager's search (see test_sales_users_never_see_a_whole_number).
    assert await search(MANAGER, q="(415) 555-0188") == ["sess_brakes"]  # phone digits
    assert await search(MANAGER, q="100%") == ["sess_brakes"]  # % is not a wildcard
    assert await search(q="nothing like this") == []
    assert await search(outcome="escalated") == ["sess_brakes"]
    assert (await dash.get("/api/calls", params={"outcome": "bogus"})).status_code == 422
    two = (await dash.get("/api/calls", params={"limit": 2, "offset": 1})).json()
    assert sessions_of(two) == ["sess_brakes", "sess_oilchange"] and two["total"] == 3

    as_sales = (await dash.get("/api/calls/sess_oilchange", SALES)).json()
    assert as_sales["caller"] == "+1*******123"
    assert [t["role"] for t in as_sales["turns"]] == ["agent", "caller"]
    assert "555 0123" not in as_sales["turns"][1]["text"]
    assert as_sales["barge_ins"] == 1 and as_sales["end_reason"] == "hangup"
    assert as_sales["latency"][0]["stages_ms"]["total"] == 812.0
    assert as_sales["outcome"] == "booked" and as_sales["live"] is False
    assert as_sales["started_at"] == pytest.approx((NOW - timedelta(hours=3)).timestamp())
    as_manager = (await dash.get("/api/calls/sess_oilchange", MANAGER)).json()
    assert as_manager["caller"] == "+14155550123"
    assert as_manager["turns"][1]["text"].endswith("415 555 0123")
    assert (await dash.get("/api/calls/sess_nosuchcall")).status_code == 404


async def test_a_live_call_is_described_from_its_events(dash: Dash) -> None:
    sid = "sess_livedetail"
    for event in (
        CallStartedEvent(session_id=sid, call_sid="CA7", from_masked="+1*******123"),
        StateUpdateEvent(session_id=sid, state={"customer": {"name": "John Carter"}}),
        TranscriptEvent(session_id=sid, role="user", text="Hi there"),
        TranscriptEvent(session_id=sid, role="assistant", text="Hello John", interrupted=True),
        LatencyEvent(
            session_id=sid, turn_id="t1", timings=TurnTimings(), stages_ms={"total": 900.0}
        ),
    ):
        await dash.publish_event(subjects.events(sid), event)
    await _until_live(dash, sid)
    detail = (await dash.get(f"/api/calls/{sid}")).json()
    assert detail["live"] is True and detail["customer_name"] == "John Carter"
    assert [(t["role"], t["text"]) for t in detail["turns"]] == [
        ("caller", "Hi there"),
        ("agent", "Hello John"),
    ]
    assert detail["barge_ins"] == 1 and detail["latency"][0]["stages_ms"] == {"total": 900.0}
    assert detail["caller"] == "+1*******123" and detail["outcome"] is None


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_todays_appointments_in_the_dealership_timezone(dash: Dash) -> None:
    engine = create_engine_from_url(dash.db_url)
    tz = ZoneInfo("America/Los_Angeles")  # the demo dealership's
    today = datetime.now(tz).date()
    try:
        async with session_factory(engine)() as session, session.begin():
            customer = (await session.execute(select(Customer).limit(1))).scalar_one()
            service = (await session.execute(select(ServiceType).limit(1))).scalar_one()
            bay = (await session.execute(select(ServiceBay).limit(1))).scalar_one()
            for day, hour in ((today, 11), (today, 9), (today + timedelta(days=1), 9)):
                start = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
                session.add(
                    Appointment(
                        customer_id=customer.id,
                        service_type_id=service.id,
                        bay_id=bay.id,
                        start_at=start,
                        end_at=start + timedelta(minutes=45),
                        vehicle_description="a blue hatchback",
                    )
                )
            names = (customer.name, service.name, bay.name)
    finally:
        await engine.dispose()
    items = (await dash.get("/api/appointments/today", SERVICE)).json()
    assert [datetime.fromisoformat(a["start"]).hour for a in items] == [9, 11]
    assert all(datetime.fromisoformat(a["start"]).date() == today for a in items)
    first = items[0]
    assert (first["customer_name"], first["service"], first["bay"]) == names
    assert first["vehicle"] == "a blue hatchback" and first["status"] == "booked"


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_callbacks_are_listed_and_marked_done_once(dash: Dash) -> None:
    engine = create_engine_from_url(dash.db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            rows = [
                CallbackRequest(
                    session_id="sess_cb1",
                    name="John Carter",
                    phone="+14155550123",
                    preferred_window="tomorrow morning",
                    reason="price of new tyres",
                ),
                CallbackRequest(
                    session_id="sess_cb2",
                    name="Ana Ruiz",
                    phone="+14155550188",
                    preferred_window="after 5pm",
                    reason="trade-in value",
                ),
            ]
            session.add_all(rows)
            await session.flush()
            first_id = rows[0].id
    finally:
        await engine.dispose()
    open_ = (await dash.get("/api/callbacks", params={"status": "open"})).json()
    assert {c["session_id"] for c in open_} == {"sess_cb1", "sess_cb2"}
    assert all("*" in c["phone"] for c in open_)  # masked for sales
    assert "+14155550123" in {
        c["phone"] for c in (await dash.get("/api/callbacks", MANAGER)).json()
    }

    done = await dash.post(f"/api/callbacks/{first_id}/done", SALES)
    assert done.status_code == 200, done.text
    me = (await dash.get("/api/me", SALES)).json()
    body = done.json()
    assert body["status"] == "done" and body["done_by"] == me["id"]
    assert body["done_by_name"] == "Maria Lopez" and body["done_at"] is not None
    again = (await dash.post(f"/api/callbacks/{first_id}/done", MANAGER)).json()
    assert (again["done_by"], again["done_at"]) == (me["id"], body["done_at"])  # idempotent
    assert [
        c["session_id"]
        for c in (await dash.get("/api/callbacks", params={"status": "open"})).json()
    ] == ["sess_cb2"]
    assert [
        c["id"] for c in (await dash.get("/api/callbacks", params={"status": "done"})).json()
    ] == [first_id]
    assert (await dash.post("/api/callbacks/999999/done", SALES)).status_code == 404
    assert (await dash.get("/api/callbacks", params={"status": "lost"})).status_code == 422


async def _until_live(dash: Dash, sid: str) -> None:
    import asyncio

    async with asyncio.timeout(5):
        while sid not in dash.service.dashboard.view.calls:
            await asyncio.sleep(0.02)
