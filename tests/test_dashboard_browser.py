"""The sales staff web UI in a real browser against the real fleet.

Debian's Chromium (headless, driven by Playwright's core client) signs in to the
dashboard-api the fleet runs, which serves the built UI at ``/``. The phone simulator
places a call through the whole fleet with the Twilio simulator; the test watches the call
appear in the live calls, its transcript grow on the call page (greeting, then the caller
asking for a person), the escalation ring in the sales view, and a claim by a team member
who is not first on the hunt list: the escalation service lets the first person's ringing
leg go and rings the claimant next (checked in the simulator's legs and the published
statuses, not only on the page). Then the dashboard-api is killed and started again: the
call page shows that it is reconnecting, reconnects by itself and catches up (the call's end,
missed while it was down) without showing a replayed line twice. Screenshots of every step
go to ``artifacts/dashboard/``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from dealerline_cli.fleet import LlmChoice
from dealerline_common.messages import EscalationStatus, HumanCallStatus
from dealerline_sim.escalation_lab import EscalationLab, reached
from dealerline_sim.humans import HumanScript

pytestmark = [pytest.mark.e2e]

S = HumanCallStatus
CHROMIUM = Path("/usr/bin/chromium")
WEB_DIST = Path(__file__).resolve().parents[1] / "services" / "dashboard-api" / "web" / "dist"
ARTIFACTS = Path("artifacts") / "dashboard"
MARIA = ("Maria Lopez", "maria.lopez@sunrisemotors.example")  # sales, first on the hunt list
PRIYA = ("Priya Shah", "priya.shah@sunrisemotors.example")  # manager, third on the hunt list
UI_TIMEOUT_MS = 30_000
RECONNECT_TIMEOUT_MS = 25_000  # the longest socket backoff (10 s) plus a slow connect

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """The lab's simulator and phone keep tasks that end on their own after close; the
    test checks the escalation's outcome instead."""
    return


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest_asyncio.fixture
async def lab(artifacts: Path) -> AsyncIterator[EscalationLab]:
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({WEB_DIST}): run `make web` (or `make setup`)")
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    # The staff legs run 10x faster than the caller; Maria never answers and her phone
    # rings for the whole (scaled) dial timeout, 30 s of wall time: the window to claim.
    async with EscalationLab(
        log_dir=artifacts / "logs", llm=scripted, pace=2.0, ring_timeout_s=300
    ) as lab:
        yield lab


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


async def sign_in(browser: Browser, base_url: str, email: str, password: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    await page.goto(base_url + "/")
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    await page.get_by_test_id("login-email").fill(email)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("signed-in-as")).to_be_visible()
    return page


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def of_attempt(statuses: list[EscalationStatus], attempt: int) -> list[EscalationStatus]:
    return [s for s in statuses if s.attempt == attempt]


async def test_staff_watch_a_call_and_claim_its_escalation(
    lab: EscalationLab, browser: Browser, artifacts: Path
) -> None:
    from dealerline_dashboard.accounts import set_password

    assert lab.fleet.database_url is not None
    base_url = lab.fleet.url("dashboard-api")
    password = secrets.token_urlsafe(12)
    for _, email in (MARIA, PRIYA):
        await set_password(lab.fleet.database_url, email, password)
    maria_phone, david_phone, priya_phone = (s.phone for s in lab.staff[:3])
    assert [s.name for s in lab.staff[:3]] == ["Maria Lopez", "David Kim", "Priya Shah"]

    # A wrong password is refused on the page; the right one signs in.
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    await page.goto(base_url + "/")
    await page.get_by_test_id("login-email").fill(MARIA[1])
    await page.get_by_test_id("login-password").fill("not-the-password")
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("login-error")).to_contain_text("Wrong email or password")
    await shot(page, artifacts, "01_sign_in_refused")
    await context.close()

    maria = await sign_in(browser, base_url, MARIA[1], password)
    priya = await sign_in(browser, base_url, PRIYA[1], password)
    await expect(maria.get_by_test_id("signed-in-as")).to_contain_text("Maria Lopez")
    await expect(maria.get_by_test_id("live-calls")).to_be_visible()
    await expect(maria.get_by_test_id("reconnect-banner")).to_have_count(0)  # socket open
    await shot(maria, artifacts, "02_live_calls_before_the_call")

    # The call: Maria (first on the hunt list) never answers, David neither, Priya accepts.
    # Priya stays in the conference until the caller hangs up (times are simulated, 10x).
    priya_answers = HumanScript.accepts_then_hangs_up(talk_s=600).with_(
        max_wait_for_conference_s=600
    )
    lab.humans({priya_phone: priya_answers})
    call, sid = await lab.place()  # returns once the greeting has played

    row = maria.locator(f'[data-testid="live-call-row"][data-session-id="{sid}"]')
    await expect(row).to_be_visible()
    await expect(row.get_by_test_id("live-call-state")).to_have_text("ai")
    await expect(row.get_by_test_id("live-call-handler")).to_have_text("AI")
    await shot(maria, artifacts, "03_live_call_listed")

    await row.get_by_test_id("live-call-link").click()
    await expect(maria).to_have_url(re.compile(rf"#/calls/{sid}$"))
    lines = maria.get_by_test_id("transcript-line")
    await expect(lines.and_(maria.locator('[data-role="assistant"]'))).not_to_have_count(0)
    greeting_lines = await lines.count()
    await shot(maria, artifacts, "04_call_page_greeting")

    # The caller asks for a person: the transcript grows with their words and the reply.
    await lab.ask_for_a_person(call, sid)
    caller_lines = lines.and_(maria.locator('[data-role="user"]'))
    await expect(caller_lines.last).to_contain_text("person")
    await expect(lines).not_to_have_count(greeting_lines)
    assert await lines.count() > greeting_lines
    await lab.statuses.wait(sid, reached(S.RINGING), 30.0, "Maria's phone ringing")
    steps = maria.get_by_test_id("escalation-step")
    await expect(steps.and_(maria.locator('[data-status="ringing"]'))).to_contain_text("Maria")
    await shot(maria, artifacts, "05_call_page_transcript_and_escalation")

    # The sales view rings; Priya (third on the list) claims it while Maria's phone rings.
    await maria.get_by_test_id("nav-sales").click()
    ringing_for_maria = maria.locator(f'[data-testid="escalation-row"][data-session-id="{sid}"]')
    await expect(ringing_for_maria).to_be_visible()
    await expect(maria.get_by_test_id("duty-toggle")).to_have_attribute("data-on-duty", "true")
    await shot(maria, artifacts, "06_sales_view_ringing")

    await priya.get_by_test_id("nav-sales").click()
    ringing = priya.locator(f'[data-testid="escalation-row"][data-session-id="{sid}"]')
    await expect(ringing).to_be_visible()
    await expect(ringing).to_have_attribute("data-status", "ringing")
    await expect(ringing.get_by_test_id("escalation-ringing")).to_contain_text("Maria Lopez")
    assert not any(s.attempt >= 2 for s in lab.statuses.of(sid)), "still on the first person"
    await ringing.get_by_test_id("claim-button").click()
    await expect(priya.get_by_test_id("action-result")).to_contain_text("accepted")
    await expect(priya.get_by_test_id("action-result")).to_contain_text("ringing you")
    await shot(priya, artifacts, "07_claimed_by_priya")

    # The escalation service let Maria's leg go and rang Priya next, skipping David.
    await lab.statuses.wait(sid, reached(S.IN_CONFERENCE), 60.0, "Priya in the conference")
    statuses = lab.statuses.of(sid)
    first = of_attempt(statuses, 1)
    assert {s.staff_name for s in first} == {"Maria Lopez"}
    assert first[-1].status is S.FAILED and first[-1].reason == "canceled", first[-1]
    second = of_attempt(statuses, 2)
    assert {s.staff_name for s in second} == {"Priya Shah"}
    assert [s.status for s in second][-2:] == [S.CONFIRMED, S.IN_CONFERENCE]
    (maria_leg,) = lab.sim.calls_to(maria_phone)
    assert maria_leg.statuses[-1] == "canceled"
    assert maria_leg.answered_sim_s is None
    assert lab.sim.calls_to(priya_phone), "Priya's phone was rung"
    assert not lab.sim.calls_to(david_phone), "David (second on the list) was never rung"

    # The pages follow: Priya handles the call in the live list; the timeline shows it.
    await priya.get_by_test_id("nav-live-calls").click()
    priya_row = priya.locator(f'[data-testid="live-call-row"][data-session-id="{sid}"]')
    await expect(priya_row.get_by_test_id("live-call-handler")).to_have_text("Priya Shah")
    await expect(priya_row.get_by_test_id("live-call-state")).to_have_text("in conference")
    await shot(priya, artifacts, "08_live_calls_priya_handling")
    await priya_row.get_by_test_id("live-call-link").click()
    timeline = priya.get_by_test_id("escalation-step")
    await expect(timeline.and_(priya.locator('[data-status="in_conference"]'))).to_contain_text(
        "Priya Shah"
    )
    await expect(timeline.and_(priya.locator('[data-status="failed"]'))).to_contain_text("canceled")
    await shot(priya, artifacts, "09_call_page_claimed_timeline")

    # The dashboard-api dies: the pages say they are reconnecting. The caller hangs up
    # meanwhile; once the service is back the call page reconnects by itself, replays what
    # it missed (the call ended) and drops what it had already (no line twice).
    asked = priya.locator('[data-testid="transcript-line"][data-role="user"]').filter(
        has_text="person"
    )
    assert await asked.count() == 1
    lab.fleet.kill("dashboard-api")
    banner = priya.get_by_test_id("reconnect-banner")
    await expect(banner).to_have_attribute("data-status", "reconnecting")
    await shot(priya, artifacts, "10_reconnecting")
    await call.hangup()
    await lab.statuses.wait(sid, lambda seen: any(s.final for s in seen), 30.0, "final status")
    await lab.fleet.restart("dashboard-api")
    # The pages retry with a backoff of up to 10 s (useSocket.ts), so they are back within
    # one retry of the service being ready, however long the restart took.
    await expect(banner).to_have_count(0, timeout=RECONNECT_TIMEOUT_MS)
    await expect(priya.get_by_test_id("call-state")).to_have_text("ended")
    assert await asked.count() == 1, "a replayed transcript line was shown twice"
    await shot(priya, artifacts, "11_reconnected_call_ended")

    # Maria goes off duty from the sales view; Priya's team list follows on its socket.
    await maria.get_by_test_id("nav-sales").click()
    toggle = maria.get_by_test_id("duty-toggle")
    await expect(maria.get_by_test_id("reconnect-banner")).to_have_count(
        0, timeout=RECONNECT_TIMEOUT_MS
    )
    await toggle.click()
    await expect(toggle).to_have_attribute("data-on-duty", "false")
    await priya.get_by_test_id("nav-sales").click()
    marias_row = priya.get_by_test_id("staff-row").filter(has_text="Maria Lopez")
    await expect(marias_row).to_have_attribute("data-on-duty", "false")
    await shot(priya, artifacts, "12_sales_view_maria_off_duty")

    # The call is in the history, found by words the caller said.
    await maria.get_by_test_id("nav-history").click()
    await maria.get_by_test_id("history-query").fill("talk to a person")
    await maria.get_by_test_id("history-query").press("Enter")
    found = maria.get_by_test_id("history-row")
    await expect(found).to_have_count(1)
    await expect(found).to_contain_text("John Carter")
    await shot(maria, artifacts, "13_history_search")

    # A token the server does not accept (REST 401, socket closed with 4401) and signing
    # out both end at the sign-in page.
    await priya.evaluate("sessionStorage.setItem('dealerline.token', 'forged.token.value')")
    await priya.reload()
    await expect(priya.get_by_test_id("login-form")).to_be_visible()
    await maria.get_by_test_id("sign-out").click()
    await expect(maria.get_by_test_id("login-form")).to_be_visible()
    assert await maria.evaluate("sessionStorage.getItem('dealerline.token')") is None
