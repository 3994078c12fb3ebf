"""The caller talks over the agent: a backchannel ("uh-huh") or an interruption ("wait").

:func:`talk_over` waits until the agent's audio is playing to the caller (audio played at
or after ``since``), lets ``after_ms`` of simulated time pass, then says a clip while the
playout keeps running (the caller still hears the agent). The :class:`TalkOverRecord`
says when the clip's speech began (its first voiced frame: the onset), whether Twilio got
a ``clear`` and how long after the onset, and whether the agent's audio went on: how much
of the turn that was playing at the onset was still played after the clip had been sent.
Turns are told apart by their marks (``<turn>:<n>``, the gateway's naming; a mark without a
colon is its own turn).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from dealerline_common.audio import FRAME_MS, SAMPLE_RATE, frames
from dealerline_sim.call import Call
from dealerline_sim.call_records import (
    HeardSegment,
    SaidUtterance,
    TalkKind,
    TalkOverRecord,
    mark_turn,
)
from dealerline_sim.caller_speech import Recorded

__all__ = ["TalkOver", "finish", "talk_over"]


@dataclass(frozen=True)
class TalkOver:
    """A script step: once the agent's audio is playing, after ``after_ms`` say ``clip``."""

    clip: str | Recorded
    after_ms: float = 800.0
    kind: TalkKind = "backchannel"

    @property
    def text(self) -> str | None:
        return self.clip if isinstance(self.clip, str) else self.clip.text


def _playing_at(segments: list[HeardSegment], at: float) -> HeardSegment | None:
    """The segment heard at wall time ``at`` (else the last one that began before it)."""
    started = [s for s in segments if s.first_played_at is not None and s.first_played_at <= at]
    return started[-1] if started else None


async def _wait_playing(call: Call, since: float, timeout_s: float) -> float:
    """Wall time the agent's audio was (first) heard playing at or after ``since``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        for seg in call.heard_segments:
            if seg.last_played_at is not None and seg.last_played_at >= since and seg.audio:
                first = seg.first_played_at or since
                return max(first, since)
        if call.closed.is_set():
            raise TimeoutError("the call ended before the agent's audio played")
        if loop.time() >= deadline:
            raise TimeoutError(f"no agent audio played within {timeout_s}s")
        await asyncio.sleep(0.005)


async def talk_over(
    call: Call,
    step: TalkOver,
    *,
    since: float | None = None,
    timeout_s: float = 60.0,
) -> TalkOverRecord:
    """Say ``step.clip`` over the agent's audio (see the module doc). Returns once the clip
    has been sent; :meth:`finish` fills the outcome once the agent has gone quiet. The
    record is appended to ``call.talk_overs``."""
    record = TalkOverRecord(step.kind, step.text, step.after_ms)
    call.talk_overs.append(record)
    record.agent_playing_at = await _wait_playing(
        call, time.time() if since is None else since, timeout_s
    )
    wait_s = record.agent_playing_at + step.after_ms / 1000.0 / call.pace - time.time()
    if wait_s > 0:
        await asyncio.sleep(wait_s)
    record.clip_queued_at = time.time()
    if isinstance(step.clip, Recorded):
        said = await call.say_audio(step.clip.audio, text=step.clip.text)
    else:
        said = await call.say(step.clip)
    record.onset_at = _onset(said, step.clip, call.pace)
    record.speech_ended_at = said.speech_ended_at
    record.clip_sent_at = said.finished_at
    record.heard_when_sent = [len(s.audio) for s in call.heard_segments]
    return record


def _onset(said: SaidUtterance, clip: str | Recorded, pace: float) -> float | None:
    """When the clip's speech began: its first voiced frame, or for a recording with a
    known onset, the first frame's slot plus that onset (line noise may be voiced)."""
    if not isinstance(clip, Recorded) or clip.onset_ms is None or said.finished_at is None:
        return said.started_at
    n = len(frames(clip.audio))
    first_sent = said.finished_at - (n - 1) * FRAME_MS / 1000.0 / pace
    return first_sent + clip.onset_ms / 1000.0 / pace


def finish(call: Call, record: TalkOverRecord, until: float | None = None) -> TalkOverRecord:
    """Fill the outcome of ``record`` from what the call heard and received so far; a
    ``clear`` counts when it came after the clip was queued (and before ``until``: the
    next talk-over's clip, which owns the clears after it)."""
    queued = record.clip_queued_at
    if queued is not None:
        limit = until if until is not None else float("inf")
        clears = [c.at for c in call.clears if queued <= c.at < limit]
        record.clear_at = min(clears) if clears else None
    segments = list(call.heard_segments)
    onset = record.onset_at
    if onset is None or record.clip_sent_at is None:
        record.finished = True
        return record
    playing = _playing_at(segments, onset)
    record.turn = mark_turn(playing.mark_name) if playing is not None else None
    before = record.heard_when_sent + [0] * (len(segments) - len(record.heard_when_sent))
    after = [len(s.audio) - n for s, n in zip(segments, before, strict=True)]
    record.heard_after_ms = sum(after) * 1000.0 / SAMPLE_RATE
    same = sum(
        n
        for s, n in zip(segments, after, strict=True)
        if s is playing or (record.turn is not None and mark_turn(s.mark_name) == record.turn)
    )
    record.went_on_ms = same * 1000.0 / SAMPLE_RATE
    record.finished = True
    return record
