"""The gateway's side of the human leg: the conference and return-to-AI webhooks, a
hand-off told apart from a hang-up (in either order of Twilio's stop and the /escalate
fetch), and TurnPlayed once a turn has been heard to its end."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import httpx
from gw_testkit import (
    Running,
    call_params,
    collect,
    next_of,
    open_session,
    post_signed,
    running_gateway,
    stream_parameters,
    twilio_stream,
)

from dealerline_common import audio, subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AudioMeta,
    CallEndedEvent,
    EscalationStatus,
    HumanCallStatus,
    StreamStarted,
    StreamStopped,
    TurnPlayed,
    parse_event,
)

CALL = "CA0123456789abcdef0123456789abcdef"


async def escalation_status(bus: Bus, sid: str, status: HumanCallStatus) -> None:
    await bus.publish(
        subjects.escalation(sid),
        EscalationStatus(session_id=sid, status=status, task_id="task_1", attempt=1),
    )
    await bus.nc.flush()


async def post_escalate(run: Running, sid: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=run.base) as client:
        resp = await post_signed(client, f"/api/voice/escalate?session_id={sid}", call_params(CALL))
    assert resp.status_code == 200, resp.text
    return resp


async def call_ended_events(run: Running, sid: str) -> list[CallEndedEvent]:
    """The session's CallEndedEvents in the durable stream (read once the stream is over)."""
    await asyncio.wait_for(run.app.state.gateway.wait_idle(), 15)
    sub = await run.probe.js.subscribe(subjects.events(sid), ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except Exception:
                break
            event = parse_event(msg.data)
            if isinstance(event, CallEndedEvent):
                out.append(event)
    finally:
        await sub.unsubscribe()
    return out


async def test_escalate_answers_the_conference_with_status_callbacks(
    nats_server: NatsServer,
) -> None:
    async with (
        running_gateway(nats_server, escalation_public_url="https://esc.example.com/") as run,
        httpx.AsyncClient(base_url=run.base) as client,
    ):
        resp = await post_signed(
            client, "/api/voice/escalate?session=sess_abc123", call_params(CALL)
        )
        back = await post_signed(
            client, "/api/voice/return-to-ai?session_id=sess_abc123", call_params(CALL)
        )
    assert resp.status_code == 200, resp.text
    conf = ET.fromstring(resp.text).find("./Dial/Conference")
    assert conf is not None and conf.text == subjects.conference_name("sess_abc123")
    assert conf.attrib["endConferenceOnExit"] == "true"
    assert conf.attrib["startConferenceOnEnter"] == "true"
    assert conf.attrib["statusCallback"] == (
        "https://esc.example.com/api/voice/conference-status?session_id=sess_abc123"
    )
    assert conf.attrib["statusCallbackEvent"] == "start end join leave"
    _, params = stream_parameters(back.text)
    assert params["resumed"] == "true" and params["reason"] == "human_ended"
    assert params["session_id"] == "sess_abc123"


async def test_stop_after_escalate_is_a_handoff(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        async with twilio_stream(run) as fake:
            sid = await open_session(run, fake, control)
            await escalation_status(run.probe, sid, HumanCallStatus.CONFIRMED)
            await post_escalate(run, sid)
            await fake.stop()
            stopped = await next_of(control, StreamStopped)
            assert isinstance(stopped, StreamStopped)
            assert stopped.reason == "handoff" and stopped.session_id == sid
        assert await call_ended_events(run, sid) == []

        # Back from the conference on a new stream: its stop is a hang-up again.
        async with httpx.AsyncClient(base_url=run.base) as client:
            back = await post_signed(
                client,
                f"/api/voice/return-to-ai?session_id={sid}&reason=human_ended",
                call_params(CALL),
            )
        _, params = stream_parameters(back.text)
        async with twilio_stream(run) as fake:
            await fake.start(params)
            resumed = await next_of(control, StreamStarted)
            assert isinstance(resumed, StreamStarted)
            assert resumed.resumed and resumed.reason == "human_ended"
            await fake.stop()
            stopped = await next_of(control, StreamStopped)
            assert isinstance(stopped, StreamStopped) and stopped.reason == "stop"
        ended = await call_ended_events(run, sid)
        assert [e.reason for e in ended] == ["stop"]


async def test_stop_before_escalate_waits_for_it(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server, handoff_grace_s=5.0) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        async with twilio_stream(run) as fake:
            sid = await open_session(run, fake, control)
            await escalation_status(run.probe, sid, HumanCallStatus.IN_CONFERENCE)
            await fake.stop()
            await asyncio.sleep(0.2)  # let the stop land first (either order must work)
            await post_escalate(run, sid)
            stopped = await next_of(control, StreamStopped)
            assert isinstance(stopped, StreamStopped) and stopped.reason == "handoff"
        assert await call_ended_events(run, sid) == []


async def test_hang_up_while_a_transfer_is_due_still_ends_the_call(
    nats_server: NatsServer,
) -> None:
    async with running_gateway(nats_server, handoff_grace_s=0.3) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        async with twilio_stream(run) as fake:
            sid = await open_session(run, fake, control)
            await escalation_status(run.probe, sid, HumanCallStatus.CONFIRMED)
            await fake.stop()  # the caller hung up; no /escalate ever comes
            stopped = await next_of(control, StreamStopped)
            assert isinstance(stopped, StreamStopped) and stopped.reason == "stop"
        assert [e.reason for e in await call_ended_events(run, sid)] == ["stop"]


async def test_escalate_for_another_call_is_not_a_handoff(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server, handoff_grace_s=0.3) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        async with twilio_stream(run) as fake:
            sid = await open_session(run, fake, control)
            async with httpx.AsyncClient(base_url=run.base) as client:
                await post_signed(
                    client,
                    f"/api/voice/escalate?session_id={sid}",
                    call_params("CA" + "f" * 32),
                )
            await fake.stop()
            stopped = await next_of(control, StreamStopped)
            assert isinstance(stopped, StreamStopped) and stopped.reason == "stop"


async def publish_sentence(
    run: Running, sid: str, turn: str, seq: int, text: str, payload: bytes, last: bool = False
) -> None:
    meta = AudioMeta(
        session_id=sid,
        turn_id=turn,
        seq=seq,
        last=last,
        text=text,
        duration_ms=audio.duration_ms(payload),
        synth_ms=5.0,
    )
    await run.probe.publish(subjects.audio(sid), payload, headers=meta.header())


async def test_turn_played_once_its_last_mark_comes_back(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        sid = await open_session(gateway, fake, control)
        turn = "turn-esc-task_1-confirmed"
        await publish_sentence(gateway, sid, turn, 0, "Connecting you now.", b"\x11" * 320)
        await publish_sentence(gateway, sid, turn, 1, "One moment.", b"\x11" * 320)
        await publish_sentence(gateway, sid, turn, 2, "", b"", last=True)
        first = await fake.next_event("mark")
        second = await fake.next_event("mark")
        await fake.mark(first["mark"]["name"])
        await fake.mark(second["mark"]["name"])
        played = await next_of(control, TurnPlayed)
        assert isinstance(played, TurnPlayed)
        assert played.turn_id == turn and played.session_id == sid

        # A closing message that arrives after the last mark came back also completes it.
        await publish_sentence(gateway, sid, "turn_late", 0, "Sure.", b"\x11" * 320)
        mark = await fake.next_event("mark")
        await fake.mark(mark["mark"]["name"])
        await publish_sentence(gateway, sid, "turn_late", 1, "", b"", last=True)
        played = await next_of(control, TurnPlayed)
        assert isinstance(played, TurnPlayed) and played.turn_id == "turn_late"
        await fake.stop()
        stopped = await next_of(control, StreamStopped)
        assert isinstance(stopped, StreamStopped)
