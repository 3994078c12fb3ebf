"""Talking over the agent through the real fleet: backchannels and interruptions.

One call: the caller asks a question with a long answer (``PROMPT``), and while the
answer plays says a dev-set clip over it, ``after_ms`` after the agent's audio is playing
again. A backchannel ("uh-huh") should leave the answer playing: the next clip follows
over the same answer (at most four over one answer, so that plenty of it is left to go
on). An interruption ("wait") should clear it; the caller then waits for
the agent's reply and asks again. A clip that stopped the answer is followed by a new
question too. Every clip's :class:`~dealerline_sim.call_records.TalkOverRecord` says
whether Twilio got a ``clear``, how long after the clip's speech onset, and whether the
answer went on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dealerline_sim.call import Call
from dealerline_sim.call_records import TalkKind, TalkOverRecord
from dealerline_sim.caller_speech import Recorded
from dealerline_sim.talk_over import TalkOver, finish, talk_over

__all__ = ["PROMPT", "Clip", "TalkOverStats", "interleave", "run_talk_overs", "stats"]

PROMPT = "What services do you offer?"  # the scripted answer is six sentences long
_VERDICT_S = 1.5  # after a clip: long enough for the gateway's verdict (probe + judge)
# The answer is over once nothing new played for this long: on a loaded 2-core CPU the
# next sentence can take seconds to synthesize, and a question asked in such a gap would
# talk over the rest of the answer.
_QUIET_S = 2.5
_PER_ANSWER = 4  # backchannels over one answer, so that plenty of it is left to go on


@dataclass(frozen=True)
class Clip:
    """A clip to say over the agent, and what it is."""

    kind: TalkKind
    audio: Recorded
    label: str = ""


def _agent_talking(call: Call, quiet_s: float) -> bool:
    """Audio is queued or playing, or stopped playing under ``quiet_s`` ago."""
    playout = call.playout
    if not playout.idle:
        return True
    return (asyncio.get_running_loop().time() - playout.last_activity) * call.pace < quiet_s


async def _ask(call: Call, prompt: str, timeout_s: float) -> float:
    """Wait until the agent is quiet, ask ``prompt``; returns when the question ended."""
    await call.wait_until_quiet(_QUIET_S, timeout_s, min_bytes=0)
    said = await call.say(prompt)
    return said.speech_ended_at or time.time()


async def _await_reply(call: Call, timeout_s: float) -> None:
    """The agent answers what it heard over its stopped answer: wait until that reply
    has played (if none comes, go on after ``timeout_s``)."""
    with contextlib.suppress(TimeoutError):
        await call.wait_until_quiet(_QUIET_S, timeout_s, min_bytes=1)


async def run_talk_overs(
    call: Call,
    clips: Sequence[Clip],
    *,
    after_ms: float = 1000.0,
    prompt: str = PROMPT,
    timeout_s: float = 90.0,
) -> list[TalkOverRecord]:
    """Say each clip over the agent's answer to ``prompt`` (see the module doc); returns
    the finished records, in order (also in ``call.talk_overs``). A record owns the
    ``clear`` frames that came before the caller next spoke (a clip or the question)."""
    await call.sim.prepare(prompt)
    records: list[TalkOverRecord] = []
    spoke_next: list[float] = []  # when the caller next spoke after each record's clip
    since: float | None = None
    over_this_answer = 0
    for clip in clips:
        full = over_this_answer >= _PER_ANSWER and clip.kind == "backchannel"
        if since is None or full or not _agent_talking(call, _QUIET_S):
            if len(spoke_next) < len(records):
                spoke_next.append(time.time())
            since = await _ask(call, prompt, timeout_s)
            over_this_answer = 0
        over_this_answer += 1
        step = TalkOver(clip.audio, after_ms, clip.kind)
        record = await talk_over(call, step, since=since, timeout_s=timeout_s)
        if len(spoke_next) < len(records):
            spoke_next.append(record.clip_queued_at or time.time())
        records.append(record)
        await asyncio.sleep(_VERDICT_S / call.pace)
        cleared = any(c.at >= (record.clip_queued_at or 0.0) for c in call.clears)
        if cleared or clip.kind == "interruption":
            await _await_reply(call, min(timeout_s, 30.0))
            since = None  # the next clip needs a new question
        else:
            since = time.time()
    await call.wait_until_quiet(_QUIET_S, timeout_s, min_bytes=0)
    bounds: list[float | None] = [*spoke_next, None][: len(records)]
    for record, until in zip(records, bounds, strict=True):
        finish(call, record, until)
    return records


def interleave(backchannels: Sequence[Clip], interruptions: Sequence[Clip]) -> list[Clip]:
    """Up to four backchannels, then an interruption (which ends that answer), and so on;
    what is left of either kind at the end."""
    out: list[Clip] = []
    backs, inters = list(backchannels), list(interruptions)
    while backs or inters:
        out.extend(backs[:_PER_ANSWER])
        del backs[:_PER_ANSWER]
        if inters:
            out.append(inters.pop(0))
    return out


@dataclass(frozen=True)
class TalkOverStats:
    backchannels: int
    backchannels_stopping: list[str]  # labels of backchannels that stopped the answer
    interruptions: int
    interruptions_missed: list[str]  # labels of interruptions that got no clear
    clear_after_onset_ms: list[float]  # per interruption that got one


def stats(pairs: Sequence[tuple[Clip, TalkOverRecord]]) -> TalkOverStats:
    back = [(c, r) for c, r in pairs if c.kind == "backchannel"]
    inter = [(c, r) for c, r in pairs if c.kind == "interruption"]
    return TalkOverStats(
        backchannels=len(back),
        backchannels_stopping=[c.label for c, r in back if r.stopped_playback],
        interruptions=len(inter),
        interruptions_missed=[c.label for c, r in inter if not r.cleared],
        clear_after_onset_ms=[r.clear_delay_ms for _, r in inter if r.clear_delay_ms is not None],
    )
