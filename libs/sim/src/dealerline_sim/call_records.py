"""What a simulated call recorded: each Media Stream, what the caller heard, said and saw echoed.

These are plain records the :class:`~dealerline_sim.call.Call` fills in as it runs and tests
read afterwards; nothing here talks to the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from dealerline_common.audio import SAMPLE_RATE

__all__ = [
    "ClearRecord",
    "HeardSegment",
    "MarkEcho",
    "SaidUtterance",
    "StreamEndReason",
    "StreamRecord",
    "TalkKind",
    "TalkOverRecord",
    "join_heard",
    "mark_turn",
]


@dataclass
class HeardSegment:
    """Outbound (agent → caller) audio grouped by the mark that follows it.

    ``audio`` holds only what was actually played to the caller; audio dropped by a
    ``clear`` is counted in ``dropped_bytes``. ``mark_name`` is None for audio that no
    mark has followed (yet, or before a clear). Times are wall clock (``time.time()``).
    """

    mark_name: str | None = None
    audio: bytearray = field(default_factory=bytearray)
    first_played_at: float | None = None
    last_played_at: float | None = None
    cleared: bool = False
    received_bytes: int = 0
    dropped_bytes: int = 0
    first_received_at: float | None = None
    mark_received_at: float | None = None
    mark_echoed_at: float | None = None
    text: str | None = None
    stream_sid: str | None = None

    @property
    def heard_ms(self) -> float:
        return len(self.audio) * 1000.0 / SAMPLE_RATE


StreamEndReason = Literal["caller-hangup", "server-closed", "redirect", "api-hangup", "open-failed"]


@dataclass(eq=False)
class StreamRecord:
    """One Media Stream of a call. A call redirected back to ``<Connect><Stream>`` gets a
    new one (new ``streamSid``, its own ``customParameters``, counters from 1 again).

    ``end_reason``: ``caller-hangup`` (the test hung up), ``server-closed`` (the gateway
    closed the socket), ``redirect`` (a REST redirect: ``stop`` was sent), ``api-hangup``
    (REST ``Status=completed``: ``stop`` was sent), ``open-failed`` (no WebSocket).
    """

    index: int  # 1-based: call.streams[index - 1]
    stream_sid: str
    url: str
    local_url: str
    parameters: dict[str, str]
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: StreamEndReason | None = None
    stop_sent: bool = False
    closed_by_server: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    segments: list[HeardSegment] = field(default_factory=list)
    ready: bool = False  # ``connected`` and ``start`` sent, media flowing
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def heard_audio(self) -> bytes:
        return b"".join(bytes(s.audio) for s in self.segments)

    @property
    def is_open(self) -> bool:
        return self.started_at is not None and not self.closed.is_set()


@dataclass
class SaidUtterance:
    """Something the caller said: wall times of its first/last voiced frame sent."""

    text: str | None
    audio_bytes: int
    started_at: float | None = None
    speech_ended_at: float | None = None
    finished_at: float | None = None


@dataclass
class ClearRecord:
    at: float
    dropped_bytes: int
    echoed_marks: list[str]


@dataclass
class MarkEcho:
    name: str
    echoed_at: float
    cleared: bool  # echoed because of a clear, not because its audio played
    heard_bytes: int  # len(call.heard_audio) when it was echoed


def join_heard(segments: Iterable[HeardSegment]) -> bytes:
    return b"".join(bytes(s.audio) for s in segments)


TalkKind = Literal["backchannel", "interruption"]


def mark_turn(mark_name: str | None) -> str | None:
    """The turn a mark belongs to: the part before its last ``:``."""
    if not mark_name:
        return None
    return mark_name.rsplit(":", 1)[0] if ":" in mark_name else mark_name


@dataclass
class TalkOverRecord:
    """What happened when the caller talked over the agent (wall-clock times)."""

    kind: TalkKind
    text: str | None
    after_ms: float
    agent_playing_at: float | None = None  # the agent's audio was heard playing
    clip_queued_at: float | None = None
    onset_at: float | None = None  # the clip's first voiced frame went out
    speech_ended_at: float | None = None  # its last voiced frame went out
    clear_at: float | None = None  # the first clear after the clip was queued
    clip_sent_at: float | None = None  # the clip's last frame went out
    turn: str | None = None  # the turn playing at the onset (from its marks)
    went_on_ms: float = 0.0  # that turn's audio played after the clip was sent
    heard_after_ms: float = 0.0  # any agent audio played after the clip was sent
    finished: bool = False  # the outcome has been read (talk_over.finish)
    # bytes played of each heard segment (by position in the call's list) when the clip
    # had been sent: what was played later is the difference
    heard_when_sent: list[int] = field(default_factory=list, repr=False)

    @property
    def cleared(self) -> bool:
        return self.clear_at is not None

    @property
    def clear_delay_ms(self) -> float | None:
        """Clear after the clip's speech onset, in ms (None without a clear)."""
        if self.clear_at is None or self.onset_at is None:
            return None
        return (self.clear_at - self.onset_at) * 1000.0

    @property
    def agent_went_on(self) -> bool:
        """The turn playing at the onset kept playing after the clip, with no clear."""
        return not self.cleared and self.went_on_ms > 0.0

    @property
    def stopped_playback(self) -> bool:
        return not self.agent_went_on
