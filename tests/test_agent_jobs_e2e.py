"""Greetings are durable work, through the real fleet: a call that rings while the agent's
process is dead (SIGKILL) has its greeting asked for as a job (``call.<sid>.agent_job``);
the gateway holds the stream, and once an agent process is up again it takes the job and
the caller hears the greeting, once, on the stream that is already open."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.msg import Msg

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import turn_id_for_call
from dealerline_common.messages import Say, StreamStarted, loads, parse_control
from dealerline_sim.phone import PhoneSimulator

pytestmark = pytest.mark.e2e


async def test_a_call_that_rings_while_no_agent_is_up_is_greeted_once_one_is() -> None:
    logs = Path("artifacts") / "e2e-agent-jobs" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(log_dir=logs, llm=scripted, quiet=True) as fleet:
        observer = Bus(str(fleet.nats_url), "jobs-observer")
        await observer.connect()
        says: list[Say] = []
        starts: list[StreamStarted] = []

        async def on_say(msg: Msg) -> None:
            says.append(loads(Say, msg.data))

        async def on_control(msg: Msg) -> None:
            control = parse_control(msg.data)
            if isinstance(control, StreamStarted):
                starts.append(control)

        await observer.subscribe(subjects.ALL_SAY, on_say)
        await observer.subscribe(subjects.ALL_CONTROL, on_control)
        await observer.nc.flush()
        try:
            fleet.kill("agent")  # a crash: no agent process is up when the call rings
            async with PhoneSimulator(
                fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=1.0
            ) as sim:
                call = await sim.place_call("+14155550123", "+18005550100")
                async with call:
                    await call.wait_for_stream(1, timeout_s=60)
                    assert call.playout.reply_bytes == 0, "nobody could greet yet"
                    await fleet.restart("agent")
                    await call.wait_until_quiet(1.2, 120)  # the greeting, from the job
                sid = call.custom_parameters["session_id"]
        finally:
            await observer.close()
        [started] = [s for s in starts if s.session_id == sid]
        assert started.greeting_prefetched, "the gateway held the stream for the job's greeting"
        greeting = turn_id_for_call(call.call_sid)
        mine = [s for s in says if s.session_id == sid]
        assert {s.turn_id for s in mine} == {greeting}, "one greeting, no second one"
        seqs = [s.seq for s in mine]
        assert sorted(seqs) == list(range(len(mine))) and mine[-1].last
        heard = [
            s for s in call.heard_segments if s.mark_name and s.mark_name.startswith(f"{greeting}:")
        ]
        assert heard and all(len(s.audio) > 0 for s in heard)
        assert call.protocol_errors == []
