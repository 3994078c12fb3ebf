"""No whole phone number reaches a staff member whose role does not see them: not in free
text (summaries, callback reasons, escalation details, transcripts; written, spoken or
transcribed), not from any REST route, not on either socket, and not through a search by
digits. Against the real service and database, and the masker on its own (hypothesis)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from dash_testkit import MANAGER, SALES, SERVICE, Dash, app_routes, recv_json, recv_until
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from test_auth import fill

from dealerline_common import subjects
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Call, CallbackRequest, TranscriptTurn
from dealerline_common.db.testing import DATABASE_KINDS
from dealerline_common.messages import (
    CallStartedEvent,
    EscalationStatus,
    HumanCallStatus,
    HumanStatusEvent,
    TranscriptEvent,
)
from dealerline_dashboard.masking import mask_free_text

# Planted in every free-text field, each in another written or spoken form.
SUMMARY_NUMBER = "5550177"  # "(415) 555-0177"
SPOKEN_NUMBER = "5550166"  # "four one five, five five five, zero one six six"
REASON_NUMBER = "5550155"  # "415.555.0155"
WINDOW_NUMBER = "5550133"  # "4155550133"
DETAIL_NUMBER = "5550144"  # "+1 415 555 0144"
EVENT_NUMBER = "5550122"  # "415, 555, 0122" (Whisper's commas)
PLANTED = (SUMMARY_NUMBER, SPOKEN_NUMBER, REASON_NUMBER, WINDOW_NUMBER, DETAIL_NUMBER)
SID = "sess_leaky"


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def leaked(value: Any, numbers: tuple[str, ...] = PLANTED) -> set[str]:
    """The planted numbers whose seven digits can be read in one string of ``value``."""
    digits = [re.sub(r"\D", "", s) for s in strings(value)]
    spoken = [spoken_digits(s) for s in strings(value)]
    return {n for n in numbers for d in (*digits, *spoken) if n in d}


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spoken_digits(text: str) -> str:
    return "".join(str(WORDS.index(w)) for w in re.findall(r"[a-z]+", text.lower()) if w in WORDS)


async def plant(dash: Dash) -> None:
    engine = create_engine_from_url(dash.db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            session.add(
                Call(
                    session_id=SID,
                    caller_phone="+14155550177",
                    started_at=dash_now(),
                    outcome="callback",
                    summary="Wants a callback on (415) 555-0177 about a trade-in.",
                    customer_name="John Carter",
                    escalation=[{"status": "failed", "detail": "rang +1 415 555 0144"}],
                    turns=[
                        TranscriptTurn(
                            role="caller",
                            text="my number is four one five, five five five, zero one six six",
                            at=dash_now(),
                            turn_id="t1",
                        )
                    ],
                )
            )
            session.add(
                CallbackRequest(
                    session_id=SID,
                    name="John Carter",
                    phone="+14155550177",
                    preferred_window="after 5pm on 4155550133",
                    reason="call back on 415.555.0155 about the trade-in",
                )
            )
    finally:
        await engine.dispose()


def dash_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def get_routes(dash: Dash) -> list[str]:
    return [
        fill(route.path).replace("sess_abc123", SID)
        for route in app_routes(dash.service.app)
        if isinstance(route, APIRoute) and route.path.startswith("/api") and "GET" in route.methods
    ]


@pytest.mark.parametrize("db_kind", DATABASE_KINDS)
async def test_sales_users_never_see_a_whole_number(dash: Dash) -> None:
    await plant(dash)
    await dash.bus.publish(
        subjects.escalation(SID),
        EscalationStatus(
            session_id=SID,
            task_id="t1",
            status=HumanCallStatus.RINGING,
            staff_name="Maria Lopez",
            attempt=1,
            detail="ringing Maria; the caller asked for +1 415 555 0144",
        ),
    )
    await dash.publish_event(subjects.events(SID), CallStartedEvent(session_id=SID, call_sid="CA1"))
    routes = await get_routes(dash)
    assert {"/api/calls", f"/api/calls/{SID}", "/api/callbacks", "/api/escalations"} <= set(routes)
    seen: dict[str, dict[str, Any]] = {}
    for email in (SALES, SERVICE, MANAGER):
        bodies = {}
        for path in routes:
            r = await dash.get(path, email)
            if path.startswith("/api/admin/") and email != MANAGER:  # managers only
                assert r.status_code == 403, (path, r.text)
                continue
            assert r.status_code == 200, (path, r.text)
            bodies[path] = r.json()
        seen[email] = bodies
    for email in (SALES, SERVICE):
        for path, body in seen[email].items():
            assert not leaked(body), (
                email,
                path,
                leaked(body),
                [
                    s
                    for s in strings(body)
                    if any(n in re.sub(r"\D", "", s) + spoken_digits(s) for n in PLANTED)
                ],
            )
    # The numbers are there to leak: a manager sees every one of them.
    assert leaked(seen[MANAGER]) == set(PLANTED)
    detail = seen[SALES][f"/api/calls/{SID}"]
    assert "*" in detail["summary"] and detail["summary"].endswith("about a trade-in.")
    callback = next(c for c in seen[SALES]["/api/callbacks"] if c["session_id"] == SID)
    assert callback["reason"].endswith("about the trade-in") and "*" in callback["reason"]
    assert seen[SALES]["/api/me"]["phone"] == "+14155550111"  # one's own number stays


async def test_both_sockets_mask_free_text_for_sales(dash: Dash) -> None:
    await dash.publish_event(subjects.events(SID), CallStartedEvent(session_id=SID, call_sid="CA1"))
    spoken = TranscriptEvent(session_id=SID, role="user", text="it's 415, 555, 0122 thanks")
    detail = "the caller asked for +1 415 555 0144"
    esc = dict(session_id=SID, status=HumanCallStatus.RINGING, attempt=1, detail=detail)
    numbers = (EVENT_NUMBER, DETAIL_NUMBER)
    async with (
        await dash.ws("/ws/sales", SALES) as sales,
        await dash.ws("/ws/sales", MANAGER) as manager,
    ):
        assert (await recv_json(sales))["type"] == "snapshot"
        assert (await recv_json(manager))["type"] == "snapshot"
        await dash.publish_event(subjects.events(SID), spoken)
        await dash.publish_event(subjects.events(SID), HumanStatusEvent(task_id="t1", **esc))
        to_sales = await recv_until(sales, 3)  # the transcript, the status, the escalation
        to_manager = await recv_until(manager, 3)
    assert not leaked(to_sales, numbers), to_sales
    assert leaked(to_manager, numbers) == set(numbers)
    # A sales socket opened now gets the escalation (and its detail) in the snapshot.
    async with await dash.ws("/ws/sales", SALES) as late:
        snapshot = await recv_json(late)
        assert snapshot["data"]["escalations"][0]["session_id"] == SID
        assert not leaked(snapshot, numbers), snapshot
        me = next(s for s in snapshot["data"]["staff"] if s["name"] == "Maria Lopez")
        assert me["phone"] == "+14155550111"
    async with await dash.ws(f"/ws/{SID}", SALES) as call:
        frames = await recv_until(call, 3)
        assert not leaked(frames, numbers), frames
        assert frames[0]["data"]["call_sid"] == "CA1"  # ids are not numbers to mask


async def test_a_digit_search_is_only_for_roles_that_see_numbers(dash: Dash) -> None:
    await plant(dash)
    for q in ("555-0177", "0177", "five five five zero one seven seven"):
        r = await dash.get("/api/calls", SALES, params={"q": q})
        assert r.status_code == 403, (q, r.text)
        assert "digits" in r.json()["detail"]
    r = await dash.get("/api/calls", MANAGER, params={"q": "555-0177"})
    assert [c["session_id"] for c in r.json()["items"]] == [SID]
    # Words still search for everyone.
    r = await dash.get("/api/calls", SALES, params={"q": "trade-in"})
    assert [c["session_id"] for c in r.json()["items"]] == [SID]


# ------------------------------------------------------------------ the masker alone

FORMATS = [
    "({a}) {b}-{c}",
    "{a}-{b}-{c}",
    "{a}.{b}.{c}",
    "+1 {a} {b} {c}",
    "1-{a}-{b}-{c}",
    "{a}{b}{c}",
    "{a}, {b}, {c}",
    "{b}-{c}",
]


def spell(digits: str, joiner: str) -> str:
    return joiner.join(WORDS[int(d)] for d in digits)


@settings(max_examples=200, deadline=None)
@given(
    area=st.from_regex(r"[2-9][0-8][0-9]", fullmatch=True),
    exchange=st.from_regex(r"[2-9][0-9]{2}", fullmatch=True),
    line=st.from_regex(r"[0-9]{4}", fullmatch=True),
    form=st.sampled_from(FORMATS),
    before=st.sampled_from(["", "call me on ", "My number's ", "ok so "]),
    after=st.sampled_from(["", " please", ". Thanks!", ", after five"]),
)
def test_no_written_number_survives(
    area: str, exchange: str, line: str, form: str, before: str, after: str
) -> None:
    text = before + form.format(a=area, b=exchange, c=line) + after
    masked = mask_free_text(text)
    assert exchange + line not in re.sub(r"\D", "", masked), (text, masked)
    assert masked.startswith(before.rstrip()) and masked.endswith(after), (text, masked)


@settings(max_examples=100, deadline=None)
@given(
    digits=st.from_regex(r"[2-9][0-9]{9}", fullmatch=True),
    joiner=st.sampled_from([" ", ", ", "-", " ... "]),
)
def test_no_spoken_number_survives(digits: str, joiner: str) -> None:
    text = f"yeah it's {spell(digits, joiner)} okay"
    masked = mask_free_text(text)
    assert digits[3:] not in re.sub(r"\D", "", masked) + spoken_digits(masked), (text, masked)


@pytest.mark.parametrize(
    "text",
    [
        "Booked an oil change for Tuesday at nine.",
        "A 2019 Camry, about $25,000 with 42,000 miles.",
        "Session sess_abc123 at 09:30, bay 4.",
        "one or two questions",
    ],
)
def test_text_without_a_number_is_left_alone(text: str) -> None:
    assert mask_free_text(text) == text


def test_frames_are_json_after_masking() -> None:
    from dealerline_dashboard.events import Frame

    frame = Frame({"type": "transcript", "session_id": SID, "data": {"text": "415 555 0177"}})
    assert json.loads(frame.text(False))["data"]["text"] == "4******177"
    assert json.loads(frame.text(True))["data"]["text"] == "415 555 0177"
