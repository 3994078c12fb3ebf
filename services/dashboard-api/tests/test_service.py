"""The service starts, joins a real bus, answers health and metrics, serves the web UI
(or says it is not built), documents its API, refuses to start without its secret, and
drains."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dash_testkit import SALES, Dash

from dealerline_common.settings import SettingsError, load_settings
from dealerline_dashboard.settings import DashboardSettings


async def test_service_joins_the_bus_and_reports_health(dash: Dash) -> None:
    client = dash.http
    assert (await client.get("/livez")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"bus": True, "events_replayed": True}
    metrics = (await client.get("/metrics")).content
    assert b"dealerline_bus_reconnects_total" in metrics
    assert b"dealerline_dashboard_ws_clients" in metrics
    dash.service.health.draining = True
    assert (await client.get("/readyz")).status_code == 503
    dash.service.health.draining = False


async def test_openapi_documents_every_rest_route(dash: Dash) -> None:
    schema = (await dash.http.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/auth/login",
        "/api/me",
        "/api/calls/live",
        "/api/calls",
        "/api/calls/{session_id}",
        "/api/appointments/today",
        "/api/escalations",
        "/api/escalations/{session_id}/claim",
        "/api/escalations/{session_id}/pass",
        "/api/staff",
        "/api/staff/me/duty",
        "/api/staff/{staff_id}",
        "/api/callbacks",
        "/api/callbacks/{callback_id}/done",
        "/api/admin/profile",
        "/api/admin/hours/{weekday}",
        "/api/admin/holidays/{holiday_id}",
        "/api/admin/bays/{bay_id}",
        "/api/admin/services/{service_id}",
        "/api/admin/staff/{staff_id}",
        "/api/admin/faq/{faq_id}",
    ):
        assert path in paths, path
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert not any(p.startswith("/{") for p in paths)  # the web UI route stays out of it
    assert (await dash.http.get("/docs")).status_code == 200


async def test_web_ui_not_built_answers_503_with_the_fix(dash: Dash) -> None:
    r = await dash.http.get("/")
    assert r.status_code == 503
    assert "web UI not built; run make setup" in r.text
    # API paths never fall through to the web UI.
    assert (await dash.get("/api/no-such-thing", SALES)).status_code == 404


async def test_web_ui_is_served_with_client_side_routes(start_dash, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    web = tmp_path / "dist"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>dealerline</title>")
    (web / "assets" / "app.js").write_text("console.log('dealerline')")
    (tmp_path / "secret.txt").write_text("outside the web folder")
    dash: Dash = await start_dash(web_dir=web)
    client = dash.http
    for path in ("/", "/calls/sess_abc", "/staff"):
        r = await client.get(path)
        assert r.status_code == 200 and "<title>dealerline</title>" in r.text, path
    asset = await client.get("/assets/app.js")
    assert asset.status_code == 200 and "console.log" in asset.text
    escaped = await client.get("/%2E%2E/secret.txt")
    assert "outside the web folder" not in escaped.text
    assert (await client.get("/api/nothing")).status_code == 404
    assert (await client.get("/livez")).json() == {"status": "ok"}


def test_settings_refuse_a_missing_or_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHBOARD_AUTH_SECRET", raising=False)
    with pytest.raises(SettingsError, match="DASHBOARD_AUTH_SECRET is required"):
        load_settings(DashboardSettings)
    monkeypatch.setenv("DASHBOARD_AUTH_SECRET", "too-short")
    with pytest.raises(SettingsError, match="at least 32 characters"):
        load_settings(DashboardSettings)
    monkeypatch.setenv("DASHBOARD_AUTH_SECRET", "x" * 32)
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:////tmp/x.db")
    settings = load_settings(DashboardSettings)
    assert settings.database_url == "sqlite+aiosqlite:////tmp/x.db"
    assert settings.token_ttl_s == 8 * 3600


async def test_drain_closes_sockets_with_going_away(dash: Dash) -> None:
    ws = await dash.ws("/ws/sales")
    snapshot = await ws.recv()
    assert '"snapshot"' in str(snapshot)
    await dash.service.drain()
    await ws.wait_closed()
    assert ws.close_code == 1001
    dash.http = httpx.AsyncClient()  # the fixture's stop closes a client; the service is gone
    dash.service.drain = _noop  # type: ignore[method-assign]


async def _noop() -> None:
    return None
