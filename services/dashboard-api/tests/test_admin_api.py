"""The admin API against the real service and a real database seeded with the demo
dealership: only managers may use it, every change is in the database at once (where the
agent reads it on its next call) and audited in the log with the manager's staff id and
no whole phone number, bad input is a 422 that says what is wrong, and rows other rows
still need are refused with a 409 that says what to do instead."""

from __future__ import annotations

import asyncio
from datetime import date, time
from typing import Any

import httpx
import pytest
from dash_testkit import MANAGER, SALES, SERVICE, Dash, app_routes
from fastapi.routing import APIRoute
from nats.aio.msg import Msg
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from structlog.testing import capture_logs

from dealerline_common import subjects
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import (
    CallbackRequest,
    DealershipProfile,
    FaqEntry,
    Holiday,
    OpeningHours,
    ServiceBay,
    ServiceType,
    Staff,
)
from dealerline_common.db.testing import DATABASE_KINDS
from dealerline_common.messages import StaffDutyChanged, loads

MANAGER_PHONE = "+14155550113"


async def req(
    dash: Dash, method: str, path: str, body: Any = None, email: str = MANAGER
) -> httpx.Response:
    return await dash.http.request(method, path, headers=await dash.auth(email), json=body)


async def one(db_url: str, stmt: Any) -> Any:
    """The first row (ORM object) ``stmt`` finds, read in a fresh connection."""
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session:
            return (await session.execute(stmt)).scalars().first()
    finally:
        await engine.dispose()


async def count(db_url: str, model: Any, *where: Any) -> int:
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session:
            stmt = select(func.count()).select_from(model).where(*where)
            return int((await session.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def manager_id(dash: Dash) -> int:
    return int((await req(dash, "GET", "/api/me")).json()["id"])


def detail(r: httpx.Response) -> str:
    """A 4xx answer's message(s) as one string."""
    body = r.json()["detail"]
    return body if isinstance(body, str) else " | ".join(str(e["msg"]) for e in body)


async def test_only_managers_may_use_the_admin_api(dash: Dash) -> None:
    routes = [
        (method, route.path)
        for route in app_routes(dash.service.app)
        if isinstance(route, APIRoute) and route.path.startswith("/api/admin/")
        for method in sorted(route.methods)
    ]
    assert len(routes) >= 24, routes
    for method, path in routes:
        url = path.replace("{weekday}", "1")
        url = url.replace("{holiday_id}", "1").replace("{bay_id}", "1")
        url = url.replace("{service_id}", "1").replace("{staff_id}", "1").replace("{faq_id}", "1")
        for email in (SALES, SERVICE):
            r = await req(dash, method, url, {}, email)
            assert r.status_code == 403, (method, path, email, r.status_code)
            assert r.json() == {"detail": "only a manager may do this"}
    # Nothing was changed by the refused requests; a manager reads the same tables.
    assert (await req(dash, "GET", "/api/admin/profile")).json()["name"] == "Sunrise Motors"
    assert len((await req(dash, "GET", "/api/admin/staff")).json()) == 4
    assert len((await req(dash, "GET", "/api/admin/faq")).json()) > 5


async def test_the_profile_is_changed_in_the_database_and_audited(dash: Dash) -> None:
    me = await manager_id(dash)
    with capture_logs() as logs:
        r = await req(
            dash,
            "PATCH",
            "/api/admin/profile",
            {"name": "Sunset Motors", "phone": "(650) 253-0000", "assistant_name": "Mia"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "+16502530000" and r.json()["timezone"] == "America/Los_Angeles"
    row = await one(dash.db_url, select(DealershipProfile))
    assert (row.name, row.phone, row.assistant_name) == ("Sunset Motors", "+16502530000", "Mia")
    (line,) = [e for e in logs if e["event"] == "admin change"]
    assert (line["by"], line["action"], line["entity"]) == (me, "update", "profile")
    assert line["changes"]["name"] == "Sunset Motors"
    assert "6502530000" not in str(logs) and line["changes"]["phone"] == "+1*******000"

    bad = {
        "timezone": ("Mars/Olympus", "not a timezone"),
        "phone": ("555", "phone number"),
        "service_desk_email": ("service at sunset", "not an email address"),
        "voice": ("English please", "not a Kokoro voice id"),
        "name": ("  ", "must not be blank"),
        "colour": ("red", "Extra inputs are not permitted"),
    }
    for field, (value, words) in bad.items():
        r = await req(dash, "PATCH", "/api/admin/profile", {field: value})
        assert r.status_code == 422, (field, r.text)
        assert words in detail(r), (field, detail(r))
    r = await req(dash, "PATCH", "/api/admin/profile", {"name": None})
    assert r.status_code == 422 and detail(r) == "name cannot be empty"
    cleared = await req(dash, "PATCH", "/api/admin/profile", {"phone": "", "voice": "af_heart"})
    assert cleared.status_code == 200 and cleared.json()["phone"] is None
    row = await one(dash.db_url, select(DealershipProfile))
    assert (row.name, row.phone, row.voice) == ("Sunset Motors", None, "af_heart")


async def test_opening_hours_are_validated_and_set_per_weekday(dash: Dash) -> None:
    hours = (await req(dash, "GET", "/api/admin/hours")).json()
    assert [h["day"] for h in hours][:2] == ["Monday", "Tuesday"]
    assert hours[0] == {
        "weekday": 0,
        "day": "Monday",
        "closed": False,
        "opens_at": "07:30",
        "closes_at": "18:00",
    }
    assert hours[6]["closed"] is True and hours[6]["opens_at"] is None

    backwards = {"opens_at": "17:00", "closes_at": "08:00"}
    r = await req(dash, "PUT", "/api/admin/hours/0", backwards)
    assert r.status_code == 422
    assert "closes_at (08:00) must be after opens_at (17:00)" in detail(r)
    r = await req(dash, "PUT", "/api/admin/hours/0", {"opens_at": "09:00"})
    assert r.status_code == 422 and "needs both opens_at and closes_at" in detail(r)
    assert (await req(dash, "PUT", "/api/admin/hours/7", {"closed": True})).status_code == 422

    r = await req(dash, "PUT", "/api/admin/hours/0", {"opens_at": "08:15", "closes_at": "17:30"})
    assert r.status_code == 200 and r.json()["opens_at"] == "08:15"
    monday = await one(dash.db_url, select(OpeningHours).where(OpeningHours.weekday == 0))
    assert (monday.opens_at, monday.closes_at, monday.closed) == (time(8, 15), time(17, 30), False)
    r = await req(dash, "PUT", "/api/admin/hours/6", {"opens_at": "10:00", "closes_at": "14:00"})
    assert r.json()["closed"] is False  # Sunday opens
    r = await req(dash, "PUT", "/api/admin/hours/5", {"closed": True, "opens_at": "08:00"})
    assert r.json() == {
        "weekday": 5,
        "day": "Saturday",
        "closed": True,
        "opens_at": None,
        "closes_at": None,
    }
    saturday = await one(dash.db_url, select(OpeningHours).where(OpeningHours.weekday == 5))
    assert (saturday.closed, saturday.opens_at) == (True, None)


async def test_holidays_and_faq_are_added_changed_and_removed(dash: Dash) -> None:
    r = await req(dash, "POST", "/api/admin/holidays", {"date": "2031-03-17", "name": "Stock take"})
    assert r.status_code == 201, r.text
    holiday = r.json()
    taken = await req(dash, "POST", "/api/admin/holidays", {"date": "2031-03-17", "name": "Again"})
    assert taken.status_code == 409 and "already has the date 2031-03-17" in detail(taken)
    assert (await req(dash, "POST", "/api/admin/holidays", {"date": "17/03"})).status_code == 422
    r = await req(dash, "PATCH", f"/api/admin/holidays/{holiday['id']}", {"name": "Inventory"})
    assert r.json() == {"id": holiday["id"], "date": "2031-03-17", "name": "Inventory"}
    row = await one(dash.db_url, select(Holiday).where(Holiday.date == date(2031, 3, 17)))
    assert row.name == "Inventory"
    assert (await req(dash, "DELETE", f"/api/admin/holidays/{holiday['id']}")).status_code == 204
    assert await count(dash.db_url, Holiday, Holiday.id == holiday["id"]) == 0
    gone = await req(dash, "DELETE", f"/api/admin/holidays/{holiday['id']}")
    assert gone.status_code == 404 and detail(gone) == f"no holiday with id {holiday['id']}"

    entry = {"question": "Do you sell EVs?", "answer": "Yes, three models.", "tags": ["EV", " ev"]}
    r = await req(dash, "POST", "/api/admin/faq", entry)
    assert r.status_code == 201 and r.json()["tags"] == ["ev"]
    faq_id = r.json()["id"]
    again = await req(dash, "POST", "/api/admin/faq", {**entry, "question": "do you sell evs?"})
    assert again.status_code == 409  # the same question, whatever its case
    r = await req(dash, "PATCH", f"/api/admin/faq/{faq_id}", {"answer": "Yes, four models."})
    assert r.status_code == 200
    row = await one(dash.db_url, select(FaqEntry).where(FaqEntry.id == faq_id))
    assert (row.question, row.answer, row.tags) == ("Do you sell EVs?", "Yes, four models.", ["ev"])
    r = await req(dash, "PATCH", f"/api/admin/faq/{faq_id}", {"answer": ""})
    assert r.status_code == 422 and "must not be blank" in detail(r)
    assert (await req(dash, "DELETE", f"/api/admin/faq/{faq_id}")).status_code == 204
    assert await count(dash.db_url, FaqEntry, FaqEntry.id == faq_id) == 0


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_services_and_bays_keep_their_appointments_history(dash: Dash) -> None:
    services = {s["name"]: s for s in (await req(dash, "GET", "/api/admin/services")).json()}
    bays = {b["name"]: b for b in (await req(dash, "GET", "/api/admin/bays")).json()}
    express = bays["Express Bay"]["id"]
    assert "Tire Rotation" in bays["Express Bay"]["services"]

    new = {"name": "Wiper Blades", "duration_minutes": 15, "price_min_cents": 2995}
    r = await req(dash, "POST", "/api/admin/services", {**new, "bay_ids": [express, 9999]})
    assert r.status_code == 422 and "unknown bay id(s) 9999" in detail(r)
    r = await req(dash, "POST", "/api/admin/services", {**new, "bay_ids": []})
    assert r.status_code == 422
    r = await req(dash, "POST", "/api/admin/services", {**new, "bay_ids": [express]})
    assert r.status_code == 201, r.text
    wipers = r.json()
    assert (wipers["price_max_cents"], wipers["bay_ids"], wipers["active"]) == (
        2995,
        [express],
        True,
    )
    taken = await req(dash, "POST", "/api/admin/services", {**new, "bay_ids": [express]})
    assert taken.status_code == 409 and "already has the name Wiper Blades" in detail(taken)

    rotation = services["Tire Rotation"]
    r = await req(dash, "PATCH", f"/api/admin/services/{rotation['id']}", {"price_max_cents": 100})
    assert r.status_code == 422
    assert "price_max_cents (100) must be at least price_min_cents (2495)" in detail(r)
    r = await req(
        dash,
        "PATCH",
        f"/api/admin/services/{rotation['id']}",
        {"price_min_cents": 2995, "price_max_cents": 4495, "duration_minutes": 40},
    )
    assert r.status_code == 200, r.text
    row = await one(dash.db_url, select(ServiceType).where(ServiceType.id == rotation["id"]))
    assert (row.price_min_cents, row.price_max_cents, row.duration_minutes) == (2995, 4495, 40)

    # Tire Rotation has an appointment: it stays, deactivated (the agent lists active ones).
    r = await req(dash, "DELETE", f"/api/admin/services/{rotation['id']}")
    assert r.status_code == 409 and "deactivate it instead" in detail(r)
    r = await req(dash, "PATCH", f"/api/admin/services/{rotation['id']}", {"active": False})
    assert r.json()["active"] is False
    active = await count(
        dash.db_url, ServiceType, ServiceType.active, ServiceType.name == "Tire Rotation"
    )
    assert active == 0
    assert (await req(dash, "DELETE", f"/api/admin/services/{wipers['id']}")).status_code == 204
    assert await count(dash.db_url, ServiceType, ServiceType.id == wipers["id"]) == 0

    # Bays: one with appointments stays; one an active service needs alone stays.
    r = await req(dash, "DELETE", f"/api/admin/bays/{express}")
    assert r.status_code == 409 and "appointment(s) in its history" in detail(r)
    r = await req(dash, "POST", "/api/admin/bays", {"name": "Detail Bay", "capacity": 0})
    assert r.status_code == 422
    r = await req(dash, "POST", "/api/admin/bays", {"name": "Detail Bay", "capacity": 2})
    assert r.status_code == 201
    detail_bay = r.json()["id"]
    new = {"name": "Hand Wash", "duration_minutes": 30, "price_min_cents": 1500}
    r = await req(dash, "POST", "/api/admin/services", {**new, "bay_ids": [detail_bay]})
    wash = r.json()["id"]
    r = await req(dash, "DELETE", f"/api/admin/bays/{detail_bay}")
    assert r.status_code == 409 and "Hand Wash can only be done in Detail Bay" in detail(r)
    r = await req(dash, "PATCH", f"/api/admin/services/{wash}", {"bay_ids": [express, detail_bay]})
    assert r.json()["bay_ids"] == [express, detail_bay]
    assert (await req(dash, "DELETE", f"/api/admin/bays/{detail_bay}")).status_code == 204
    row = await one(
        dash.db_url,
        select(ServiceType).where(ServiceType.id == wash).options(selectinload(ServiceType.bays)),
    )
    assert [b.id for b in row.bays] == [express]  # the bay left the service with it
    assert await count(dash.db_url, ServiceBay, ServiceBay.id == detail_bay) == 0


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_staff_are_added_changed_and_removed_without_losing_history(dash: Dash) -> None:
    me = await manager_id(dash)
    person = {"name": "Lena Park", "phone": "(415) 555-0177", "role": "sales", "hunt_order": 5}
    bad = await req(dash, "POST", "/api/admin/staff", {**person, "phone": "555-01"})
    assert bad.status_code == 422 and "phone" in str(bad.json()["detail"][0]["loc"])
    assert "too few digits" in detail(bad)
    r = await req(dash, "POST", "/api/admin/staff", {**person, "role": "owner"})
    assert r.status_code == 422
    r = await req(dash, "POST", "/api/admin/staff", {**person, "email": "lena@"})
    assert r.status_code == 422 and "not an email address" in detail(r)
    with capture_logs() as logs:
        r = await req(dash, "POST", "/api/admin/staff", {**person, "email": "Lena@Sunrise.Example"})
    assert r.status_code == 201, r.text
    lena = r.json()
    assert (lena["phone"], lena["email"], lena["has_login"]) == (
        "+14155550177",
        "lena@sunrise.example",
        False,
    )
    (line,) = [e for e in logs if e["event"] == "admin change"]
    assert (line["by"], line["entity"], line["id"]) == (me, "staff member", lena["id"])
    assert "4155550177" not in str(logs)
    taken = await req(dash, "POST", "/api/admin/staff", {**person, "name": "Lena Two"})
    assert taken.status_code == 409 and "already has the phone +14155550177" in detail(taken)

    heard: asyncio.Queue[StaffDutyChanged] = asyncio.Queue()

    async def listen(msg: Msg) -> None:
        await heard.put(loads(StaffDutyChanged, msg.data))

    sub = await dash.bus.nc.subscribe(subjects.STAFF_DUTY, cb=listen)
    try:
        r = await req(
            dash, "PATCH", f"/api/admin/staff/{lena['id']}", {"on_duty": False, "hunt_order": 2}
        )
        assert r.status_code == 200
        change = await asyncio.wait_for(heard.get(), 5)  # running escalations stop ringing her
        assert (change.staff_id, change.on_duty) == (lena["id"], False)
    finally:
        await sub.unsubscribe()
    row = await one(dash.db_url, select(Staff).where(Staff.id == lena["id"]))
    assert (row.on_duty, row.hunt_order, row.phone) == (False, 2, "+14155550177")

    # The rules that keep the dealership workable.
    r = await req(dash, "DELETE", f"/api/admin/staff/{me}")
    assert r.status_code == 409 and "your own account" in detail(r)
    r = await req(dash, "PATCH", f"/api/admin/staff/{me}", {"role": "sales"})
    assert r.status_code == 409 and "only manager who can sign in" in detail(r)
    r = await req(dash, "PATCH", f"/api/admin/staff/{me}", {"has_login": False})
    assert r.status_code == 409
    await dash.token(SALES)  # Maria signs in before her login is removed
    maria = await one(dash.db_url, select(Staff).where(Staff.name == "Maria Lopez"))
    await closed_a_callback(dash.db_url, maria.id)
    r = await req(dash, "DELETE", f"/api/admin/staff/{maria.id}")
    assert r.status_code == 409 and "closed 1 callback request(s)" in detail(r)
    r = await req(dash, "PATCH", f"/api/admin/staff/{maria.id}", {"has_login": False})
    assert r.status_code == 200 and r.json()["has_login"] is False
    assert (await dash.http.get("/api/me", headers=await dash.auth(SALES))).status_code == 401

    assert (await req(dash, "DELETE", f"/api/admin/staff/{lena['id']}")).status_code == 204
    assert await count(dash.db_url, Staff, Staff.id == lena["id"]) == 0
    assert await count(dash.db_url, CallbackRequest, CallbackRequest.done_by == maria.id) == 1


async def closed_a_callback(db_url: str, staff_id: int) -> None:
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            session.add(
                CallbackRequest(
                    session_id="sess_done",
                    name="John Carter",
                    phone="+14155550123",
                    preferred_window="today",
                    reason="a quote",
                    status="done",
                    done_by=staff_id,
                )
            )
    finally:
        await engine.dispose()
