"""Scripted callers: a list of steps said in turn, each followed by the agent's reply.

A step is a line of text (pause marks allowed: ``"five five five <pause 800> one two
three"``), :class:`~dealerline_sim.caller_speech.Recorded` audio, or a
:class:`~dealerline_sim.talk_over.TalkOver`: once the agent's audio is playing, the caller
says a clip over it. :func:`run_script` waits for the greeting, then says each step and
waits until the agent has finished answering (not before a step followed by a
``TalkOver``: that one talks over the answer); every exchange becomes a :class:`Turn` (what
was said, when the caller's speech began and ended, which segments were heard, the
talk-over's record, and optionally their transcript).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dealerline_sim.call import Call
from dealerline_sim.call_records import HeardSegment, SaidUtterance, TalkOverRecord
from dealerline_sim.caller_speech import Recorded
from dealerline_sim.talk_over import TalkOver, finish, talk_over
from dealerline_sim.voice import Transcriber

__all__ = ["CallerScript", "ScriptItem", "Turn", "run_script"]

ScriptItem = str | Recorded | TalkOver


@dataclass
class Turn:
    """One exchange: what the caller said (None for the greeting) and what followed."""

    index: int
    caller_text: str | None
    caller_started_at: float | None
    caller_ended_at: float | None
    segments: list[HeardSegment]
    heard_text: str | None = None
    talk_over: TalkOverRecord | None = None

    @property
    def mark_names(self) -> list[str]:
        return [s.mark_name for s in self.segments if s.mark_name]

    @property
    def heard_audio(self) -> bytes:
        return b"".join(bytes(s.audio) for s in self.segments)

    @property
    def first_media_at(self) -> float | None:
        times = [s.first_received_at for s in self.segments if s.first_received_at]
        return min(times) if times else None

    @property
    def latency_s(self) -> float | None:
        """Wall seconds from the end of the caller's speech to the reply's first audio."""
        if self.caller_ended_at is None or self.first_media_at is None:
            return None
        return self.first_media_at - self.caller_ended_at

    @property
    def cleared(self) -> bool:
        return any(s.cleared for s in self.segments)


@dataclass
class CallerScript:
    """What a scripted caller says, one step per turn, and how long it waits."""

    lines: list[ScriptItem]
    wait_for_greeting: bool = True
    quiet_s: float = 1.2
    timeout_s: float = 60.0

    async def run(self, call: Call, transcriber: Transcriber | None = None) -> list[Turn]:
        return await run_script(
            call,
            self.lines,
            transcriber,
            wait_for_greeting=self.wait_for_greeting,
            quiet_s=self.quiet_s,
            timeout_s=self.timeout_s,
        )


def _texts(items: Sequence[ScriptItem]) -> list[str]:
    """The text steps to synthesize ahead of time."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, TalkOver) and isinstance(item.clip, str):
            out.append(item.clip)
    return out


async def _say(call: Call, item: str | Recorded) -> SaidUtterance:
    if isinstance(item, Recorded):
        return await call.say_audio(item.audio, text=item.text)
    return await call.say(item)


SETTLE_MAX_S = 15.0
SETTLE_POLL_S = 0.05


async def _wait_reply(
    call: Call,
    quiet_s: float,
    timeout_s: float,
    min_bytes: int,
    settled: Callable[[], bool] | None,
) -> None:
    """Wait for the agent's reply to be heard: quiet for ``quiet_s``, and, given
    ``settled`` (the bus says the agent's latest turn was played to its end), that too — a
    quiet gap alone can fall between two sentences when synthesis is slow. ``settled`` is
    waited for at most ``SETTLE_MAX_S`` (a turn cut short by a barge-in never settles)."""
    await call.wait_until_quiet(quiet_s, timeout_s, min_bytes=min_bytes)
    if settled is None or settled():
        return
    for _ in range(round(SETTLE_MAX_S / SETTLE_POLL_S)):
        await asyncio.sleep(SETTLE_POLL_S)
        if settled():
            break
    await call.wait_until_quiet(quiet_s, timeout_s, min_bytes=min_bytes)


async def run_script(
    call: Call,
    lines: Sequence[ScriptItem] | CallerScript,
    transcriber: Transcriber | None = None,
    *,
    wait_for_greeting: bool = True,
    quiet_s: float = 1.2,
    timeout_s: float = 60.0,
    settled: Callable[[], bool] | None = None,
) -> list[Turn]:
    """Turn-taking: wait for the greeting, then say each step and wait for the reply.

    Returns one :class:`Turn` per exchange (the greeting first, with ``caller_text``
    None); with a ``transcriber`` each turn's ``heard_text`` is what the caller heard.
    A step followed by a :class:`TalkOver` does not wait for the agent to finish: the
    talk-over speaks over that answer (a ``TalkOver`` first talks over the greeting).
    """
    if isinstance(lines, CallerScript):
        script = lines
        lines, wait_for_greeting = script.lines, script.wait_for_greeting
        quiet_s, timeout_s = script.quiet_s, script.timeout_s
    items = list(lines)
    turns: list[Turn] = []
    prepared = call.sim.prepare(*_texts(items), voice=call.sim.caller_voice)
    since = time.time()
    if wait_for_greeting and not (items and isinstance(items[0], TalkOver)):
        await asyncio.gather(_wait_reply(call, quiet_s, timeout_s, 1, settled), prepared)
        turns.append(Turn(0, None, None, None, list(call.heard_segments)))
    else:
        await prepared
    for i, item in enumerate(items):
        first = len(call.heard_segments)
        record: TalkOverRecord | None = None
        if isinstance(item, TalkOver):
            record = await talk_over(call, item, since=since, timeout_s=timeout_s)
            started, ended, text = record.onset_at, record.speech_ended_at, item.text
        else:
            said = await _say(call, item)
            started, ended, text = said.started_at, said.speech_ended_at, said.text
        since = ended or time.time()
        if i + 1 < len(items) and isinstance(items[i + 1], TalkOver):
            turns.append(Turn(len(turns), text, started, ended, [], talk_over=record))
            continue
        await _wait_reply(call, quiet_s, timeout_s, _reply_bytes(item), settled)
        if record is not None:
            finish(call, record)
        turns.append(
            Turn(len(turns), text, started, ended, call.heard_segments[first:], talk_over=record)
        )
    records = [t.talk_over for t in turns if t.talk_over is not None]
    for i, record in enumerate(records):
        nxt = records[i + 1] if i + 1 < len(records) else None
        if not record.finished:
            finish(call, record, nxt.clip_queued_at if nxt is not None else None)
    if transcriber is not None:
        for turn in turns:
            audio = turn.heard_audio
            turn.heard_text = await transcriber.transcribe_ulaw(audio) if audio else ""
    return turns


def _reply_bytes(item: ScriptItem) -> int:
    """A backchannel may get no reply of its own (the agent just goes on)."""
    return 0 if isinstance(item, TalkOver) and item.kind == "backchannel" else 1
