"""What the caller hears: the outbound audio a server sends, played on a real-time clock.

Audio (``media``) is buffered and played ``pace`` times faster than real time, at most one
20 ms frame at a time and never across a mark; a ``mark`` is echoed only once the audio
queued before it has played; ``clear`` drops unplayed audio (the part of a frame already
playing counts as heard) and echoes every pending mark at once. Everything played is kept
as :class:`~dealerline_sim.call_records.HeardSegment` records, grouped by the mark that
follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from dealerline_common.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE
from dealerline_sim.call_records import ClearRecord, HeardSegment, MarkEcho, StreamRecord

__all__ = ["MAX_BUFFERED_BYTES", "Playout"]

MAX_BUFFERED_BYTES: Final = 10 * 60 * SAMPLE_RATE  # Twilio drops audio beyond 10 minutes


class _Audio:
    __slots__ = ("data", "offset", "seg")

    def __init__(self, seg: HeardSegment, data: bytes) -> None:
        self.seg = seg
        self.data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


class _Mark:
    __slots__ = ("seg",)

    def __init__(self, seg: HeardSegment) -> None:
        self.seg = seg


class _Inflight:
    __slots__ = ("chunk", "end", "seg", "start")

    def __init__(self, seg: HeardSegment, chunk: bytes, start: float, end: float) -> None:
        self.seg = seg
        self.chunk = chunk
        self.start = start
        self.end = end


class Playout:
    """The caller's earpiece for one call, across its streams.

    ``send_mark(name)`` echoes a mark to the server; ``warn(text)`` records a warning.
    ``stream`` is the stream whose audio arrives now (its segments get what is heard).
    """

    def __init__(
        self,
        pace: float,
        send_mark: Callable[[str], Awaitable[object]],
        warn: Callable[[str], None],
    ) -> None:
        self.pace = pace
        self.stream: StreamRecord | None = None
        self.heard_audio = bytearray()
        self.heard_segments: list[HeardSegment] = []
        self.clears: list[ClearRecord] = []
        self.mark_echoes: list[MarkEcho] = []
        self.outbound_media_sizes: list[int] = []
        self.reply_bytes = 0  # outbound audio received since the caller last spoke
        self.last_activity = 0.0  # loop time audio last arrived or played
        self._send_mark = send_mark
        self._warn = warn
        self._queue: deque[_Audio | _Mark] = deque()
        self._queued_bytes = 0
        self._inflight: _Inflight | None = None
        self._open_segment: HeardSegment | None = None
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()

    @property
    def pending_bytes(self) -> int:
        """Outbound audio received but not played yet."""
        inflight = len(self._inflight.chunk) if self._inflight else 0
        return self._queued_bytes + inflight

    @property
    def idle(self) -> bool:
        """Nothing is queued or playing."""
        return not self._queue and self._inflight is None

    async def wait_for_mark_echo(self, name: str, timeout_s: float) -> MarkEcho:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for echo in self.mark_echoes:
                if echo.name == name:
                    return echo
            if loop.time() >= deadline:
                raise TimeoutError(f"mark {name!r} not echoed within {timeout_s}s")
            await asyncio.sleep(0.005)

    def drop_pending(self) -> int:
        """The stream is over: forget what was not played; returns how many bytes."""
        dropped = self.pending_bytes
        self._queue.clear()
        self._queued_bytes = 0
        self._inflight = None
        self._open_segment = None
        return dropped

    # -- server messages ------------------------------------------------------------------

    def on_media(self, data: bytes) -> None:
        self.outbound_media_sizes.append(len(data))
        if self._queued_bytes + len(data) > MAX_BUFFERED_BYTES:
            self._warn("more than 10 minutes of audio buffered: dropped")
            return
        seg = self._segment()
        seg.received_bytes += len(data)
        if seg.first_received_at is None:
            seg.first_received_at = time.time()
        self._queue.append(_Audio(seg, data))
        self._queued_bytes += len(data)
        self.reply_bytes += len(data)
        self.last_activity = asyncio.get_running_loop().time()
        self._wake.set()

    async def on_mark(self, name: str) -> None:
        seg = self._segment()
        seg.mark_name = name
        seg.mark_received_at = time.time()
        self._open_segment = None
        if not self._queue and self._inflight is None:
            await self._echo(seg, cleared=False)
        else:
            self._queue.append(_Mark(seg))

    async def on_clear(self) -> None:
        dropped = self._cut_inflight()
        marks: list[HeardSegment] = []
        for item in self._queue:
            if isinstance(item, _Audio):
                item.seg.dropped_bytes += item.remaining
                item.seg.cleared = True
                dropped += item.remaining
            else:
                marks.append(item.seg)
        self._queue.clear()
        self._queued_bytes = 0
        if self._open_segment is not None:
            self._open_segment = None  # later audio starts a new segment
        self.clears.append(
            ClearRecord(
                at=time.time(),
                dropped_bytes=dropped,
                echoed_marks=[s.mark_name or "" for s in marks],
            )
        )
        for seg in marks:
            await self._echo(seg, cleared=True)

    def _cut_inflight(self) -> int:
        """A clear stops the frame playing now: what has played is heard, the rest dropped
        (returned); the playout loop wakes up."""
        inflight = self._inflight
        if inflight is None:
            return 0
        self._inflight = None
        loop = asyncio.get_running_loop()
        played = int((loop.time() - inflight.start) * SAMPLE_RATE * self.pace)
        played = max(0, min(len(inflight.chunk), played))
        if played:
            self._commit(inflight.seg, inflight.chunk[:played], inflight.start)
        rest = len(inflight.chunk) - played
        if rest:
            inflight.seg.dropped_bytes += rest
            inflight.seg.cleared = True
        self._interrupt.set()
        return rest

    def _segment(self) -> HeardSegment:
        if self._open_segment is None:
            stream = self.stream
            self._open_segment = HeardSegment(stream_sid=stream.stream_sid if stream else None)
            self.heard_segments.append(self._open_segment)
            if stream is not None:
                stream.segments.append(self._open_segment)
        return self._open_segment

    async def _echo(self, seg: HeardSegment, *, cleared: bool) -> None:
        name = seg.mark_name or ""
        now = time.time()
        seg.mark_echoed_at = now
        if cleared:
            seg.cleared = True
        self.mark_echoes.append(MarkEcho(name, now, cleared, len(self.heard_audio)))
        await self._send_mark(name)

    # -- the clock ------------------------------------------------------------------------

    def _commit(self, seg: HeardSegment, data: bytes, start: float) -> None:
        """``data`` has been played to the caller (it started at loop time ``start``)."""
        loop_now = asyncio.get_running_loop().time()
        wall_now = time.time()
        if seg.first_played_at is None:
            seg.first_played_at = wall_now - (loop_now - start)
        seg.last_played_at = wall_now
        seg.audio += data
        self.heard_audio += data
        self.last_activity = loop_now

    def _take_chunk(self) -> tuple[HeardSegment, bytes] | None:
        """Up to one 20 ms frame of queued audio, never across a mark or segment."""
        if not self._queue or not isinstance(self._queue[0], _Audio):
            return None
        seg = self._queue[0].seg
        out = bytearray()
        while self._queue and len(out) < FRAME_BYTES:
            item = self._queue[0]
            if not isinstance(item, _Audio) or item.seg is not seg:
                break
            n = min(FRAME_BYTES - len(out), item.remaining)
            out += item.data[item.offset : item.offset + n]
            item.offset += n
            if item.remaining == 0:
                self._queue.popleft()
        self._queued_bytes -= len(out)
        return seg, bytes(out)

    async def _echo_head_marks(self) -> None:
        while self._queue and isinstance(self._queue[0], _Mark):
            item = self._queue.popleft()
            assert isinstance(item, _Mark)
            await self._echo(item.seg, cleared=False)

    async def run(self) -> None:
        """Plays buffered audio at real time / pace and echoes marks behind it."""
        loop = asyncio.get_running_loop()
        frame_s = FRAME_MS / 1000.0 / self.pace
        clock: float | None = None  # loop time the previous chunk ended
        while True:
            await self._echo_head_marks()
            taken = self._take_chunk()
            if taken is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            seg, chunk = taken
            now = loop.time()
            start = clock if clock is not None and now - clock < frame_s else now
            end = start + len(chunk) / SAMPLE_RATE / self.pace
            inflight = _Inflight(seg, chunk, start, end)
            self._inflight = inflight
            self._interrupt.clear()
            timeout = end - loop.time()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._interrupt.wait(), timeout)
            if self._inflight is not inflight:  # cleared while playing
                clock = None
                continue
            self._inflight = None
            self._commit(seg, chunk, start)
            clock = end
