"""Staff authentication and roles, against the real service and database: every REST
route and both sockets refuse a missing, expired or forged token (the routes are read from
the app itself, so a new one cannot slip through), logins, the failure limit, roles and
masked phone numbers."""

from __future__ import annotations

import time

import jwt
import pytest
import websockets
from dash_testkit import (
    MANAGER,
    PASSWORD,
    SALES,
    SALES_PHONE,
    SECRET,
    SERVICE,
    Dash,
    app_routes,
    metric,
    recv_json,
    send_token,
)
from fastapi.routing import APIRoute, APIWebSocketRoute
from sqlalchemy import select

from dealerline_common import subjects
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_common.db.testing import DATABASE_KINDS
from dealerline_common.messages import CallStartedEvent
from dealerline_dashboard.accounts import UnknownStaff, set_password
from dealerline_dashboard.auth import ISSUER, TokenIssuer

PUBLIC = {"/api/auth/login"}
PATH_VALUES = {
    "session_id": "sess_abc123",
    "staff_id": "1",
    "callback_id": "1",
    "weekday": "1",
    "holiday_id": "1",
    "bay_id": "1",
    "service_id": "1",
    "faq_id": "1",
}
BODIES = {"PUT": {"on_duty": False}, "PATCH": {"on_duty": False}, "POST": {}}


def bad_tokens() -> dict[str, str | None]:
    now = int(time.time())
    issuer = TokenIssuer(SECRET, 3600)
    expired = issuer.encode(issuer.issue(1, "manager", "Maria Lopez", now=now - 7200))
    forged = TokenIssuer("an-attacker-secret-" + "x" * 40, 3600)
    claims = {"sub": "3", "role": "manager", "name": "x", "iat": now, "exp": now + 600}
    return {
        "missing": None,
        "expired": expired,
        "forged": forged.encode(forged.issue(3, "manager", "Priya Shah")),
        "unsigned": jwt.encode({**claims, "iss": ISSUER}, key="", algorithm="none"),
        "garbage": "not-a-token",
        "no-issuer": jwt.encode(claims, SECRET, algorithm="HS256"),
        "unknown-staff": issuer.encode(issuer.issue(999_999, "manager", "Nobody")),
    }


def fill(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"add a value for the parameter of {path} to PATH_VALUES"
    return path


async def test_every_rest_route_rejects_missing_expired_and_forged_tokens(dash: Dash) -> None:
    routes = [
        (method, route.path)
        for route in app_routes(dash.service.app)
        if isinstance(route, APIRoute) and route.path.startswith("/api")
        for method in sorted(route.methods)
        if route.path not in PUBLIC
    ]
    assert len(routes) >= 13, routes  # the enumeration itself works
    for method, path in routes:
        url = fill(path)
        for label, token in bad_tokens().items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = await dash.http.request(method, url, headers=headers, json=BODIES.get(method))
            assert r.status_code == 401, (method, path, label, r.status_code, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
        # …and the same route with a good token is not refused for auth.
        r = await dash.http.request(
            method, url, headers=await dash.auth(MANAGER), json=BODIES.get(method)
        )
        assert r.status_code != 401, (method, path)


async def test_both_sockets_reject_missing_expired_and_forged_tokens(dash: Dash) -> None:
    paths = [
        route.path for route in app_routes(dash.service.app) if isinstance(route, APIWebSocketRoute)
    ]
    assert sorted(paths) == ["/ws/sales", "/ws/{session_id}"]
    await dash.publish_event(
        subjects.events(PATH_VALUES["session_id"]),
        CallStartedEvent(session_id=PATH_VALUES["session_id"], call_sid="CA1"),
    )
    for path in paths:
        for label, token in bad_tokens().items():
            async with websockets.connect(dash.ws_base + fill(path)) as ws:
                if token is not None:
                    await send_token(ws, token)
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 4401, (path, label)
                assert ws.close_reason == "unauthorized"
        async with await dash.ws(fill(path), SALES) as ws:
            first = await recv_json(ws)  # a good token gets frames, not a close
            assert first["type"] in ("snapshot", "call_started")


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_login_returns_a_signed_expiring_token(dash: Dash) -> None:
    before = time.time()
    r = await dash.http.post(
        "/api/auth/login",
        json={"email": " Maria.Lopez@SunriseMotors.example ", "password": PASSWORD},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert before + 8 * 3600 - 5 <= body["expires_at"] <= time.time() + 8 * 3600 + 1
    assert body["staff"]["email"] == SALES and body["staff"]["role"] == "sales"
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], issuer=ISSUER)
    assert claims["role"] == "sales" and claims["exp"] == body["expires_at"]
    me = await dash.http.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["name"] == "Maria Lopez"
    assert me.json()["phone"] == SALES_PHONE  # one's own number is never masked

    wrong = await dash.http.post(
        "/api/auth/login", json={"email": SALES, "password": "nope-nope-nope"}
    )
    unknown = await dash.http.post(
        "/api/auth/login", json={"email": "who@example.com", "password": PASSWORD}
    )
    no_password = await dash.http.post(  # Tom Becker has no dashboard password
        "/api/auth/login", json={"email": "tom.becker@sunrisemotors.example", "password": PASSWORD}
    )
    for refused in (wrong, unknown, no_password):
        assert refused.status_code == 401
        assert refused.json() == {"detail": "wrong email or password"}
    assert await metric(dash.http, "dealerline_dashboard_login_failures_total") == 3


async def test_repeated_failures_lock_one_email_out(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(login_max_failures=3, login_lockout_s=60)
    for _ in range(3):
        r = await dash.http.post(
            "/api/auth/login", json={"email": SALES, "password": "wrong-password"}
        )
        assert r.status_code == 401
    locked = await dash.http.post("/api/auth/login", json={"email": SALES, "password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    # Another person is not locked out by Maria's failures.
    assert (
        await dash.http.post("/api/auth/login", json={"email": MANAGER, "password": PASSWORD})
    ).status_code == 200


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_roles_and_masked_numbers(dash: Dash) -> None:
    as_sales = (await dash.get("/api/staff", SALES)).json()
    as_manager = (await dash.get("/api/staff", MANAGER)).json()
    assert [s["hunt_order"] for s in as_sales] == sorted(s["hunt_order"] for s in as_sales)
    by_name = {s["name"]: s for s in as_sales}
    assert by_name["Maria Lopez"]["phone"] == SALES_PHONE  # her own
    assert by_name["Priya Shah"]["phone"] != "+14155550113"
    assert by_name["Priya Shah"]["phone"].endswith("113") and "*" in by_name["Priya Shah"]["phone"]
    assert {s["name"]: s["phone"] for s in as_manager}["David Kim"] == "+14155550112"

    david = by_name["David Kim"]["id"]
    for who in (SALES, SERVICE):
        r = await dash.http.patch(
            f"/api/staff/{david}", headers=await dash.auth(who), json={"hunt_order": 1}
        )
        assert r.status_code == 403, who
    r = await dash.http.patch(
        f"/api/staff/{david}",
        headers=await dash.auth(MANAGER),
        json={"hunt_order": 7, "role": "sales"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["hunt_order"] == 7 and r.json()["role"] == "sales"
    assert (
        await dash.http.patch(
            f"/api/staff/{david}", headers=await dash.auth(MANAGER), json={"role": "admin"}
        )
    ).status_code == 422
    assert (
        await dash.http.patch(
            "/api/staff/999999", headers=await dash.auth(MANAGER), json={"hunt_order": 1}
        )
    ).status_code == 404
    engine = create_engine_from_url(dash.db_url)
    try:
        async with session_factory(engine)() as session:
            row = (await session.execute(select(Staff).where(Staff.id == david))).scalar_one()
            assert (row.hunt_order, row.role) == (7, "sales")
    finally:
        await engine.dispose()


async def test_a_role_change_applies_to_tokens_already_issued(dash: Dash) -> None:
    token_headers = await dash.auth(SALES)
    maria = (await dash.get("/api/me", SALES)).json()["id"]
    r = await dash.http.patch(
        f"/api/staff/{maria}", headers=await dash.auth(MANAGER), json={"role": "manager"}
    )
    assert r.status_code == 200
    # The old token (role "sales" inside) now may act as a manager: the row decides.
    r = await dash.http.patch(f"/api/staff/{maria}", headers=token_headers, json={"hunt_order": 9})
    assert r.status_code == 200


async def test_set_password_needs_a_known_email_and_a_real_password(db_url: str) -> None:
    with pytest.raises(UnknownStaff, match="nobody@example.com"):
        await set_password(db_url, "nobody@example.com", PASSWORD)
    with pytest.raises(ValueError, match="at least"):
        await set_password(db_url, SALES, "short")
