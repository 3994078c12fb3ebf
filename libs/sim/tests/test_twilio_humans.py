"""Each scripted human produces Twilio's exact callback sequence and webhook traffic for
the seed's two-step DTMF confirmation (``<Gather>`` → ``Digits`` posted, or fall-through)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sim_twilio_kit import DEALER, STAFF, FakeApp, escalation_flow
from starlette.responses import Response

from dealerline_sim.humans import HumanScript
from dealerline_sim.twilio_rest import TwilioSim

EVENTS = ["initiated", "ringing", "answered", "completed"]
PROMPT_1 = "Incoming customer call. Press any key to accept."


async def dial(tw: TwilioSim, esc: FakeApp, ring_timeout: int = 45) -> str:
    client = tw.twilio_client()
    call = await asyncio.to_thread(
        client.calls.create,
        to=STAFF,
        from_=DEALER,
        url=esc.url("/api/voice/human-answer?session=s1&task=t1"),
        status_callback=esc.url("/api/voice/human-status?session=s1&task=t1"),
        status_callback_event=EVENTS,
        timeout=ring_timeout,
    )
    return str(call.sid)


async def finished(tw: TwilioSim, sid: str) -> tuple[str, list[dict[str, Any]]]:
    status = await tw.wait_for_status(sid, timeout_s=20)
    await tw.drain_callbacks()
    return status, tw.callbacks(sid)


def statuses(callbacks: list[dict[str, Any]]) -> list[str]:
    return [c["CallStatus"] for c in callbacks]


async def test_never_answers_rings_out_after_timeout(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.never_answers())
    sid = await dial(tw, esc, ring_timeout=45)
    status, cbs = await finished(tw, sid)
    assert status == "no-answer"
    assert statuses(cbs) == ["initiated", "ringing", "no-answer"]
    assert [c["SequenceNumber"] for c in cbs] == ["0", "1", "2"]
    assert cbs[-1]["CallDuration"] == "0"
    assert cbs[-1]["SipResponseCode"] == "487"
    leg = tw.call(sid)
    ring_start = next(t for s, t in leg.history if s == "ringing")
    assert leg.end_sim_s is not None
    assert leg.end_sim_s - ring_start >= 44.5  # rang for the Timeout (simulated seconds)
    assert esc.to("/api/voice/human-answer") == []
    assert leg.resource()["status"] == "no-answer"


async def test_busy(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.busy())
    sid = await dial(tw, esc)
    status, cbs = await finished(tw, sid)
    assert status == "busy"
    assert statuses(cbs) == ["initiated", "ringing", "busy"]
    assert cbs[-1]["SipResponseCode"] == "486"
    assert esc.to("/api/voice/human-answer") == []


async def test_fails_without_ringing(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.fails())
    sid = await dial(tw, esc)
    status, cbs = await finished(tw, sid)
    assert status == "failed"
    assert statuses(cbs) == ["initiated", "failed"]


async def test_ring_longer_than_timeout_is_no_answer(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=30))
    sid = await dial(tw, esc, ring_timeout=10)
    status, cbs = await finished(tw, sid)
    assert status == "no-answer"
    assert statuses(cbs) == ["initiated", "ringing", "no-answer"]


async def test_call_screening_answers_and_never_presses(tw: TwilioSim, esc: FakeApp) -> None:
    escalation_flow(esc, "support_s1")
    tw.add_human(STAFF, HumanScript.call_screening())
    sid = await dial(tw, esc)
    status, cbs = await finished(tw, sid)
    assert status == "completed"
    assert statuses(cbs) == ["initiated", "ringing", "in-progress", "completed"]
    # the Gather timed out and fell through to <Say>Goodbye.</Say><Hangup/>
    assert tw.said_to(sid) == [PROMPT_1, "Goodbye."]
    (gather,) = tw.events("gather", sid)
    assert gather.data["timed_out"] is True
    assert gather.data["digits"] == ""
    assert esc.to("/api/voice/human-detected") == []
    assert tw.call(sid).hangup_by == "twiml"
    # prompt + the 10 s gather timeout + goodbye, on the simulated clock
    assert int(cbs[-1]["CallDuration"]) >= 10


async def test_presses_then_declines(tw: TwilioSim, esc: FakeApp) -> None:
    escalation_flow(esc, "support_s1")
    tw.add_human(STAFF, HumanScript.presses_then_declines(first="7", decline="2"))
    sid = await dial(tw, esc)
    status, cbs = await finished(tw, sid)
    assert status == "completed"
    assert statuses(cbs) == ["initiated", "ringing", "in-progress", "completed"]
    (detected,) = esc.to("/api/voice/human-detected")
    assert detected.valid
    assert detected.params["Digits"] == "7"
    assert detected.params["FinishedOnKey"] == ""
    assert detected.params["CallSid"] == sid
    assert detected.params["CallStatus"] == "in-progress"
    (confirmed,) = esc.to("/api/voice/human-confirmed")
    assert confirmed.params["Digits"] == "2"
    assert confirmed.params["FinishedOnKey"] == ""  # numDigits=1 ended it
    assert tw.said_to(sid)[-1] == "Declined. Goodbye."
    assert tw.call(sid).pressed == ["7", "2"]
    assert not tw.conferences.all()


async def test_accepting_human_joins_the_room_and_waits(tw: TwilioSim, esc: FakeApp) -> None:
    escalation_flow(esc, "support_s1")
    tw.add_human(STAFF, HumanScript.accepts_customer_hangs_up_first())
    sid = await dial(tw, esc)
    await tw.wait_for(lambda: "support_s1" in tw.conferences, what="the room")
    conf = tw.conferences["support_s1"]
    assert conf.status == "init"  # alone: not started yet
    assert list(conf.participants) == [sid]
    assert tw.said_to(sid)[-1] == "Connecting you to the customer now."
    assert tw.call(sid).status == "in-progress"
    await tw.drain_callbacks()
    conf_events = [c["StatusCallbackEvent"] for c in tw.callbacks(kind="conference")]
    assert conf_events == ["participant-join"]
    tw.conferences.end(conf, "conference-ended-via-api")
    status, cbs = await finished(tw, sid)
    assert status == "completed"
    assert statuses(cbs) == ["initiated", "ringing", "in-progress", "completed"]


async def test_human_gives_up_when_the_room_never_starts(tw: TwilioSim, esc: FakeApp) -> None:
    escalation_flow(esc, "support_s1")
    tw.add_human(
        STAFF, HumanScript.accepts_then_hangs_up(talk_s=5).with_(max_wait_for_conference_s=20)
    )
    sid = await dial(tw, esc)
    status, _ = await finished(tw, sid)
    assert status == "completed"
    assert tw.call(sid).hangup_by == "human"
    conf = tw.conferences["support_s1"]
    assert conf.status == "completed"
    assert conf.reason_ended == "last-participant-left"
    assert conf.started_index is None


async def test_hang_up_after_answering(tw: TwilioSim, esc: FakeApp) -> None:
    escalation_flow(esc, "support_s1")
    tw.add_human(STAFF, HumanScript.call_screening().with_(hang_up_after_s=1.0))
    sid = await dial(tw, esc)
    status, cbs = await finished(tw, sid)
    assert status == "completed"
    assert tw.call(sid).hangup_by == "human"
    assert statuses(cbs) == ["initiated", "ringing", "in-progress", "completed"]
    assert esc.to("/api/voice/human-detected") == []


async def test_gather_finish_key_and_partial_input(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on(
        "/api/voice/human-answer",
        lambda r: (
            '<Response><Gather action="pin" timeout="3"><Say>Enter your PIN.</Say></Gather>'
            '<Gather action="pin2" numDigits="6" timeout="3"><Say>Again.</Say></Gather>'
            "</Response>"
        ),
    )
    esc.on(
        "/api/voice/pin",
        lambda r: (
            '<Response><Gather action="/api/voice/pin2" numDigits="6" timeout="3">'
            "<Say>Again.</Say></Gather></Response>"
        ),
    )
    tw.add_human(STAFF, HumanScript(keys=("12#9", "42"), ring_s=1))
    sid = await dial(tw, esc)
    await tw.wait_for_status(sid, "completed")
    (pin,) = esc.to("/api/voice/pin")  # relative action resolved against the document URL
    assert pin.params["Digits"] == "12"
    assert pin.params["FinishedOnKey"] == "#"
    (pin2,) = esc.to("/api/voice/pin2")
    assert pin2.params["Digits"] == "42"  # timed out waiting for 6 digits: partial input
    assert pin2.params["FinishedOnKey"] == ""
    gathers = tw.events("gather", sid)
    assert [g.data["timed_out"] for g in gathers] == [False, True]


async def test_application_errors_hang_up(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on("/api/voice/human-answer", lambda r: Response("boom", status_code=500))
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=1))
    sid = await dial(tw, esc)
    status, cbs = await finished(tw, sid)
    assert status == "completed"
    assert [e.data["code"] for e in tw.errors] == [11200]
    assert tw.call(sid).hangup_by == "error"
    assert "application error" in tw.said_to(sid)[0]

    esc.on("/api/voice/human-answer", lambda r: Response("hello", media_type="text/plain"))
    sid2 = await dial(tw, esc)
    await tw.wait_for_status(sid2, "completed")
    assert tw.errors[-1].data["code"] == 12300

    esc.on("/api/voice/human-answer", lambda r: "<Response><Gather><Dial/></Gather></Response>")
    sid3 = await dial(tw, esc)
    await tw.wait_for_status(sid3, "completed")
    assert tw.errors[-1].data["code"] == 12100


async def test_redirect_verb_and_unsupported_verbs(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on(
        "/api/voice/human-answer",
        lambda r: "<Response><Record/><Redirect method='GET'>next?x=1</Redirect></Response>",
    )
    esc.on("/api/voice/next", lambda r: "<Response><Say>Redirected.</Say></Response>")
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=1))
    sid = await dial(tw, esc)
    await tw.wait_for_status(sid, "completed")
    (nxt,) = esc.to("/api/voice/next")
    assert nxt.method == "GET"
    assert nxt.valid
    assert nxt.params["x"] == "1"
    assert nxt.params["CallSid"] == sid
    assert tw.said_to(sid) == ["Redirected."]
    assert [e.data["code"] for e in tw.errors] == [12200]  # <Record> is not simulated
    assert tw.call(sid).hangup_by == "end-of-twiml"


@pytest.mark.parametrize(
    "bad",
    [
        {"ring_s": -1},
        {"keys": ("",)},
        {"keys": ("1a",)},
        {"talk_s": -2},
    ],
)
def test_human_script_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HumanScript(**bad)
    with pytest.raises(ValueError):
        HumanScript.presses_then_declines(decline="1")
    with pytest.raises(ValueError):
        TwilioSim().add_human("4155550123", HumanScript())
