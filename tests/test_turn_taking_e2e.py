"""Turn taking through the real fleet (the embedded models, Smart Turn, the scripted LLM's
``turn_taking`` scenario):

- a caller reading a phone number in groups, with pauses longer than the old fixed
  600 ms silence rule, after the agent asked for it, is not cut off: one utterance, one
  reply, and the transcript holds all ten digits;
- the speculative transcripts of the pauses the caller spoke through are dropped (the
  gateway counts them ``spoke_on``): the one utterance is transcribed whole;
- a backchannel ("yeah") over the agent's answer does not stop it; an interruption
  ("wait, hold on") gets Twilio a ``clear`` and a new answer;
- the greeting plays before the caller says anything.

No timing is asserted (the bench measures speed).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus, headers_of
from dealerline_common.entities import normalize_spoken
from dealerline_common.messages import (
    Say,
    Transcript,
    UtteranceMeta,
    from_header,
    loads,
)
from dealerline_sim.phone import PhoneSimulator, TalkOver, run_script

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NUMBER = "6172534892"
ASK_FOR_CALLBACK = "Could you call me back later today?"
# (digits Whisper tiny.en hears whole in this voice: it drops one of "three three")
READ_NUMBER = "six one seven <pause 900> two five three <pause 1000> four eight nine two"
QUESTION = "What services do you offer?"
# The agent has finished once nothing new played for this long: on a loaded 2-core CPU the
# next sentence can take over a second to synthesize, so shorter gaps are not the end.
QUIET_S = 2.5
SPECULATIONS = "dealerline_gateway_speculations_total"
SCENARIO = Path(str(importlib.resources.files("dealerline_sim") / "scenarios" / "turn_taking.yaml"))


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """The fleet and the bus observer live for the whole module, so their tasks outlive a
    test by design."""
    return


@dataclass
class Observer:
    """What crossed the bus: utterance headers, transcripts, the agent's sentences."""

    bus: Bus
    utterances: list[UtteranceMeta] = field(default_factory=list)
    transcripts: list[Transcript] = field(default_factory=list)
    says: list[Say] = field(default_factory=list)

    async def start(self) -> None:
        await self.bus.subscribe(subjects.ALL_UTTERANCES, self._on_utterance)
        await self.bus.subscribe(subjects.ALL_TRANSCRIPTS, self._on_transcript)
        await self.bus.subscribe(subjects.ALL_SAY, self._on_say)
        await self.bus.nc.flush()

    async def _on_utterance(self, msg: Msg) -> None:
        self.utterances.append(from_header(UtteranceMeta, headers_of(msg)))

    async def _on_transcript(self, msg: Msg) -> None:
        self.transcripts.append(loads(Transcript, msg.data))

    async def _on_say(self, msg: Msg) -> None:
        self.says.append(loads(Say, msg.data))

    def session(self, sid: str) -> tuple[list[UtteranceMeta], list[Transcript], list[Say]]:
        return (
            [u for u in self.utterances if u.session_id == sid],
            [t for t in self.transcripts if t.session_id == sid],
            [s for s in self.says if s.session_id == sid],
        )


@dataclass
class Lab:
    fleet: Fleet
    observer: Observer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    logs = Path("artifacts") / "e2e-turn-taking" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(log_dir=logs, llm=scripted, scenario=SCENARIO, quiet=True) as fleet:
        bus = Bus(str(fleet.nats_url), "turn-taking-observer")
        await bus.connect()
        observer = Observer(bus)
        await observer.start()
        try:
            yield Lab(fleet, observer)
        finally:
            await bus.close()


def place(lab: Lab) -> PhoneSimulator:
    f = lab.fleet
    return PhoneSimulator(f.gateway_url, f.public_url, f.auth_token, pace=1.0)


def replies_to(says: list[Say], utterance_ids: set[str]) -> set[str]:
    return {s.turn_id for s in says if s.utterance_id in utterance_ids}


async def metric(lab: Lab, name: str, labels: str) -> float:
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(f"{lab.fleet.gateway_url}/metrics")).text
    assert f"# HELP {name} " in text, f"no metric {name}"
    pattern = re.compile(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+-]+)$", re.M)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0  # no sample of that label yet


def spoken_between(
    transcripts: list[Transcript], start: float | None, end: float | None
) -> list[Transcript]:
    """What STT heard of the caller's speech that ended between ``start`` and ``end``."""
    lo, hi = start or 0.0, end or float("inf")
    return [t for t in transcripts if lo <= (t.timings.speech_end or 0.0) < hi]


async def test_a_phone_number_read_with_pauses_is_one_turn_with_one_reply(lab: Lab) -> None:
    spoke_on_before = await metric(lab, SPECULATIONS, 'outcome="spoke_on"')
    async with place(lab) as sim:
        call = await sim.place_call("+14155550123", "+18005550100")
        async with call:
            turns = await run_script(
                call, [ASK_FOR_CALLBACK, READ_NUMBER], quiet_s=QUIET_S, timeout_s=90
            )
        sid = call.custom_parameters["session_id"]
    utterances, transcripts, says = lab.observer.session(sid)
    # the greeting came first, before the caller said a word
    greeting, asked, read = turns
    assert greeting.caller_text is None and greeting.heard_audio
    first_said = call.said[0].started_at
    assert call.first_media_received_at is not None and first_said is not None
    assert call.first_media_received_at < first_said
    # the agent asked for the number: its turn expects a phone number
    request = spoken_between(transcripts, asked.caller_started_at, read.caller_started_at)
    (ask_turn,) = replies_to(says, {t.utterance_id for t in request})
    closing = [s for s in says if s.turn_id == ask_turn and s.last]
    assert closing and closing[-1].expects == "phone", closing
    # the number: one utterance (not cut in the pauses), one transcript, one reply
    assert read.caller_started_at is not None
    mine = [
        u
        for u in utterances
        if u.timings.speech_end is not None and u.timings.speech_end >= read.caller_started_at
    ]
    assert len(mine) == 1, [(u.end_of_turn, u.duration_ms) for u in mine]
    (number_utt,) = mine
    assert number_utt.end_of_turn is not None
    assert number_utt.end_of_turn.reason not in ("silence", "max_length", "flush")
    (heard,) = [t for t in transcripts if t.utterance_id == number_utt.utterance_id]
    assert NUMBER in re.sub(r"\D", "", normalize_spoken(heard.text)), heard.text
    assert len(replies_to(says, {number_utt.utterance_id})) == 1
    assert read.heard_audio, "the caller heard the reply"
    # the probes of the pauses the caller spoke through were dropped, not used
    spoke_on = await metric(lab, SPECULATIONS, 'outcome="spoke_on"')
    assert spoke_on - spoke_on_before >= 1
    if number_utt.transcript is not None:  # a speculative transcript is of all of it
        assert NUMBER in re.sub(r"\D", "", normalize_spoken(number_utt.transcript.text))
    assert call.protocol_errors == []


async def test_a_backchannel_does_not_stop_the_answer_an_interruption_does(lab: Lab) -> None:
    steps = [
        QUESTION,
        TalkOver("yeah", after_ms=1500, kind="backchannel"),
        TalkOver("wait, hold on", after_ms=2500, kind="interruption"),
    ]
    async with place(lab) as sim:
        call = await sim.place_call("+14155550123", "+18005550100")
        async with call:
            turns = await run_script(call, steps, quiet_s=QUIET_S, timeout_s=90)
        sid = call.custom_parameters["session_id"]
    backchannel, interruption = call.talk_overs
    assert turns[2].talk_over is backchannel and turns[3].talk_over is interruption
    # "yeah": no clear, the answer went on playing
    assert not backchannel.cleared, backchannel
    assert backchannel.agent_went_on, backchannel
    assert backchannel.turn is not None
    # "wait, hold on": a clear, the answer stopped, and a new one followed
    assert interruption.cleared, interruption
    assert not interruption.agent_went_on
    # Both spoke over the same answer (the simulator names the turn it heard playing when
    # the clip began; under load a gap between two of the answer's sentences leaves none).
    assert interruption.turn in (backchannel.turn, None), "both spoke over the same answer"
    _, transcripts, says = lab.observer.session(sid)
    turn_ids = {s.turn_id for s in says}
    assert len(turn_ids) >= 3  # greeting, the answer, the answer to the interruption
    new = [t for t in turns[3].mark_names if not t.startswith(f"{backchannel.turn}:")]
    assert new, "the caller heard the answer to the interruption"
    # the backchannel was not a turn: nothing of "yeah" reached the agent
    assert not any(t.text.strip().lower().startswith("yeah") for t in transcripts), transcripts
    assert call.protocol_errors == []
