"""Voice activity detection and endpointing of the caller's 20 ms mu-law frames.

Two layers:

- a :class:`FrameVad` says whether one 20 ms frame (160 PCM16 samples at 8 kHz) is voiced.
  :class:`WebRtcVad` is the one the gateway uses (chosen by measurement, see
  ``bench/vad_bench.py`` and the README); :class:`EnergyVad` is the plain RMS > 500
  baseline, kept for the benchmark and as a fallback.
- an :class:`Endpointer` is a pure state machine fed one frame at a time with its voiced
  flag and the wall time it arrived. It declares speech onset after ``start_frames``
  voiced frames among the last ``start_window`` frames, keeps ``preroll_frames`` before
  the onset window so the first word is not clipped, ends an utterance after
  ``end_silence_frames`` unvoiced frames (the hangover), drops blips shorter than
  ``min_speech_frames`` voiced frames and cuts an utterance at ``max_frames``. Whoever
  decides the end of the turn sooner (:mod:`.endofturn`) reads the utterance so far
  (:meth:`Endpointer.audio_so_far`) and ends it with :meth:`Endpointer.finish`; the
  hangover is then only the hard maximum.

Nothing here touches the network or a clock of its own, so it is tested deterministically.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import webrtcvad

from dealerline_common import audio

FRAME_MS = audio.FRAME_MS
FRAME_SAMPLES = audio.FRAME_BYTES  # 160 samples at 8 kHz, one mu-law byte each


class FrameVad(Protocol):
    """Classifies one 20 ms frame of 8 kHz PCM16 audio."""

    name: str

    def is_speech(self, pcm: audio.Int16Array) -> bool: ...

    def reset(self) -> None: ...


class EnergyVad:
    """The baseline detector: RMS energy above a fixed threshold (500 on PCM16)."""

    def __init__(self, threshold: float = 500.0) -> None:
        self.threshold = threshold
        self.name = f"energy>{threshold:g}"

    def is_speech(self, pcm: audio.Int16Array) -> bool:
        return audio.rms(pcm) > self.threshold

    def reset(self) -> None:
        return None


class WebRtcVad:
    """Google's WebRTC GMM detector on 20 ms frames at 8 kHz; ``mode`` 0 (lenient) to 3
    (aggressive about calling a frame non-speech)."""

    def __init__(self, mode: int = 3) -> None:
        if mode not in (0, 1, 2, 3):
            raise ValueError("webrtcvad mode must be 0..3")
        self.mode = mode
        self.name = f"webrtcvad-{mode}"
        self._vad = webrtcvad.Vad(mode)

    def is_speech(self, pcm: audio.Int16Array) -> bool:
        if pcm.size != FRAME_SAMPLES:
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {pcm.size}")
        return bool(self._vad.is_speech(np.ascontiguousarray(pcm, dtype="<i2").tobytes(), 8000))

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self.mode)


def make_vad(kind: str, aggressiveness: int, energy_threshold: float = 500.0) -> FrameVad:
    """The detector named by settings: ``webrtc`` (default) or ``energy``."""
    if kind == "webrtc":
        return WebRtcVad(aggressiveness)
    if kind == "energy":
        return EnergyVad(energy_threshold)
    raise ValueError(f"unknown VAD kind {kind!r}")


# --------------------------------------------------------------------------- endpointer


@dataclass(frozen=True)
class EndpointerConfig:
    start_frames: int = 3  # voiced frames within ``start_window`` that make an onset
    start_window: int = 5
    end_silence_frames: int = 25  # hangover: unvoiced frames that end an utterance
    min_speech_frames: int = 5  # fewer voiced frames than this is a blip, not speech
    preroll_frames: int = 10  # kept before the onset window so the word start survives
    tail_frames: int = 6  # silence kept after the last voiced frame
    max_frames: int = 1500  # cut an utterance this long (30 s)

    def __post_init__(self) -> None:
        if not 1 <= self.start_frames <= self.start_window:
            raise ValueError("need 1 <= start_frames <= start_window")
        if self.end_silence_frames < 1 or self.min_speech_frames < 1 or self.max_frames < 2:
            raise ValueError("end_silence_frames, min_speech_frames, max_frames must be positive")
        if self.preroll_frames < 0 or self.tail_frames < 0:
            raise ValueError("preroll_frames and tail_frames cannot be negative")

    @classmethod
    def from_ms(
        cls,
        *,
        start_frames: int,
        start_window: int,
        end_silence_ms: float,
        min_speech_ms: float,
        preroll_ms: float,
        tail_ms: float,
        max_utterance_s: float,
    ) -> EndpointerConfig:
        def n(ms: float) -> int:
            return max(0, round(ms / FRAME_MS))

        return cls(
            start_frames=start_frames,
            start_window=start_window,
            end_silence_frames=max(1, n(end_silence_ms)),
            min_speech_frames=max(1, n(min_speech_ms)),
            preroll_frames=n(preroll_ms),
            tail_frames=n(tail_ms),
            max_frames=max(2, n(max_utterance_s * 1000.0)),
        )


@dataclass(frozen=True)
class SpeechStart:
    """Onset declared at frame ``index`` (arrival time ``at``)."""

    index: int
    at: float
    first_voiced_index: int
    first_voiced_at: float


@dataclass(frozen=True)
class Utterance:
    """One endpointed utterance: mu-law ``audio`` from frame ``start_index``."""

    audio: bytes
    start_index: int
    onset_index: int
    end_index: int  # frame at which the end was declared
    last_voiced_index: int
    speech_started_at: float  # arrival of the first voiced frame of the onset
    speech_end_at: float  # arrival of the last voiced frame
    ended_at: float  # arrival of the frame that ended it
    voiced_frames: int
    # "silence" (the hangover), "max_length", "flush", or the reason given to
    # :meth:`Endpointer.finish` (the end-of-turn decision's, e.g. "model")
    reason: str

    @property
    def duration_ms(self) -> float:
        return audio.duration_ms(self.audio)


@dataclass(frozen=True)
class Discarded:
    """Speech that started but had too few voiced frames to be an utterance (a blip)."""

    start_index: int
    end_index: int
    voiced_frames: int


EndpointEvent = SpeechStart | Utterance | Discarded


@dataclass
class _Current:
    frames: list[bytes]
    start_index: int
    onset_index: int
    first_voiced_index: int
    first_voiced_at: float
    last_voiced_index: int
    last_voiced_at: float
    voiced: int
    silence_run: int = 0


@dataclass
class Endpointer:
    """Frame-by-frame endpointing; feed every inbound frame in order with :meth:`feed`."""

    config: EndpointerConfig = field(default_factory=EndpointerConfig)
    index: int = 0  # index the next fed frame gets
    _recent: collections.deque[tuple[int, bytes, bool, float]] = field(init=False)
    _cur: _Current | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._recent = collections.deque(
            maxlen=self.config.preroll_frames + self.config.start_window
        )

    @property
    def in_speech(self) -> bool:
        return self._cur is not None

    @property
    def voiced_ms(self) -> float:
        """Voiced audio so far in the utterance in progress (0 when idle)."""
        return 0.0 if self._cur is None else self._cur.voiced * FRAME_MS

    @property
    def last_voiced_index(self) -> int | None:
        """Index of the utterance's last voiced frame (None when idle)."""
        return None if self._cur is None else self._cur.last_voiced_index

    def audio_so_far(self) -> bytes:
        """The utterance in progress as fed so far, pre-roll included (a copy: the
        utterance goes on); empty when idle."""
        return b"" if self._cur is None else b"".join(self._cur.frames)

    def feed(self, frame: bytes, voiced: bool, at: float) -> list[EndpointEvent]:
        """One 20 ms mu-law frame, whether it was voiced, and when it arrived."""
        idx = self.index
        self.index += 1
        events: list[EndpointEvent] = []
        cur = self._cur
        if cur is None:
            self._recent.append((idx, frame, voiced, at))
            window = list(self._recent)[-self.config.start_window :]
            if voiced and sum(1 for w in window if w[2]) >= self.config.start_frames:
                first = next(w for w in window if w[2])
                kept = [w for w in self._recent if w[0] >= first[0] - self.config.preroll_frames]
                self._cur = _Current(
                    frames=[w[1] for w in kept],
                    start_index=kept[0][0],
                    onset_index=idx,
                    first_voiced_index=first[0],
                    first_voiced_at=first[3],
                    last_voiced_index=idx,
                    last_voiced_at=at,
                    voiced=sum(1 for w in kept if w[2] and w[0] >= first[0]),
                )
                self._recent.clear()
                events.append(SpeechStart(idx, at, first[0], first[3]))
            return events
        cur.frames.append(frame)
        if voiced:
            cur.voiced += 1
            cur.silence_run = 0
            cur.last_voiced_index = idx
            cur.last_voiced_at = at
        else:
            cur.silence_run += 1
        if cur.silence_run >= self.config.end_silence_frames:
            events.append(self._finish(idx, at, "silence"))
        elif len(cur.frames) >= self.config.max_frames:
            events.append(self._finish(idx, at, "max_length"))
            if voiced:  # still talking: carry straight on in a fresh utterance
                self._cur = _Current(
                    frames=[],
                    start_index=idx + 1,
                    onset_index=idx + 1,
                    first_voiced_index=idx + 1,
                    first_voiced_at=at,
                    last_voiced_index=idx,
                    last_voiced_at=at,
                    voiced=0,
                )
        return events

    def flush(self, at: float) -> Utterance | Discarded | None:
        """End the utterance in progress now (the stream went quiet or stopped)."""
        return self.finish(at, "flush")

    def finish(self, at: float, reason: str) -> Utterance | Discarded | None:
        """End the utterance in progress now, at the last frame fed, as the hangover would
        (audio trimmed to the last voiced frame plus the tail; a blip is discarded);
        ``reason`` becomes :attr:`Utterance.reason`. None when idle."""
        if self._cur is None:
            return None
        return self._finish(self.index - 1, at, reason)

    def _finish(self, idx: int, at: float, reason: str) -> Utterance | Discarded:
        cur = self._cur
        assert cur is not None
        self._cur = None
        self._recent.clear()
        if cur.voiced < self.config.min_speech_frames:
            return Discarded(cur.start_index, idx, cur.voiced)
        if reason == "max_length":
            keep = len(cur.frames)
        else:
            keep = min(
                len(cur.frames),
                cur.last_voiced_index - cur.start_index + 1 + self.config.tail_frames,
            )
        return Utterance(
            audio=b"".join(cur.frames[:keep]),
            start_index=cur.start_index,
            onset_index=cur.onset_index,
            end_index=idx,
            last_voiced_index=cur.last_voiced_index,
            speech_started_at=cur.first_voiced_at,
            speech_end_at=cur.last_voiced_at,
            ended_at=at,
            voiced_frames=cur.voiced,
            reason=reason,
        )
