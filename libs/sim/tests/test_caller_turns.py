"""The simulated caller's turn-taking features: lines with explicit pauses, recorded audio,
and talking over the agent (backchannels and interruptions), against the fake gateway."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from phone_kit import PUBLIC, TOKEN, FakeGateway, noise, until

from dealerline_common.audio import FRAME_BYTES, FRAME_MS, frames, rms, ulaw_to_pcm16
from dealerline_sim.caller_speech import (
    Recorded,
    has_pauses,
    parse_line,
    spoken_text,
    synthesize_line,
)
from dealerline_sim.phone import Call, PhoneSimulator, TalkOver, Transcriber, run_script, talk_over
from dealerline_sim.talk_over import finish

PACE = 4.0
PHONE_LINE = "five five five <pause 800> one two three <pause 900> four five six seven"


def test_parse_line_splits_on_pause_marks() -> None:
    assert parse_line(PHONE_LINE) == [
        ("five five five", 800.0),
        ("one two three", 900.0),
        ("four five six seven", 0.0),
    ]
    assert parse_line("My VIN is <PAUSE 1200ms> one two") == [
        ("My VIN is", 1200.0),
        ("one two", 0.0),
    ]
    assert parse_line("no pauses here") == [("no pauses here", 0.0)]
    assert spoken_text(PHONE_LINE) == "five five five one two three four five six seven"
    assert has_pauses(PHONE_LINE)
    assert not has_pauses("five five five")


@pytest.mark.parametrize(
    "bad",
    [
        "<pause 500> hello",
        "hello <pause 500>",
        "a <pause 300> <pause 300> b",
        "",
        "x <pause 99999> y",
    ],
)
def test_parse_line_rejects_malformed_lines(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_line(bad)


def _voiced_flags(audio: bytes) -> list[bool]:
    return [rms(ulaw_to_pcm16(f)) > 300.0 for f in frames(audio)]


async def test_synthesized_pauses_are_the_silence_asked_for() -> None:
    line = await synthesize_line(PHONE_LINE, "jm_kumo")
    assert line.text == "five five five one two three four five six seven"
    assert line.pauses_ms == (800.0, 900.0)
    assert len(line.pause_spans_ms) == 2
    flags = _voiced_flags(line.audio)
    for (start, end), asked in zip(line.pause_spans_ms, line.pauses_ms, strict=True):
        assert abs((end - start) - asked) <= FRAME_MS + 1
        inside = flags[int(start // FRAME_MS) + 1 : int(end // FRAME_MS) - 1]
        assert inside
        assert not any(inside), "nothing voiced inside a pause"
        assert flags[int(start // FRAME_MS) - 1], "speech right before the pause"
        assert flags[int(end // FRAME_MS)], "speech right after the pause"
    # the longest unvoiced run of the whole line is one of the pauses
    longest = run = 0
    for voiced in flags:
        run = 0 if voiced else run + 1
        longest = max(longest, run)
    assert abs(longest * FRAME_MS - 900.0) <= 2 * FRAME_MS


@pytest.fixture
async def fake() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    await gw.server.start()
    try:
        yield gw
    finally:
        await gw.server.stop()


def _sent_audio(fake: FakeGateway) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in fake.events("media"))


async def test_a_line_with_pauses_goes_out_with_its_silences(fake: FakeGateway) -> None:
    transcriber = Transcriber()
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE) as sim:
        await sim.prepare(PHONE_LINE)
        call = await sim.place_call("+14155550100", "+14155550199")
        said = await call.say(PHONE_LINE)
        await call.hangup()
    assert said.text == "five five five one two three four five six seven"
    line = await synthesize_line(PHONE_LINE, "jm_kumo")
    sent = _sent_audio(fake)
    assert line.audio[: len(line.audio) - FRAME_BYTES] in sent
    heard = await transcriber.transcribe_ulaw(line.audio)
    digits = "".join(ch for ch in heard if ch.isdigit())
    words = heard.lower()
    assert len(digits) >= 7 or words.count("five") >= 4, heard


class Talker:
    """The fake gateway as an agent: after the caller's first speech a long reply of four
    1 s sentences (marks ``turn-1:0..3``); with ``clear_after``, ``clear_after`` voiced
    frames of speech over it send a ``clear``, and the end of that speech gets a short
    reply (``turn-2:0``)."""

    def __init__(self, fake: FakeGateway, clear_after: int | None) -> None:
        self.fake = fake
        self.clear_after = clear_after
        self.turn = 0
        self.voiced = 0  # voiced frames of the caller's speech in progress
        self.silent = 0
        self.cleared = False
        self.tasks: list[asyncio.Task[None]] = []

    async def _reply(self, turn: int, sentences: int) -> None:
        for n in range(sentences):
            await self.fake.send_media(noise(8000, 10 * turn + n))
            await self.fake.send_mark(f"turn-{turn}:{n}")

    async def __call__(self, msg: dict[str, Any]) -> None:
        if msg["event"] != "media":
            return
        if rms(ulaw_to_pcm16(base64.b64decode(msg["media"]["payload"]))) > 500:
            self.voiced += 1
            self.silent = 0
        else:
            self.silent += 1
        over_us = self.turn >= 1 and self.clear_after is not None and not self.cleared
        if over_us and self.voiced >= self.clear_after:
            self.cleared = True
            await self.fake.send_clear()
        if self.voiced and self.silent >= 10:  # the caller's speech ended
            self.voiced = 0
            if self.turn == 0:
                self.tasks.append(asyncio.create_task(self._reply(1, 4)))
            elif self.cleared and self.turn == 1:
                self.tasks.append(asyncio.create_task(self._reply(2, 1)))
            self.turn += 1

    async def close(self) -> None:
        for t in self.tasks:
            await t


def _over(call: Call, interrupts: bool) -> bool:
    names = [e.name for e in call.mark_echoes]
    return call.playout.idle and ("turn-2:0" in names if interrupts else len(names) == 4)


@pytest.mark.parametrize("interrupts", [False, True])
async def test_talk_over_records_clear_and_whether_the_agent_went_on(
    fake: FakeGateway, interrupts: bool
) -> None:
    agent = Talker(fake, clear_after=5 if interrupts else None)
    fake.on_message = agent
    kind = "interruption" if interrupts else "backchannel"
    clip = Recorded(noise(2400, 99), text="wait" if interrupts else "uh-huh")  # 300 ms
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE) as sim:
        call = await sim.place_call("+14155550100", "+14155550199")
        said = await call.say_audio(noise(1600, 1), text="question")
        record = await talk_over(
            call, TalkOver(clip, after_ms=1200, kind=kind), since=said.speech_ended_at
        )
        await until(lambda: _over(call, interrupts), "the replies played")
        finish(call, record)
        await call.hangup()
        await agent.close()
    assert call.talk_overs == [record]
    assert record.onset_at is not None
    assert record.agent_playing_at is not None
    assert record.onset_at - record.agent_playing_at >= 1.2 / PACE * 0.9
    assert record.turn == "turn-1"
    assert record.finished
    if interrupts:
        assert record.cleared
        assert record.clear_delay_ms is not None
        assert record.clear_delay_ms > 0
        assert not record.agent_went_on
        assert record.stopped_playback
        assert record.went_on_ms == 0.0
    else:
        assert not record.cleared
        assert record.clear_delay_ms is None
        assert record.agent_went_on
        # 4 s of reply, the clip ended about 1.5 s in: most of it played afterwards
        assert 1500.0 < record.went_on_ms <= 3000.0


async def test_run_script_talks_over_the_reply(fake: FakeGateway) -> None:
    agent = Talker(fake, clear_after=5)
    fake.on_message = agent
    question = Recorded(noise(1600, 2), text="question")
    steps = [question, TalkOver(Recorded(noise(2400, 3), text="wait"), 600, "interruption")]
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE) as sim:
        call = await sim.place_call("+14155550100", "+14155550199")
        turns = await run_script(call, steps, wait_for_greeting=False, quiet_s=0.5, timeout_s=30)
        await call.hangup()
        await agent.close()
    assert [t.caller_text for t in turns] == ["question", "wait"]
    assert turns[0].talk_over is None
    assert turns[0].segments == []  # the talk-over came before the reply was over
    record = turns[1].talk_over
    assert record is not None
    assert record.finished
    assert record.cleared
    assert record.kind == "interruption"
    assert call.clears
    assert turns[1].cleared
    assert "turn-2:0" in turns[1].mark_names  # the answer to the interruption was heard


async def test_a_recording_with_a_known_onset_times_the_talk_over_from_it(
    fake: FakeGateway,
) -> None:
    agent = Talker(fake, clear_after=5)
    fake.on_message = agent
    lead = bytes([0xFF]) * 2400  # 300 ms of silence before the words
    clip = Recorded(lead + noise(2400, 7), text="wait", onset_ms=300.0)
    assert Recorded(lead + noise(2400, 7)).onset_ms is None
    with pytest.raises(ValueError):
        Recorded(lead, onset_ms=400.0)
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE) as sim:
        call = await sim.place_call("+14155550100", "+14155550199")
        said = await call.say_audio(noise(1600, 1), text="question")
        record = await talk_over(
            call, TalkOver(clip, after_ms=800, kind="interruption"), since=said.speech_ended_at
        )
        await until(lambda: _over(call, True), "the replies played")
        finish(call, record)
        await call.hangup()
        await agent.close()
    voiced = call.said[-1].started_at  # the first loud frame went out
    assert voiced is not None
    assert record.onset_at is not None
    assert abs(record.onset_at - voiced) <= 2 * FRAME_MS / 1000.0 / PACE + 0.01
    assert record.clip_queued_at is not None
    assert record.onset_at - record.clip_queued_at >= 0.3 / PACE * 0.9
    assert record.cleared


def test_interleave_puts_an_interruption_after_each_four_backchannels() -> None:
    from dealerline_sim.talk_over_bench import Clip, interleave

    def clip(kind: str, n: int) -> Clip:
        return Clip(kind, Recorded(noise(160, n)), f"{kind[0]}{n}")  # type: ignore[arg-type]

    backs = [clip("backchannel", n) for n in range(6)]
    inters = [clip("interruption", n) for n in range(3)]
    order = [c.label for c in interleave(backs, inters)]
    assert order == ["b0", "b1", "b2", "b3", "i0", "b4", "b5", "i1", "i2"]
    assert [c.label for c in interleave([], inters)] == ["i0", "i1", "i2"]


def test_stats_count_stops_misses_and_clear_delays() -> None:
    from dealerline_sim.call_records import TalkOverRecord
    from dealerline_sim.talk_over_bench import Clip, stats

    def pair(
        kind: str, label: str, clear_at: float | None, went_on: float
    ) -> tuple[Clip, TalkOverRecord]:
        record = TalkOverRecord(kind, label, 1000.0, onset_at=10.0, clear_at=clear_at)  # type: ignore[arg-type]
        record.went_on_ms = went_on
        return Clip(kind, Recorded(noise(160, 1)), label), record  # type: ignore[arg-type]

    s = stats(
        [
            pair("backchannel", "b-ok", None, 900.0),
            pair("backchannel", "b-cleared", 10.3, 0.0),
            pair("backchannel", "b-held", None, 0.0),  # never resumed
            pair("interruption", "i-ok", 10.25, 0.0),
            pair("interruption", "i-missed", None, 2000.0),
        ]
    )
    assert (s.backchannels, s.interruptions) == (3, 2)
    assert s.backchannels_stopping == ["b-cleared", "b-held"]
    assert s.interruptions_missed == ["i-missed"]
    assert [round(ms) for ms in s.clear_after_onset_ms] == [250]
