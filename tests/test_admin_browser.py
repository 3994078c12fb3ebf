"""Managers edit the dealership in the web UI; staff close callback requests.

Debian's Chromium (headless, driven by Playwright's core client) against the dashboard-api
started as a user starts it (``python -m dealerline_dashboard`` with its environment) on a
real nats-server and a seeded SQLite database in a temporary folder, serving the built UI.
A manager changes the dealership's name, Monday's opening, a service's price, adds an FAQ
entry and a staff member and deletes that staff member, and sees the server's refusal of
bad input on the page; the database shows each change, and the service's log has an audit
line for each with the manager's staff id and no whole phone number. A sales user sees no
Admin link, is refused by the admin API (403), sees a callback request with the caller's
number masked and marks it done. Screenshots go to ``artifacts/admin/``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import time as wall
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.migrate import upgrade
from dealerline_common.db.models import (
    CallbackRequest,
    DealershipProfile,
    FaqEntry,
    OpeningHours,
    ServiceType,
    Staff,
)
from dealerline_common.db.seed import seed
from dealerline_common.db.testing import run_sync
from dealerline_common.local_nats import NatsServer
from dealerline_common.net import free_port

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WEB_DIST = ROOT / "services" / "dashboard-api" / "web" / "dist"
ARTIFACTS = Path("artifacts") / "admin"
PRIYA = "priya.shah@sunrisemotors.example"  # manager
MARIA = "maria.lopez@sunrisemotors.example"  # sales
NEW_PHONE = "+14155550177"
CALLER = "+14155550123"
UI_TIMEOUT_MS = 20_000
START_TIMEOUT_S = 60.0

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@dataclass
class Dashboard:
    url: str
    db_url: str
    password: str
    log: Path
    proc: subprocess.Popen[bytes]

    def audit(self) -> list[dict[str, Any]]:
        """The service's ``admin change`` log lines so far."""
        lines = []
        for raw in self.log.read_text().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("msg") == "admin change":
                lines.append(line)
        return lines


def _prepare_database(db_url: str, password: str) -> None:
    from dealerline_dashboard.accounts import set_password

    async def go() -> None:
        await upgrade(db_url)  # as `make seed-db` does: migrate, then the demo dealership
        await seed(db_url)
        for email in (PRIYA, MARIA):
            await set_password(db_url, email, password)
        engine = create_engine_from_url(db_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                session.add(
                    CallbackRequest(
                        session_id="sess_callback_ui",
                        name="John Carter",
                        phone=CALLER,
                        preferred_window="tomorrow after 3pm",
                        reason="wants a quote for winter tyres",
                    )
                )
        finally:
            await engine.dispose()

    run_sync(go())


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard-api exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"dashboard-api not ready in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({WEB_DIST}): run `make web` (or `make setup`)")
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'dealership.db'}"
    password = secrets.token_urlsafe(12)
    _prepare_database(db_url, password)
    port = free_port()
    log = tmp_path / "dashboard-api.log"
    env = {
        **os.environ,
        "DASHBOARD_DATABASE_URL": db_url,
        "DASHBOARD_AUTH_SECRET": secrets.token_hex(32),
        "DASHBOARD_HTTP_HOST": "127.0.0.1",
        "DASHBOARD_HTTP_PORT": str(port),
        "DASHBOARD_JS_FILE_STORAGE": "false",
        "DASHBOARD_LOG_JSON": "true",
    }
    with NatsServer() as nats, log.open("wb") as out:
        env["DASHBOARD_NATS_URL"] = nats.url
        proc = subprocess.Popen(
            [sys.executable, "-m", "dealerline_dashboard"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, proc, log)
            yield Dashboard(url, db_url, password, log, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


async def sign_in(browser: Browser, dash: Dashboard, email: str) -> Page:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    await page.goto(dash.url + "/")
    await page.get_by_test_id("login-email").fill(email)
    await page.get_by_test_id("login-password").fill(dash.password)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("signed-in-as")).to_be_visible()
    return page


async def db_one(db_url: str, stmt: Any) -> Any:
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session:
            return (await session.execute(stmt)).scalars().first()
    finally:
        await engine.dispose()


def row(page: Page, entity: str, text: str) -> Any:
    return page.get_by_test_id(f"{entity}-row").filter(has_text=text)


async def edit_profile_and_hours(page: Page, dash: Dashboard, artifacts: Path) -> None:
    await page.get_by_test_id("nav-admin").click()
    name = page.get_by_label("Dealership name")
    await expect(name).to_have_value("Sunrise Motors")
    await name.fill("Sunset Motors")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_test_id("profile-status")).to_contain_text("Saved")
    await page.screenshot(path=str(artifacts / "01_profile_saved.png"), full_page=True)
    profile = await db_one(dash.db_url, select(DealershipProfile))
    assert profile.name == "Sunset Motors"

    await page.get_by_test_id("admin-tab-hours").click()
    monday = row(page, "hours", "Monday")
    await monday.get_by_role("button", name="Edit Monday").click()
    await page.get_by_label("Opens for Monday").fill("19:00")
    await page.get_by_role("button", name="Save Monday").click()
    error = page.get_by_test_id("hours-error")
    await expect(error).to_contain_text("must be after")  # the server's 422, on the page
    await page.screenshot(path=str(artifacts / "02_hours_refused.png"), full_page=True)
    await page.get_by_label("Opens for Monday").fill("08:15")
    await page.get_by_role("button", name="Save Monday").click()
    await expect(monday.locator('[data-field="opens_at"]')).to_have_text("08:15")
    await expect(error).to_have_text("")
    hours = await db_one(dash.db_url, select(OpeningHours).where(OpeningHours.weekday == 0))
    assert (hours.opens_at, hours.closes_at) == (wall(8, 15), wall(18, 0))


async def edit_price_and_faq(page: Page, dash: Dashboard, artifacts: Path) -> None:
    await page.get_by_test_id("admin-tab-services").click()
    rotation = row(page, "service", "Tire Rotation")
    await rotation.get_by_role("button", name="Edit Tire Rotation").click()
    await page.get_by_label("Lowest price for Tire Rotation").fill("29.95")
    await page.get_by_role("button", name="Save Tire Rotation").click()
    await expect(rotation.locator('[data-field="price_min_cents"]')).to_have_text("$29.95")
    await page.screenshot(path=str(artifacts / "03_service_price.png"), full_page=True)
    service = await db_one(
        dash.db_url, select(ServiceType).where(ServiceType.name == "Tire Rotation")
    )
    assert (service.price_min_cents, service.price_max_cents) == (2995, 3995)

    await page.get_by_test_id("admin-tab-faq").click()
    await page.get_by_label("New faq question").fill("Do you sell electric cars?")
    await page.get_by_label("New faq answer").fill("Yes, three electric models are in stock.")
    await page.get_by_label("New faq tags").fill("EV; electric")
    await page.get_by_role("button", name="Add faq").click()
    await expect(row(page, "faq", "Do you sell electric cars?")).to_contain_text("ev, electric")
    entry = await db_one(
        dash.db_url, select(FaqEntry).where(FaqEntry.question == "Do you sell electric cars?")
    )
    assert (entry.answer, entry.tags) == (
        "Yes, three electric models are in stock.",
        ["ev", "electric"],
    )


async def add_and_delete_staff(page: Page, dash: Dashboard, artifacts: Path) -> None:
    await page.get_by_test_id("admin-tab-staff").click()
    await page.get_by_label("New staff name").fill("Lena Park")
    await page.get_by_label("New staff phone").fill("555-01")
    await page.get_by_label("New staff email").fill("lena.park@sunrisemotors.example")
    await page.get_by_role("button", name="Add staff").click()
    await expect(page.get_by_test_id("staff-error")).to_contain_text("Phone: too few digits")
    await page.get_by_label("New staff phone").fill("(415) 555-0177")
    await page.get_by_role("button", name="Add staff").click()
    lena = row(page, "staff", "Lena Park")
    await expect(lena).to_contain_text(NEW_PHONE)
    await page.screenshot(path=str(artifacts / "04_staff_added.png"), full_page=True)
    added = await db_one(dash.db_url, select(Staff).where(Staff.name == "Lena Park"))
    assert (added.phone, added.role, added.on_duty) == (NEW_PHONE, "sales", True)

    await lena.get_by_role("button", name="Delete Lena Park").click()
    await lena.get_by_role("button", name="Really delete Lena Park").click()
    await expect(lena).to_have_count(0)
    assert await db_one(dash.db_url, select(Staff).where(Staff.name == "Lena Park")) is None
    await page.screenshot(path=str(artifacts / "05_staff_deleted.png"), full_page=True)


async def test_a_manager_edits_the_dealership_and_sales_close_callbacks(
    dashboard: Dashboard, browser: Browser, artifacts: Path
) -> None:
    priya = await sign_in(browser, dashboard, PRIYA)
    priya_id = await db_one(dashboard.db_url, select(Staff.id).where(Staff.email == PRIYA))
    await edit_profile_and_hours(priya, dashboard, artifacts)
    await edit_price_and_faq(priya, dashboard, artifacts)
    await add_and_delete_staff(priya, dashboard, artifacts)

    audit = dashboard.audit()
    assert {(a["entity"], a["action"]) for a in audit} >= {
        ("profile", "update"),
        ("hours", "update"),
        ("service", "update"),
        ("FAQ entry", "create"),
        ("staff member", "create"),
        ("staff member", "delete"),
    }
    assert {a["by"] for a in audit} == {priya_id}
    log = dashboard.log.read_text()
    assert NEW_PHONE[2:] not in log and "+1*******177" in log  # only masked

    # A sales user: no Admin link, the admin API refuses her, the callback is hers to close.
    maria = await sign_in(browser, dashboard, MARIA)
    await expect(maria.get_by_test_id("nav-callbacks")).to_be_visible()
    await expect(maria.get_by_test_id("nav-admin")).to_have_count(0)
    refused = await maria.evaluate(
        """async () => (await fetch('/api/admin/profile', {headers: {Authorization:
        'Bearer ' + sessionStorage.getItem('dealerline.token')}})).status"""
    )
    assert refused == 403
    await maria.goto(dashboard.url + "/#/admin/staff")
    await expect(maria.get_by_test_id("admin-refused")).to_be_visible()

    await maria.get_by_test_id("nav-callbacks").click()
    request = maria.get_by_test_id("callback-row").filter(has_text="John Carter")
    await expect(request).to_contain_text("winter tyres")
    await expect(request).to_contain_text("tomorrow after 3pm")
    await expect(request.get_by_test_id("callback-phone")).to_have_text("+1*******123")
    await maria.screenshot(path=str(artifacts / "06_callbacks_open.png"), full_page=True)
    await request.get_by_role("button", name="Mark the callback to John Carter done").click()
    await expect(request).to_have_count(0)  # the open list no longer has it
    await maria.get_by_test_id("callbacks-show-done").check()
    await expect(request.get_by_test_id("callback-status")).to_have_text("done")
    await expect(request).to_contain_text("Maria Lopez")
    await maria.screenshot(path=str(artifacts / "07_callback_done.png"), full_page=True)
    closed = await db_one(
        dashboard.db_url,
        select(CallbackRequest).where(CallbackRequest.session_id == "sess_callback_ui"),
    )
    maria_id = await db_one(dashboard.db_url, select(Staff.id).where(Staff.email == MARIA))
    assert (closed.status, closed.done_by) == ("done", maria_id)
