"""The greeting through the real fleet: written when the gateway answers the incoming
webhook (``CallIncoming``), held by the gateway, and played the moment the media stream
opens, without the caller saying anything and without a second greeting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import turn_id_for_call
from dealerline_common.messages import (
    CallIncoming,
    LatencyEvent,
    Say,
    StreamStarted,
    TranscriptEvent,
    loads,
    parse_control,
    parse_event,
)
from dealerline_sim.phone import PhoneSimulator

pytestmark = pytest.mark.e2e


async def test_the_greeting_is_ready_when_the_stream_opens() -> None:
    logs = Path("artifacts") / "e2e-greeting-prefetch" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(log_dir=logs, llm=scripted, quiet=True) as fleet:
        observer = Bus(str(fleet.nats_url), "greeting-observer")
        await observer.connect()
        control: list[Any] = []
        says: list[Say] = []
        events: list[Any] = []

        async def on_control(msg: Msg) -> None:
            control.append(parse_control(msg.data))

        async def on_say(msg: Msg) -> None:
            says.append(loads(Say, msg.data))

        async def on_event(msg: Msg) -> None:
            events.append(parse_event(msg.data))

        await observer.subscribe(subjects.ALL_CONTROL, on_control)
        await observer.subscribe(subjects.ALL_SAY, on_say)
        await observer.subscribe(subjects.ALL_EVENTS, on_event)
        await observer.nc.flush()
        try:
            async with PhoneSimulator(
                fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=1.0
            ) as sim:
                call = await sim.place_call("+14155550123", "+18005550100")
                async with call:
                    await call.wait_until_quiet(1.2, 90)  # the greeting, unprompted
                sid = call.custom_parameters["session_id"]
                stream = call.streams[0]
            mine = [c for c in control if c.session_id == sid]
            kinds = [type(c) for c in mine]
            # The webhook asked for the greeting before Twilio opened the stream...
            assert kinds.count(CallIncoming) == 1 and kinds.count(StreamStarted) == 1
            assert kinds.index(CallIncoming) < kinds.index(StreamStarted)
            started = next(c for c in mine if isinstance(c, StreamStarted))
            # ...and the gateway that took the stream held it: the agent did not greet again.
            assert started.greeting_prefetched is True
            greeting = turn_id_for_call(call.call_sid)
            agent_turns = {s.turn_id for s in says if s.session_id == sid}
            assert agent_turns == {greeting}, agent_turns
            # written without knowing the stream: its start is the gateway's to stamp
            assert all(s.timings.stream_started is None for s in says if s.session_id == sid)
            # The caller heard it, on the stream, with no caller turn before it.
            heard = [
                s
                for s in call.heard_segments
                if s.mark_name and s.mark_name.startswith(f"{greeting}:")
            ]
            assert heard and all(len(s.audio) > 0 for s in heard)
            assert stream.started_at is not None
            first_heard = min(s.first_received_at or float("inf") for s in heard)
            assert stream.started_at <= first_heard
            assert not any(
                isinstance(e, TranscriptEvent) and e.role == "user" and e.session_id == sid
                for e in events
            )
            # The gateway timed the greeting from the stream's start.
            latency = [
                e
                for e in events
                if isinstance(e, LatencyEvent) and e.session_id == sid and e.turn_id == greeting
            ]
            assert len(latency) == 1
            assert latency[0].timings.stream_started == started.at
            assert "greeting" in latency[0].stages_ms
            assert call.protocol_errors == []
        finally:
            await observer.close()
