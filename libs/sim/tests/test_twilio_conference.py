"""The customer's call across a REST redirect into a conference with the human and back to
a new Media Stream; conference start-on-enter / end-on-exit semantics and callbacks."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import numpy as np
import pytest
from sim_twilio_kit import (
    CUSTOMER,
    DEALER,
    ESC_PUBLIC,
    GW_PUBLIC,
    STAFF,
    TIME_SCALE,
    TOKEN,
    FakeApp,
    WsSession,
    connect_stream,
    escalation_flow,
)
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from dealerline_sim.humans import HumanScript
from dealerline_sim.phone import Call, PhoneSimulator, SimulatorError
from dealerline_sim.twilio_rest import TwilioSim

ROOM = "support_s1"
EVENTS = ["initiated", "ringing", "answered", "completed"]


def noise(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(rng.integers(0x00, 0x60, n, dtype=np.uint8))


GREETING = noise(1600, 1)  # what the AI says on the first stream
WELCOME_BACK = noise(2400, 2)  # and on the second one


def customer_routes(gw: FakeApp, *, dial_action: str = "") -> None:
    action = f' action="{dial_action}"' if dial_action else ""
    gw.on("/api/voice/incoming", lambda r: connect_stream(session_id="s1", stream_token="t1"))
    gw.on(
        "/api/voice/escalate",
        lambda r: (
            f"<Response><Dial{action}>"
            f'<Conference startConferenceOnEnter="true" endConferenceOnExit="true">{ROOM}'
            "</Conference></Dial></Response>"
        ),
    )
    gw.on(
        "/api/voice/return-to-ai",
        lambda r: connect_stream(session_id="s1", stream_token="t2", resumed="true"),
    )

    async def speak(session: WsSession) -> None:
        audio = GREETING if len(gw.sessions) == 1 else WELCOME_BACK
        payload = base64.b64encode(audio).decode()
        await session.send(
            {"event": "media", "streamSid": session.stream_sid, "media": {"payload": payload}}
        )
        await session.send(
            {
                "event": "mark",
                "streamSid": session.stream_sid,
                "mark": {"name": f"said-{len(gw.sessions)}"},
            }
        )

    gw.on_session = speak


@pytest.fixture
async def phone(tw: TwilioSim, gw: FakeApp) -> AsyncIterator[PhoneSimulator]:
    customer_routes(gw)
    sim = tw.phone(gw.base, GW_PUBLIC, pace=8.0, silence="none")
    try:
        yield sim
    finally:
        await sim.aclose()


async def dial_human(tw: TwilioSim, esc: FakeApp) -> str:
    client = tw.twilio_client()
    human = await asyncio.to_thread(
        client.calls.create,
        to=STAFF,
        from_=DEALER,
        url=esc.url("/api/voice/human-answer?session=s1"),
        status_callback=esc.url("/api/voice/human-status?session=s1"),
        status_callback_event=EVENTS,
        timeout=45,
    )
    return str(human.sid)


async def redirect(tw: TwilioSim, sid: str, url: str) -> None:
    client = tw.twilio_client()
    updated = await asyncio.to_thread(client.calls(sid).update, url=url)
    assert updated.status == "in-progress"


async def test_escalation_round_trip(
    tw: TwilioSim, esc: FakeApp, gw: FakeApp, phone: PhoneSimulator, order: list[str]
) -> None:
    escalation_flow(esc, ROOM)
    tw.add_human(STAFF, HumanScript.accepts_then_hangs_up(talk_s=20))
    call = await phone.place_call(CUSTOMER, DEALER)
    await call.wait_for_mark_echo("said-1")
    human = await dial_human(tw, esc)
    await tw.wait_for(lambda: ROOM in tw.conferences, what="the human in the room")

    # the escalation service moves the customer: stop, socket closed, new TwiML fetched
    await redirect(tw, call.call_sid, gw.url("/api/voice/escalate?session=s1"))
    first = call.streams[0]
    assert first.end_reason == "redirect"
    assert first.stop_sent
    assert gw.sessions[0].closed.is_set()
    stop = gw.sessions[0].events("stop")[0]
    assert stop["stop"] == {"accountSid": tw.account_sid, "callSid": call.call_sid}
    assert stop["streamSid"] == first.stream_sid
    await tw.wait_for(lambda: "http:/api/voice/escalate" in order, what="escalate fetched")
    assert order.index("ws:stop:1") < order.index("http:/api/voice/escalate")
    (escalate,) = gw.to("/api/voice/escalate")
    assert escalate.valid
    assert escalate.params["CallSid"] == call.call_sid
    assert escalate.params["CallStatus"] == "in-progress"
    assert escalate.params["Direction"] == "inbound"
    assert call.is_open
    assert call.current_stream is None

    conf = tw.conferences[ROOM]
    await tw.wait_for(lambda: conf.status == "in-progress", what="conference start")
    await tw.wait_for_event("conference", call.call_sid, event="join")
    assert call.in_conference == ROOM
    said = await call.say("Hi, is this the sales team?")  # no stream: recorded only
    assert said.text == "Hi, is this the sales team?"
    assert tw.events("speech", call.call_sid)[0].data["conference"] == ROOM

    # the human talks 20 s and hangs up; the customer stays alone in the room
    assert await tw.wait_for_status(human, "completed") == "completed"
    assert tw.call(human).hangup_by == "human"
    assert conf.held_together(human, call.call_sid)
    assert conf.max_participants_at_once == 2
    assert conf.status == "in-progress"
    assert list(conf.participants) == [call.call_sid]

    # ... until the escalation service brings the customer back to the AI
    await redirect(tw, call.call_sid, gw.url("/api/voice/return-to-ai?session=s1"))
    second = await call.wait_for_stream(2)
    assert second.parameters == {"session_id": "s1", "stream_token": "t2", "resumed": "true"}
    assert second.stream_sid != first.stream_sid
    await gw.sessions[1].started.wait()
    start = gw.sessions[1].start
    assert start["sequenceNumber"] == "1"
    assert start["start"]["customParameters"] == second.parameters
    assert start["start"]["callSid"] == call.call_sid
    assert conf.status == "completed"
    assert conf.reason_ended == "participant-with-end-conference-on-exit-left"
    assert conf.call_sid_ending == call.call_sid
    assert call.in_conference is None

    # the same Call object speaks and hears on the new stream
    await call.wait_for_mark_echo("said-2")
    assert call.heard_on_stream(1) == GREETING
    assert call.heard_on_stream(2) == WELCOME_BACK
    assert bytes(call.heard_audio) == GREETING + WELCOME_BACK
    assert {s.stream_sid for s in call.heard_segments} == {first.stream_sid, second.stream_sid}
    await call.say_audio(noise(800, 3), text="thanks")
    await tw.wait_for(lambda: len(gw.sessions[1].events("media")) >= 5, what="caller media")
    assert all(m["streamSid"] == second.stream_sid for m in gw.sessions[1].events("media"))

    await call.hangup()
    assert call.closed.is_set()
    assert second.end_reason == "caller-hangup"
    assert await tw.wait_for_status(call.call_sid, "completed") == "completed"
    assert tw.call(call.call_sid).hangup_by == "caller"
    await tw.drain_callbacks()

    # the human's leg: call progress and the conference events, all signed
    assert [c["CallStatus"] for c in tw.callbacks(human)] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert int(tw.callbacks(human)[-1]["CallDuration"]) >= 20
    conf_cbs = [r for r in esc.to("/api/voice/conference-status")]
    assert all(r.valid for r in conf_cbs)
    assert [r.params["SequenceNumber"] for r in conf_cbs] == [
        str(i) for i in range(1, len(conf_cbs) + 1)
    ]
    assert [(r.params["StatusCallbackEvent"], r.params.get("CallSid")) for r in conf_cbs] == [
        ("participant-join", human),
        ("participant-join", call.call_sid),
        ("conference-start", call.call_sid),
        ("participant-leave", human),
        ("participant-leave", call.call_sid),
        ("conference-end", None),
    ]
    human_left, customer_left, end = conf_cbs[3].params, conf_cbs[4].params, conf_cbs[5].params
    assert human_left["ReasonParticipantLeft"] == "participant_hung_up"
    assert human_left["ParticipantCallStatus"] == "completed"
    assert human_left["EndConferenceOnExit"] == "false"
    assert customer_left["ReasonParticipantLeft"] == "participant_updated_via_api"
    assert customer_left["ParticipantCallStatus"] == "in-progress"
    assert end["ReasonConferenceEnded"] == "participant-with-end-conference-on-exit-left"
    assert end["CallSidEndingConference"] == call.call_sid
    assert all(p["ConferenceSid"] == conf.sid for p in (r.params for r in conf_cbs))
    assert all(p["FriendlyName"] == ROOM for p in (r.params for r in conf_cbs))
    assert tw.errors == []
    assert call.protocol_errors == []


async def test_customer_hanging_up_ends_the_conference(
    esc: FakeApp, gw: FakeApp, order: list[str]
) -> None:
    customer_routes(gw)
    escalation_flow(esc, ROOM)
    async with TwilioSim(
        TOKEN,
        time_scale=TIME_SCALE,
        routes={ESC_PUBLIC: esc.base},
        inbound_status_callback=esc.url("/api/voice/customer-status"),
    ) as tw:
        tw.add_human(STAFF, HumanScript.accepts_customer_hangs_up_first())
        async with tw.phone(gw.base, GW_PUBLIC, pace=8.0, silence="none") as phone:
            call = await phone.place_call(CUSTOMER, DEALER)
            human = await dial_human(tw, esc)
            await tw.wait_for(lambda: ROOM in tw.conferences, what="the human in the room")
            await redirect(tw, call.call_sid, gw.url("/api/voice/escalate?session=s1"))
            conf = tw.conferences[ROOM]
            await tw.wait_for(lambda: conf.status == "in-progress", what="conference start")

            await call.hangup()
            assert conf.status == "completed"
            assert conf.reason_ended == "participant-with-end-conference-on-exit-left"
            assert conf.call_sid_ending == call.call_sid
            # the human's <Dial> returned; no verbs left → the human's call completes
            assert await tw.wait_for_status(human) == "completed"
            assert tw.call(human).hangup_by == "end-of-twiml"
            assert tw.call(call.call_sid).status == "completed"
            await tw.settle()
            assert [c["CallStatus"] for c in tw.callbacks(human)][-1] == "completed"
            (customer_done,) = esc.to("/api/voice/customer-status")
            assert customer_done.params["CallStatus"] == "completed"
            assert customer_done.params["Direction"] == "inbound"
            assert customer_done.valid
            assert conf.held_together(human, call.call_sid)


async def test_redirect_during_dial_requests_the_action_first(
    tw: TwilioSim, esc: FakeApp, gw: FakeApp, order: list[str]
) -> None:
    customer_routes(gw, dial_action="/api/voice/dial-done")
    escalation_flow(esc, ROOM)
    tw.add_human(STAFF, HumanScript.accepts_customer_hangs_up_first())
    async with tw.phone(gw.base, GW_PUBLIC, pace=8.0, silence="none") as phone:
        call = await phone.place_call(CUSTOMER, DEALER)
        human = await dial_human(tw, esc)
        await tw.wait_for(lambda: ROOM in tw.conferences, what="the human in the room")
        await redirect(tw, call.call_sid, gw.url("/api/voice/escalate?session=s1"))
        await tw.wait_for_event("conference", call.call_sid, event="join")
        await redirect(tw, call.call_sid, gw.url("/api/voice/return-to-ai?session=s1"))
        await call.wait_for_stream(2)
        assert order.index("http:/api/voice/dial-done") < order.index(
            "http:/api/voice/return-to-ai"
        )
        (done,) = gw.to("/api/voice/dial-done")
        assert done.params["DialCallStatus"] == "completed"
        assert done.params["CallSid"] == call.call_sid
        # the human had endConferenceOnExit=false but was the last one left: room over
        assert await tw.wait_for_status(human) == "completed"
        await call.hangup()


async def test_rest_hang_up_of_a_streaming_call_sends_stop(
    tw: TwilioSim, gw: FakeApp, phone: PhoneSimulator
) -> None:
    call = await phone.place_call(CUSTOMER, DEALER)
    client = tw.twilio_client()
    done = await asyncio.to_thread(client.calls(call.call_sid).update, status="completed")
    assert done.status == "completed"
    assert call.closed.is_set()
    assert call.streams[0].end_reason == "api-hangup"
    assert call.stop_sent
    assert gw.sessions[0].events("stop")
    assert tw.call(call.call_sid).hangup_by == "api"
    fetched = await asyncio.to_thread(client.calls(call.call_sid).fetch)
    assert fetched.direction == "inbound"
    assert fetched.status == "completed"


async def test_server_closing_the_stream_runs_the_rest_of_the_twiml(
    tw: TwilioSim, gw: FakeApp, phone: PhoneSimulator
) -> None:
    gw.on(
        "/api/voice/incoming",
        lambda r: connect_stream(session_id="s1").replace(
            "</Connect>", "</Connect><Say>Thanks for calling.</Say>"
        ),
    )
    call = await phone.place_call(CUSTOMER, DEALER)
    await gw.sessions[0].started.wait()
    assert gw.sessions[0].ws is not None
    await gw.sessions[0].ws.close()
    await call.wait_closed()
    assert call.streams[0].end_reason == "server-closed"
    assert call.closed_by_server
    assert await tw.wait_for_status(call.call_sid, "completed") == "completed"
    assert tw.said_to(call.call_sid) == ["Thanks for calling."]
    assert tw.call(call.call_sid).hangup_by == "end-of-twiml"


async def test_connect_action_and_inline_twiml_redirect(
    tw: TwilioSim, gw: FakeApp, phone: PhoneSimulator
) -> None:
    gw.on(
        "/api/voice/incoming",
        lambda r: connect_stream(session_id="s1").replace(
            "<Connect>", '<Connect action="/api/voice/after-stream">'
        ),
    )
    gw.on("/api/voice/after-stream", lambda r: connect_stream(session_id="s1", again="1"))
    call = await phone.place_call(CUSTOMER, DEALER)
    await gw.sessions[0].started.wait()
    assert gw.sessions[0].ws is not None
    await gw.sessions[0].ws.close()
    second = await call.wait_for_stream(2)
    assert second.parameters == {"session_id": "s1", "again": "1"}
    assert call.is_open

    client = tw.twilio_client()
    twiml = connect_stream(session_id="s1", third="yes").replace(
        "<Response>", "<Response><Say>One moment.</Say>"
    )
    await asyncio.to_thread(client.calls(call.call_sid).update, twiml=twiml)
    third = await call.wait_for_stream(3)
    assert third.parameters == {"session_id": "s1", "third": "yes"}
    assert call.streams[1].end_reason == "redirect"
    assert tw.said_to(call.call_sid) == ["One moment."]
    await call.hangup()


async def test_start_on_enter_and_end_on_exit(tw: TwilioSim, esc: FakeApp) -> None:
    def room(start: bool, end: bool = False) -> str:
        return (
            "<Response><Dial><Conference"
            f' startConferenceOnEnter="{str(start).lower()}"'
            f' endConferenceOnExit="{str(end).lower()}"'
            f' statusCallback="{esc.url("/conf")}" statusCallbackEvent="start end">'
            "room-2</Conference></Dial><Say>Room over.</Say></Response>"
        )

    numbers = ["+14155550131", "+14155550132", "+14155550133"]
    for n in numbers:
        tw.add_human(n, HumanScript.accepts_customer_hangs_up_first())
    client = Client(tw.account_sid, tw.auth_token)
    client.api.base_url = tw.rest_url

    async def create(to: str, twiml: str) -> str:
        c = await asyncio.to_thread(client.calls.create, to=to, from_=DEALER, twiml=twiml)
        return str(c.sid)

    a = await create(numbers[0], room(False))
    b = await create(numbers[1], room(False))
    await tw.wait_for(
        lambda: "room-2" in tw.conferences and len(tw.conferences["room-2"].participants) == 2,
        what="two waiting participants",
    )
    conf = tw.conferences["room-2"]
    assert conf.status == "init"  # nobody may start it
    assert not conf.started.is_set()
    c = await create(numbers[2], room(True, end=True))
    await tw.wait_for(lambda: conf.status == "in-progress", what="start on enter")
    assert conf.held_together(a, b, c)

    await tw.call(c).party_hung_up("human")  # the moderator leaves: the room ends
    assert conf.status == "completed"
    assert conf.reason_ended == "participant-with-end-conference-on-exit-left"
    for sid in (a, b):
        assert await tw.wait_for_status(sid) == "completed"
        assert tw.said_to(sid) == ["Room over."]  # the verb after <Dial>
    await tw.drain_callbacks()
    assert [r.params["StatusCallbackEvent"] for r in esc.to("/conf")] == [
        "conference-start",
        "conference-end",
    ]
    validator = RequestValidator(TOKEN)
    for r in esc.to("/conf"):
        assert validator.validate(esc.url("/conf"), r.params, r.headers["x-twilio-signature"])

    # a new room of the same name is a new conference
    d = await create(numbers[0], room(True))
    await tw.wait_for(lambda: tw.conferences["room-2"] is not conf, what="a new room")
    assert tw.conferences["room-2"].sid != conf.sid
    await tw.call(d).party_hung_up("human")
    assert tw.conferences["room-2"].reason_ended == "last-participant-left"


def test_call_host_protocol_is_satisfied() -> None:
    from dealerline_sim.legs import CallLeg
    from dealerline_sim.phone import CallHost

    host: type[CallHost] = CallLeg  # type-checked: the leg implements the hooks
    assert callable(host.stream_started)
    assert Call.wait_for_stream is not None


async def test_a_stream_that_cannot_open_fails_the_call(
    tw: TwilioSim, gw: FakeApp, phone: PhoneSimulator
) -> None:
    gw.on(
        "/api/voice/incoming",
        lambda r: connect_stream(session_id="s1").replace("media-stream", "no-such-socket"),
    )
    with pytest.raises(SimulatorError, match="31920"):
        await phone.place_call(CUSTOMER, DEALER)
    (call,) = phone.calls
    assert call.closed.is_set()
    assert call.streams[0].end_reason == "open-failed"
    assert await tw.wait_for_status(call.call_sid) == "failed"
    assert [e.data["code"] for e in tw.errors] == [31920]


async def test_attach_needs_the_same_account(tw: TwilioSim, gw: FakeApp) -> None:
    async with PhoneSimulator(gw.base, GW_PUBLIC, TOKEN) as stranger:
        with pytest.raises(ValueError, match="account"):
            tw.attach(stranger)
