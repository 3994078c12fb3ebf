"""What a chaos run sees on the bus: every caller utterance, transcript, sentence said,
sentence synthesized and turn played, with the time it was seen, so the run can kill a
worker at a chosen point of a turn, tell which turns were in flight on it, and count
what went missing or came twice afterwards.

It listens with plain (core) subscriptions, so it sees each *publish*: a sentence the agent
published twice shows up twice here even if JetStream's dedup kept one. It reconnects
through a NATS restart like any client; what is published while it is away is not seen,
which is why the final count also reads the events stream and the caller's own record.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import (
    AudioMeta,
    BargeIn,
    Say,
    Transcript,
    TurnPlayed,
    UtteranceMeta,
    loads,
)
from dealerline_common.wire import META_HEADER, from_header


@dataclass
class TurnSeen:
    """One caller utterance and the reply to it, as seen on the bus (monotonic times)."""

    session_id: str
    utterance_id: str
    call_sid: str | None
    at: float
    transcript_at: float | None = None
    turn_ids: set[str] = field(default_factory=set)
    last_at: float | None = None  # a Say last=True for it
    played_at: float | None = None  # TurnPlayed for one of its turns
    heard_at: float | None = None  # the caller had heard every sentence of one of them
    barged_at: float | None = None  # the caller talked over the reply (it was cancelled)

    def stage(self, watch: BusWatch) -> str | None:
        """Where the turn is now: "stt", "agent", "tts", "gateway" (playing) or None (done)."""
        if self.played_at is not None or self.heard_at is not None or self.barged_at:
            return None
        if self.transcript_at is None:
            return "stt"
        if self.last_at is None:
            return "agent"
        if any(watch.unsynthesized(t) for t in self.turn_ids):
            return "tts"
        return "gateway"


@dataclass
class BusWatch:
    nats_url: str
    bus: Bus | None = None
    turns: dict[str, TurnSeen] = field(default_factory=dict)  # by utterance id
    session_of_call: dict[str, str] = field(default_factory=dict)
    # (turn_id, seq) → every text published for it, in order (one per publish)
    says: dict[tuple[str, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    last_seq: dict[str, int] = field(default_factory=dict)  # turn → seq of its last=True
    audio: dict[tuple[str, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    utterance_of_turn: dict[str, str] = field(default_factory=dict)
    played: dict[str, float] = field(default_factory=dict)  # turn → when seen played
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _hooks: list[Callable[[str, str], None]] = field(default_factory=list)

    async def start(self) -> BusWatch:
        self.bus = Bus(self.nats_url, "chaos-watch")
        await self.bus.connect()
        for subject, handler in (
            (subjects.ALL_UTTERANCES, self._on_utterance),
            (subjects.ALL_TRANSCRIPTS, self._on_transcript),
            (subjects.ALL_SAY, self._on_say),
            (subjects.ALL_AUDIO, self._on_audio),
            (subjects.ALL_CONTROL, self._on_control),
        ):
            await self.bus.subscribe(subject, handler, pending_msgs_limit=65536)
        return self

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()

    def on_message(self, hook: Callable[[str, str], None]) -> None:
        """``hook(kind, session_id)`` for every message seen; kind is "utterance",
        "transcript", "say" or "audio" (the chaos loop kills on them)."""
        self._hooks.append(hook)

    def _seen(self, kind: str, session_id: str) -> None:
        self.changed.set()
        for hook in self._hooks:
            hook(kind, session_id)

    async def _on_utterance(self, msg: Msg) -> None:
        meta = from_header(UtteranceMeta, _headers(msg))
        if meta.call_sid:
            self.session_of_call[meta.call_sid] = meta.session_id
        self.turns.setdefault(
            meta.utterance_id,
            TurnSeen(meta.session_id, meta.utterance_id, meta.call_sid, time.monotonic()),
        )
        self._seen("utterance", meta.session_id)

    async def _on_transcript(self, msg: Msg) -> None:
        t = loads(Transcript, msg.data)
        seen = self._turn(t.session_id, t.utterance_id)
        if seen.transcript_at is None:
            seen.transcript_at = time.monotonic()
        self._seen("transcript", t.session_id)

    async def _on_say(self, msg: Msg) -> None:
        say = loads(Say, msg.data)
        self.says[(say.turn_id, say.seq)].append(say.text)
        if say.utterance_id:
            self.utterance_of_turn[say.turn_id] = say.utterance_id
            seen = self._turn(say.session_id, say.utterance_id)
            seen.transcript_at = seen.transcript_at or time.monotonic()
            seen.turn_ids.add(say.turn_id)
            if say.last and seen.last_at is None:
                seen.last_at = time.monotonic()
        if say.last:
            self.last_seq[say.turn_id] = say.seq
        self._seen("say", say.session_id)

    def _turn(self, session_id: str, utterance_id: str) -> TurnSeen:
        """The utterance's record, made now if its own message was missed (the watch was
        away during a NATS restart while the gateway's publish rode it out)."""
        if utterance_id not in self.turns:
            call_sid = next((c for c, s in self.session_of_call.items() if s == session_id), None)
            self.turns[utterance_id] = TurnSeen(
                session_id, utterance_id, call_sid, time.monotonic()
            )
        return self.turns[utterance_id]

    async def _on_audio(self, msg: Msg) -> None:
        meta = from_header(AudioMeta, _headers(msg))
        self.audio[(meta.turn_id, meta.seq)].append(meta.text)
        self._seen("audio", meta.session_id)

    async def _on_control(self, msg: Msg) -> None:
        if b'"dealerline.control.barge_in.v1"' in msg.data:
            utterance_id = self.utterance_of_turn.get(loads(BargeIn, msg.data).turn_id)
            if utterance_id in self.turns:
                self.turns[utterance_id].barged_at = time.monotonic()
            return
        try:
            played = loads(TurnPlayed, msg.data)
        except ValueError:
            return  # another control message
        now = time.monotonic()
        self.played.setdefault(played.turn_id, now)
        utterance_id = self.utterance_of_turn.get(played.turn_id)
        seen = self.turns.get(utterance_id) if utterance_id else None
        if seen is not None and seen.played_at is None:
            seen.played_at = now
        self.changed.set()

    def unsynthesized(self, turn_id: str) -> bool:
        """A sentence of the turn was said but no audio for it was seen yet."""
        return any(key[0] == turn_id and key not in self.audio for key in list(self.says))

    def heard_all(self, turn_id: str, echoed: set[str]) -> bool:
        """The turn's closing message was seen and every sentence of it is in ``echoed``
        (the caller's mark echoes, ``<turn>:<seq>``)."""
        last = self.last_seq.get(turn_id)
        if last is None:
            return False
        spoken = [seq for seq in range(last) if any(self.says.get((turn_id, seq), []))]
        return all(f"{turn_id}:{seq}" in echoed for seq in spoken)

    def done_at(self, utterance_id: str) -> float | None:
        """When the reply to the utterance was seen complete (played, or all heard)."""
        seen = self.turns[utterance_id]
        times = [t for t in (seen.played_at, seen.heard_at) if t is not None]
        return min(times) if times else None

    def utterance_for(self, session_id: str, after: float) -> TurnSeen | None:
        """The first utterance of the session seen at or after monotonic time ``after``."""
        found = [t for t in self.turns.values() if t.session_id == session_id and t.at >= after]
        return min(found, key=lambda t: t.at) if found else None

    def in_flight(self, stage: str) -> list[TurnSeen]:
        """Caller turns whose reply waits on ``stage`` now."""
        return [t for t in self.turns.values() if t.stage(self) == stage]


def _headers(msg: Msg) -> dict[str, str]:
    return dict(msg.headers or {}) if msg.headers and META_HEADER in msg.headers else {}
