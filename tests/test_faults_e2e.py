"""Faults through the real fleet: a speech worker that dies mid-turn loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import Transcript, loads
from dealerline_sim.demo import word_error_rate
from dealerline_sim.phone import PhoneSimulator

pytestmark = pytest.mark.e2e

LINE = "Hi, I would like to book an oil change for my car."


async def test_a_stt_worker_dying_mid_turn_does_not_lose_the_callers_turn() -> None:
    logs = Path("artifacts") / "e2e-faults" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    # No ack_wait forced: the default (2 s, kept alive by heartbeats while a worker lives)
    # is what brings the dead worker's job back.
    async with Fleet(log_dir=logs, llm=scripted, quiet=True) as fleet:
        observer = Bus(str(fleet.nats_url), "fault-observer")
        await observer.connect()
        utterances: list[Msg] = []
        transcripts: list[Transcript] = []

        async def on_utterance(msg: Msg) -> None:
            utterances.append(msg)

        async def on_transcript(msg: Msg) -> None:
            transcripts.append(loads(Transcript, msg.data))

        await observer.subscribe(subjects.ALL_UTTERANCES, on_utterance)
        await observer.subscribe(subjects.ALL_TRANSCRIPTS, on_transcript)
        try:
            async with PhoneSimulator(
                fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=2.0
            ) as sim:
                call = await sim.place_call("+14155550123", "+18005550100")
                async with call:
                    await call.wait_until_quiet(1.2, 90)  # the greeting
                    stt = fleet.procs["stt"].process
                    os.kill(stt.pid, signal.SIGSTOP)  # the worker hangs mid-job ...
                    await call.say(LINE)
                    async with asyncio.timeout(30):
                        while not utterances:
                            await asyncio.sleep(0.05)
                    await asyncio.sleep(0.5)
                    assert transcripts == [], "the frozen worker cannot have answered"
                    await fleet.restart("stt")  # ... and dies; a new one takes its place
                    await call.wait_until_quiet(1.2, 120)  # the agent still answers
            assert len(transcripts) >= 1
            assert word_error_rate(LINE, transcripts[0].text) < 0.2
            heard = [
                s
                for s in call.heard_segments
                if s.first_received_at and s.first_received_at > (call.speech_ended_at or 0)
            ]
            assert heard, "the caller heard a reply to the turn the dead worker had taken"
        finally:
            await observer.close()
