"""Scripted callers: a list of lines said in turn, each followed by the agent's reply.

:func:`run_script` waits for the greeting, then says each line and waits until the agent
has finished answering; every exchange becomes a :class:`Turn` (what was said, when the
caller stopped speaking, which segments were heard, and optionally their transcript).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from dealerline_sim.call import Call
from dealerline_sim.call_records import HeardSegment
from dealerline_sim.voice import Transcriber

__all__ = ["CallerScript", "Turn", "run_script"]


@dataclass
class Turn:
    """One exchange: what the caller said (None for the greeting) and what followed."""

    index: int
    caller_text: str | None
    caller_started_at: float | None
    caller_ended_at: float | None
    segments: list[HeardSegment]
    heard_text: str | None = None

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
    """What a scripted caller says, one line per turn, and how long it waits."""

    lines: list[str]
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


async def run_script(
    call: Call,
    lines: Sequence[str] | CallerScript,
    transcriber: Transcriber | None = None,
    *,
    wait_for_greeting: bool = True,
    quiet_s: float = 1.2,
    timeout_s: float = 60.0,
) -> list[Turn]:
    """Turn-taking: wait for the greeting, then say each line and wait for the reply.

    Returns one :class:`Turn` per exchange (the greeting first, with ``caller_text``
    None); with a ``transcriber`` each turn's ``heard_text`` is what the caller heard.
    """
    if isinstance(lines, CallerScript):
        script = lines
        lines, wait_for_greeting = script.lines, script.wait_for_greeting
        quiet_s, timeout_s = script.quiet_s, script.timeout_s
    voice = call.sim.caller_voice
    turns: list[Turn] = []
    if wait_for_greeting:
        await asyncio.gather(
            call.wait_until_quiet(quiet_s, timeout_s), call.sim.prepare(*lines, voice=voice)
        )
        turns.append(Turn(0, None, None, None, list(call.heard_segments)))
    else:
        await call.sim.prepare(*lines, voice=voice)
    for line in lines:
        said = await call.say(line)
        first = len(call.heard_segments)
        await call.wait_until_quiet(quiet_s, timeout_s)
        turns.append(
            Turn(
                len(turns),
                line,
                said.started_at,
                said.speech_ended_at,
                call.heard_segments[first:],
            )
        )
    if transcriber is not None:
        for turn in turns:
            audio = turn.heard_audio
            turn.heard_text = await transcriber.transcribe_ulaw(audio) if audio else ""
    return turns
