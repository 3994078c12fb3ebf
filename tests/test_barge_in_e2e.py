"""Barge-in through the real fleet: the caller talks over a long reply; the gateway
clears Twilio's buffer, the agent keeps only what was heard, and the rest of the
interrupted reply is never played."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import Say, TranscriptEvent, loads, parse_event
from dealerline_sim.phone import PhoneSimulator

pytestmark = pytest.mark.e2e


async def test_the_caller_interrupts_a_long_reply() -> None:
    logs = Path("artifacts") / "e2e-barge-in" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(log_dir=logs, llm=scripted, quiet=True) as fleet:
        observer = Bus(str(fleet.nats_url), "barge-in-observer")
        await observer.connect()
        says: list[Say] = []
        assistant: list[TranscriptEvent] = []

        async def on_say(msg: Msg) -> None:
            says.append(loads(Say, msg.data))

        async def on_event(msg: Msg) -> None:
            event = parse_event(msg.data)
            if isinstance(event, TranscriptEvent) and event.role == "assistant":
                assistant.append(event)

        await observer.subscribe(subjects.ALL_SAY, on_say)
        await observer.subscribe(subjects.ALL_EVENTS, on_event)
        try:
            async with PhoneSimulator(
                fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=1.0
            ) as sim:
                await sim.prepare("What services do you offer?", "Sorry, can you hold on?")
                call = await sim.place_call("+14155550123", "+18005550100")
                async with call:
                    await call.wait_until_quiet(1.2, 90)  # the greeting
                    echoed_before = len(call.mark_echoes)
                    await call.say("What services do you offer?")
                    # the first sentence of the long reply has been heard ...
                    async with asyncio.timeout(60):
                        while len(call.mark_echoes) == echoed_before:
                            await asyncio.sleep(0.02)
                    # ... and the caller talks over the rest
                    await call.say("Sorry, can you hold on?")
                    async with asyncio.timeout(30):
                        while not call.clears:
                            await asyncio.sleep(0.02)
                    await call.wait_until_quiet(1.2, 90)  # the agent answers the interruption
                    clear_at = call.clears[0].at
            interrupted = [e for e in assistant if e.interrupted]
            assert len(interrupted) == 1, assistant
            turn_id = interrupted[0].turn_id
            full = " ".join(
                s.text for s in sorted(says, key=lambda s: s.seq) if s.turn_id == turn_id and s.text
            )
            heard = interrupted[0].text
            assert heard, "the first sentence was heard"
            assert full.startswith(heard.split(".")[0]), (heard, full)
            assert len(heard) < len(full), "only what the caller heard stays in history"
            # nothing of the interrupted turn played after the clear
            late = [
                s
                for s in call.heard_segments
                if s.mark_name
                and s.mark_name.startswith(f"{turn_id}:")
                and s.first_played_at is not None
                and s.first_played_at > clear_at
            ]
            assert late == []
            # the agent answered the interruption with a new turn that the caller heard
            assert any(e.turn_id != turn_id and not e.interrupted for e in assistant[-1:])
            assert call.protocol_errors == []
        finally:
            await observer.close()
