"""What staff do from the dashboard, against the real bus and database: going on and off
duty (the database row changes, ``staff.duty`` carries it to the escalation service and
the other dashboards), and claiming or passing on a ringing escalation through a real NATS
responder playing the escalation service."""

from __future__ import annotations

import asyncio

from dash_testkit import MANAGER, SALES, SALES_PHONE, Dash, recv_json
from nats.aio.msg import Msg
from sqlalchemy import select

from dealerline_common import subjects
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_common.messages import StaffAction, StaffActionReply, StaffDutyChanged, loads


async def on_duty_in_db(db_url: str, staff_id: int) -> bool:
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session:
            row = (await session.execute(select(Staff).where(Staff.id == staff_id))).scalar_one()
            return row.on_duty
    finally:
        await engine.dispose()


async def test_going_off_duty_updates_the_database_and_tells_the_fleet(dash: Dash) -> None:
    heard: asyncio.Queue[StaffDutyChanged] = asyncio.Queue()

    async def listen(msg: Msg) -> None:
        await heard.put(loads(StaffDutyChanged, msg.data))

    sub = await dash.bus.nc.subscribe(subjects.STAFF_DUTY, cb=listen)
    manager_ws = await dash.ws("/ws/sales", MANAGER)
    try:
        assert (await recv_json(manager_ws))["type"] == "snapshot"
        me = (await dash.get("/api/me", SALES)).json()
        assert me["on_duty"] is True

        r = await dash.http.put(
            "/api/staff/me/duty", headers=await dash.auth(SALES), json={"on_duty": False}
        )
        assert r.status_code == 200, r.text
        assert r.json()["on_duty"] is False and r.json()["phone"] == SALES_PHONE
        assert await on_duty_in_db(dash.db_url, me["id"]) is False
        change = await asyncio.wait_for(heard.get(), 5)
        assert (change.staff_id, change.name, change.on_duty) == (me["id"], "Maria Lopez", False)
        frame = await recv_json(manager_ws)
        assert frame["type"] == "staff_duty"
        assert (frame["data"]["id"], frame["data"]["on_duty"]) == (me["id"], False)
        assert frame["data"]["phone"] == SALES_PHONE  # a manager sees whole numbers

        # Saying it again changes nothing and tells nobody.
        r = await dash.http.put(
            "/api/staff/me/duty", headers=await dash.auth(SALES), json={"on_duty": False}
        )
        assert r.status_code == 200
        await asyncio.sleep(0.3)
        assert heard.empty()

        # A manager puts her back on duty.
        r = await dash.http.patch(
            f"/api/staff/{me['id']}", headers=await dash.auth(MANAGER), json={"on_duty": True}
        )
        assert r.status_code == 200
        assert (await asyncio.wait_for(heard.get(), 5)).on_duty is True
        assert await on_duty_in_db(dash.db_url, me["id"]) is True
    finally:
        await sub.unsubscribe()
        await manager_ws.close()


async def test_claim_and_pass_reach_the_escalation_service(dash: Dash) -> None:
    sid = "sess_ringing"
    asked: list[StaffAction] = []

    async def escalation_service(msg: Msg) -> None:
        action = loads(StaffAction, msg.data)
        asked.append(action)
        accepted = action.action == "claim"
        detail = "ringing you next" if accepted else "taken off this call's list"
        await msg.respond(StaffActionReply(accepted=accepted, detail=detail).dumps())

    sub = await dash.bus.nc.subscribe(subjects.staff_action(sid), cb=escalation_service)
    try:
        r = await dash.post(f"/api/escalations/{sid}/claim", SALES)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": True, "detail": "ringing you next"}
        r = await dash.post(f"/api/escalations/{sid}/pass", SALES)
        assert r.status_code == 200
        assert r.json() == {"accepted": False, "detail": "taken off this call's list"}
    finally:
        await sub.unsubscribe()
    assert [a.action for a in asked] == ["claim", "pass"]
    me = (await dash.get("/api/me", SALES)).json()
    for action in asked:
        assert action.session_id == sid
        # The escalation service rings the person's own number: whole, from the database.
        assert action.staff.model_dump() == {
            "name": "Maria Lopez",
            "phone": SALES_PHONE,
            "role": "sales",
            "staff_id": me["id"],
        }


async def test_claim_without_a_ringing_escalation_is_409(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(staff_action_timeout_s=0.5)
    r = await dash.post("/api/escalations/sess_quiet/claim", SALES)  # nobody answers
    assert r.status_code == 409
    assert r.json() == {"detail": "no escalation of this call is ringing"}

    async def silent(msg: Msg) -> None:  # subscribed, but never replies
        return None

    sub = await dash.bus.nc.subscribe(subjects.staff_action("sess_quiet"), cb=silent)
    try:
        r = await dash.post("/api/escalations/sess_quiet/pass", SALES)
        assert r.status_code == 409
    finally:
        await sub.unsubscribe()
    assert (await dash.post("/api/escalations/not.a.session/claim", SALES)).status_code == 404
