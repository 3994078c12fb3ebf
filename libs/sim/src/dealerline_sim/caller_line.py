"""The caller's side of the line: what goes up the Media Stream every 20 ms.

Queued speech (the caller's voice, frame by frame) goes first; otherwise the line carries
the call's silence: mu-law digital silence, low-level comfort noise, or nothing at all.
Frames go out every ``20 ms / pace`` of loop time, numbered by ``chunk`` and stamped with
their simulated ``timestamp``; the utterance records learn when the first and last voiced
frames went out.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import numpy as np

from dealerline_common.audio import (
    FRAME_BYTES,
    FRAME_MS,
    ULAW_SILENCE,
    frames,
    pcm16_to_ulaw,
    rms,
    ulaw_to_pcm16,
)
from dealerline_sim.call_records import SaidUtterance
from dealerline_sim.twiml import SimulatorError

__all__ = ["VOICED_RMS", "CallerLine", "SendMedia", "SilenceMode"]

SilenceMode = Literal["digital", "comfort_noise", "none"]
"""What the caller's line carries when the caller says nothing: mu-law 0xFF frames,
low-level noise (RMS ~ 20, far under any VAD threshold), or no frames at all (some
carriers send none during silence, so media timestamps jump)."""

VOICED_RMS: Final = 300.0  # a frame louder than this counts as speech for speech_ended_at
_DIGITAL_SILENCE: Final = bytes([ULAW_SILENCE]) * FRAME_BYTES

SendMedia = Callable[[str, str, str], Awaitable[bool]]
"""``send(chunk, timestamp, base64 payload)``: False once the stream can take no more."""


class _Utterance:
    def __init__(
        self, record: SaidUtterance, frame_list: list[bytes], future: asyncio.Future[None]
    ) -> None:
        self.record = record
        self.frames = frame_list
        self.pos = 0
        self.future = future
        voiced = [i for i, f in enumerate(frame_list) if rms(ulaw_to_pcm16(f)) > VOICED_RMS]
        self.first_voiced = voiced[0] if voiced else 0
        self.last_voiced = voiced[-1] if voiced else len(frame_list) - 1


def _comfort_noise_frames(count: int = 50, level: float = 20.0) -> list[bytes]:
    rng = np.random.default_rng(1234)
    noise = rng.normal(0.0, level, count * FRAME_BYTES).astype(np.int16)
    data = pcm16_to_ulaw(noise)
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


class CallerLine:
    """The frames the caller sends: queued utterances first, else the line's silence."""

    def __init__(self, silence: SilenceMode) -> None:
        self.silence: SilenceMode = silence
        self.speech_ended_at: float | None = None  # wall time of the last voiced frame sent
        self._speech: deque[_Utterance] = deque()
        self._noise = _comfort_noise_frames() if silence == "comfort_noise" else []
        self._noise_pos = 0

    def speak(self, record: SaidUtterance, mulaw: bytes) -> asyncio.Future[None]:
        """Queue ``mulaw`` (20 ms frames, the last padded); the future completes once its
        last frame has been sent, or fails if the stream ends first."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._speech.append(_Utterance(record, frames(mulaw), future))
        return future

    def fail_pending(self, message: str) -> None:
        """Drop queued speech: each waiting ``speak`` raises :class:`SimulatorError`."""
        while self._speech:
            u = self._speech.popleft()
            if not u.future.done():
                u.future.set_exception(SimulatorError(message))

    async def send_frames(self, t0: float, pace: float, send: SendMedia) -> None:
        """One frame per 20 ms slot (simulated time) from loop time ``t0`` until ``send``
        fails or the task is cancelled; speech still queued then fails."""
        loop = asyncio.get_running_loop()
        frame_s = FRAME_MS / 1000.0 / pace
        slot = 0  # 20 ms slots since start (simulated time)
        chunk = 1
        try:
            while True:
                delay = t0 + (slot + 1) * frame_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                payload, utt, idx = self._next_frame()
                if payload is not None:
                    b64 = base64.b64encode(payload).decode("ascii")
                    if not await send(str(chunk), str(slot * FRAME_MS), b64):
                        return
                    chunk += 1
                    if utt is not None:
                        self._after_speech_frame(utt, idx)
                slot += 1
        finally:
            self.fail_pending("the call ended while the caller spoke")

    def _next_frame(self) -> tuple[bytes | None, _Utterance | None, int]:
        if self._speech:
            u = self._speech[0]
            idx = u.pos
            u.pos += 1
            return u.frames[idx], u, idx
        if self.silence == "digital":
            return _DIGITAL_SILENCE, None, -1
        if self.silence == "comfort_noise":
            frame = self._noise[self._noise_pos % len(self._noise)]
            self._noise_pos += 1
            return frame, None, -1
        return None, None, -1

    def _after_speech_frame(self, utt: _Utterance, idx: int) -> None:
        now = time.time()
        if idx == utt.first_voiced:
            utt.record.started_at = now
        if idx == utt.last_voiced:
            utt.record.speech_ended_at = now
            self.speech_ended_at = now
        if utt.pos >= len(utt.frames):
            utt.record.finished_at = now
            if self._speech and self._speech[0] is utt:
                self._speech.popleft()
            if not utt.future.done():
                utt.future.set_result(None)
