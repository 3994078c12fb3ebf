"""Fault injection on status callbacks: drop, duplicate, reorder, delay — what the
escalation service must survive (order by SequenceNumber, reconcile by fetching)."""

from __future__ import annotations

import asyncio

from sim_twilio_kit import DEALER, STAFF, FakeApp, Req, escalation_flow
from starlette.responses import Response

from dealerline_sim.humans import HumanScript
from dealerline_sim.twilio_rest import TwilioSim

EVENTS = ["initiated", "ringing", "answered", "completed"]


async def screened_call(tw: TwilioSim, esc: FakeApp) -> str:
    """A call that answers, hears the prompt, presses nothing and is hung up."""
    escalation_flow(esc, "support_s1")
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=2))
    client = tw.twilio_client()
    call = await asyncio.to_thread(
        client.calls.create,
        to=STAFF,
        from_=DEALER,
        url=esc.url("/api/voice/human-answer"),
        status_callback=esc.url("/api/voice/human-status"),
        status_callback_event=EVENTS,
        timeout=45,
    )
    await tw.wait_for_status(call.sid, "completed", timeout_s=15)
    await tw.drain_callbacks()
    return str(call.sid)


def arrived(esc: FakeApp) -> list[tuple[str, str]]:
    return [
        (r.params["CallStatus"], r.params["SequenceNumber"])
        for r in esc.to("/api/voice/human-status")
    ]


async def test_drop_leaves_a_gap_that_a_fetch_recovers(tw: TwilioSim, esc: FakeApp) -> None:
    rule = tw.faults.drop(status="completed")
    sid = await screened_call(tw, esc)
    assert arrived(esc) == [("initiated", "0"), ("ringing", "1"), ("in-progress", "2")]
    (dropped,) = tw.events("callback_dropped", sid)
    assert dropped.data["status"] == "completed"
    assert dropped.data["sequence"] == 3
    assert rule.applied == 1
    client = tw.twilio_client()
    fetched = await asyncio.to_thread(client.calls(sid).fetch)
    assert fetched.status == "completed"


async def test_duplicate_repeats_the_same_callback(tw: TwilioSim, esc: FakeApp) -> None:
    tw.faults.duplicate(status="ringing", copies=3)
    await screened_call(tw, esc)
    assert arrived(esc) == [
        ("initiated", "0"),
        ("ringing", "1"),
        ("ringing", "1"),
        ("ringing", "1"),
        ("in-progress", "2"),
        ("completed", "3"),
    ]
    ringing = [r for r in esc.to("/api/voice/human-status") if r.params["CallStatus"] == "ringing"]
    assert len({r.params["Timestamp"] for r in ringing}) == 1
    assert len({r.headers["i-twilio-idempotency-token"] for r in ringing}) == 1
    assert all(r.valid for r in ringing)
    faults = [e.data["fault"] for e in tw.events("callback") if e.data["status"] == "ringing"]
    assert faults == [None, "duplicate", "duplicate"]


async def test_reorder_delivers_a_later_callback_first(tw: TwilioSim, esc: FakeApp) -> None:
    tw.faults.reorder(status="initiated")
    await screened_call(tw, esc)
    assert arrived(esc) == [
        ("ringing", "1"),
        ("initiated", "0"),
        ("in-progress", "2"),
        ("completed", "3"),
    ]


async def test_delay_lets_later_callbacks_overtake(tw: TwilioSim, esc: FakeApp) -> None:
    tw.faults.delay(60.0, status="in-progress")  # the call ends ~16 s later
    await screened_call(tw, esc)
    await tw.wait_for(lambda: len(arrived(esc)) == 4, timeout_s=15, what="the late callback")
    assert arrived(esc) == [
        ("initiated", "0"),
        ("ringing", "1"),
        ("completed", "3"),
        ("in-progress", "2"),
    ]


async def test_rules_match_call_and_number_and_can_repeat(tw: TwilioSim, esc: FakeApp) -> None:
    tw.faults.drop(to="+14155550000", times=None)  # another number: never matches
    every = tw.faults.drop(status="ringing", times=None)
    sid = await screened_call(tw, esc)
    assert [s for s, _ in arrived(esc)] == ["initiated", "in-progress", "completed"]
    assert every.applied == 1
    tw.faults.clear()
    assert tw.faults.rules == []
    assert tw.events("callback_dropped", sid)[0].data["sequence"] == 1


async def test_conference_callbacks_take_faults_too(tw: TwilioSim, esc: FakeApp) -> None:
    tw.faults.drop(kind="conference", status="participant-join")
    twiml = (
        "<Response><Dial><Conference"
        ' statusCallback="/conf" statusCallbackEvent="join leave end">'
        "room-f</Conference></Dial></Response>"
    )
    esc.on("/api/voice/room", lambda r: twiml)  # statusCallback resolves against this URL
    tw.add_human(STAFF, HumanScript.accepts_customer_hangs_up_first())
    client = tw.twilio_client()
    call = await asyncio.to_thread(
        client.calls.create, to=STAFF, from_=DEALER, url=esc.url("/api/voice/room")
    )
    await tw.wait_for(lambda: "room-f" in tw.conferences, what="the room")
    await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    await tw.drain_callbacks()
    cbs = esc.to("/conf")
    got = [(r.params["StatusCallbackEvent"], r.params["SequenceNumber"]) for r in cbs]
    assert got == [("participant-leave", "2"), ("conference-end", "3")]
    assert all(r.valid for r in cbs)
    assert cbs[0].params["ReasonParticipantLeft"] == "call_ended_via_api"
    assert cbs[1].params["ReasonConferenceEnded"] == "last-participant-left"


async def test_failing_callback_endpoint_is_logged_not_retried(tw: TwilioSim, esc: FakeApp) -> None:
    def fail(r: Req) -> Response:
        return Response("nope", status_code=503)

    esc.on("/api/voice/human-status", fail)
    await screened_call(tw, esc)
    events = tw.events("callback")
    assert [e.data["status"] for e in events] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert all(e.data["http_status"] == 503 for e in events)
    assert all(str(e.data["error"]).startswith("11200") for e in events)
