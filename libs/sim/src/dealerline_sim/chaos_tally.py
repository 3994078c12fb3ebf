"""Counting a chaos run: for every line a caller said, did it get its reply, once, and was
what it heard the reply the agent committed?

- **lost**: no reply turn was played to its end for the line within the caller's
  patience (the caller gives up after ``patience_s``, 90 s by default): the turn's closing
  ``Say last=True`` seen on the bus and every sentence of it echoed back by the caller's
  Media Stream (a mark echo is Twilio's proof the audio played; mark names are
  ``<turn>:<seq>``).
- **duplicated**: the caller heard a sentence of the reply twice (a mark echoed twice), or
  two different reply turns for one line.
- **mixed**: what the caller heard for the turn (the texts of the sentences it heard, one
  per seq) is not the reply the agent committed (its ``assistant`` transcript event on the
  events stream), or one seq of the turn was published with two different texts.
- **kill → complete**: for each turn in flight on a worker when it was killed (by the bus:
  no transcript yet for stt, no closing ``Say`` for the agent, a sentence without audio
  for tts), the time from the kill until the turn was seen played.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from dealerline_common import subjects
from dealerline_common.messages import TranscriptEvent, loads
from dealerline_sim.call import Call
from dealerline_sim.call_records import mark_turn
from dealerline_sim.chaos_callers import LineRecord
from dealerline_sim.chaos_watch import BusWatch


@dataclass
class KillRecord:
    service: str
    process: str
    at: float  # monotonic, as the watch's times
    trigger: str  # the bus message it followed ("utterance", "say", …) or "timer"
    affected: list[str] = field(default_factory=list)  # utterance ids in flight on it


@dataclass
class Tally:
    lines: int = 0
    lost: list[str] = field(default_factory=list)  # "<line text> (why)"
    duplicated: list[str] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)
    uncommitted: int = 0  # replies played that have no assistant event
    republished: int = 0  # (turn, seq) published again on the bus, same text (dedup's job)
    rewritten: int = 0  # (turn, seq) published again with a different text
    audio_twice: int = 0  # (turn, seq) synthesized more than once
    recovery_s: list[float] = field(default_factory=list)
    unrecovered: int = 0  # affected turns never seen played

    def percentile(self, q: float) -> float | None:
        if not self.recovery_s:
            return None
        if len(self.recovery_s) == 1:
            return self.recovery_s[0]
        return statistics.quantiles(self.recovery_s, n=100, method="inclusive")[int(q) - 1]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _seq(mark: str) -> int | None:
    tail = mark.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


class _CallMarks:
    """The sentences a call's caller heard: turn → seq → how many times."""

    def __init__(self, call: Call) -> None:
        self.heard: dict[str, Counter[int]] = {}
        self.first_at: dict[str, float] = {}
        for echo in call.mark_echoes:
            turn, seq = mark_turn(echo.name), _seq(echo.name)
            if echo.cleared or turn is None or seq is None:
                continue
            self.heard.setdefault(turn, Counter())[seq] += 1
            self.first_at.setdefault(turn, echo.echoed_at)


def _reply_turns(record: LineRecord, watch: BusWatch, marks: _CallMarks) -> list[str]:
    if record.utterance_id is not None:
        return [t for t, u in watch.utterance_of_turn.items() if u == record.utterance_id]
    # The watch missed the utterance (it was away during a NATS restart): the turns the
    # caller first heard between this line and its next one, on the caller's clock.
    said = record.call.said
    index = next((i for i, s in enumerate(said) if s.text == record.text), None)
    if index is None or said[index].speech_ended_at is None:
        return []
    ended = said[index].speech_ended_at or 0.0
    until = said[index + 1].started_at or 0.0 if index + 1 < len(said) else float("inf")
    return [
        t
        for t, at in marks.first_at.items()
        if ended < at <= until and watch.utterance_of_turn.get(t) is None
    ]


def _complete(turn: str, watch: BusWatch, marks: _CallMarks) -> bool:
    heard = marks.heard.get(turn, Counter())
    return watch.heard_all(turn, {f"{turn}:{seq}" for seq, n in heard.items() if n})


def _heard_text(turn: str, watch: BusWatch, marks: _CallMarks) -> str:
    parts = []
    for seq in sorted(marks.heard.get(turn, {})):
        texts = watch.audio.get((turn, seq)) or watch.says.get((turn, seq)) or [""]
        parts.append(texts[0])
    return " ".join(p for p in parts if p)


def tally_lines(
    lines: list[LineRecord], watch: BusWatch, committed: dict[str, str], tally: Tally
) -> None:
    marks = {id(r.call): _CallMarks(r.call) for r in lines}
    for record in lines:
        tally.lines += 1
        heard = marks[id(record.call)]
        turns = _reply_turns(record, watch, heard)
        done = [t for t in turns if _complete(t, watch, heard)]
        if not done or record.waited_out:
            why = "no reply turn" if not turns else "reply not played to its end"
            if done:
                why = "played only after the caller had given up"
            tally.lost.append(f"{record.text!r} ({why}; utterance {record.utterance_id})")
            continue
        played = [t for t in turns if heard.heard.get(t)]
        if len(played) > 1 or any(n > 1 for t in played for n in heard.heard[t].values()):
            tally.duplicated.append(f"{record.text!r} (turns {played})")
        for turn in done:
            versions = [set(watch.says.get((turn, s), [])) for s in range(watch.last_seq[turn])]
            if any(len(v) > 1 for v in versions):
                tally.mixed.append(f"{record.text!r}: turn {turn} has a seq said two ways")
                continue
            reply = committed.get(turn)
            if reply is None:
                tally.uncommitted += 1
            elif _norm(reply) != _norm(_heard_text(turn, watch, heard)):
                got = _heard_text(turn, watch, heard)
                tally.mixed.append(f"{record.text!r}: heard {got!r}, committed {reply!r}")


def tally_bus(watch: BusWatch, kills: list[KillRecord], tally: Tally) -> None:
    for texts in watch.says.values():
        if len(texts) > 1:
            if len(set(texts)) > 1:
                tally.rewritten += 1
            else:
                tally.republished += 1
    tally.audio_twice = sum(1 for texts in watch.audio.values() if len(texts) > 1)
    for kill in kills:
        for utterance_id in kill.affected:
            played = watch.done_at(utterance_id)
            if played is None:
                tally.unrecovered += 1
            else:
                tally.recovery_s.append(max(0.0, played - kill.at))


async def committed_replies(js: JetStreamContext, idle_s: float = 2.0) -> dict[str, str]:
    """turn id → the reply the agent committed, read from the whole events stream."""
    replies: dict[str, str] = {}
    try:
        sub = await js.subscribe(
            subjects.ALL_EVENTS,
            ordered_consumer=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
        )
    except NotFoundError:
        return replies
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s)
            except TimeoutError:
                break
            if b'"dealerline.event.transcript.v1"' not in msg.data:
                continue
            event = loads(TranscriptEvent, msg.data)
            if event.role == "assistant" and not event.interrupted and event.turn_id:
                replies[event.turn_id] = event.text
    finally:
        await sub.unsubscribe()
    return replies


async def settle(watch: BusWatch, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
    """Wait until the bus has been quiet for ``quiet_s`` (the last replies played out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        watch.changed.clear()
        try:
            await asyncio.wait_for(watch.changed.wait(), quiet_s)
        except TimeoutError:
            return
