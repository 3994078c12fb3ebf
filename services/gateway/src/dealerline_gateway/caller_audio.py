"""The caller's side of one call: Twilio's media payloads re-cut into 20 ms frames
(silence put back where the carrier sent nothing), voice activity per frame, and the
endpointer's events; plus the moment the caller has spoken long enough over our playback
to barge in.

It does no I/O: every event goes, as it happens, to the ``on_event`` callback the media
session gives it (speech onset, a blip, a finished :class:`Heard` utterance,
:class:`BargeInDue`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dealerline_common import audio

from .codec import MediaFrame
from .playback import Playback
from .settings import GatewaySettings
from .vad import Discarded, Endpointer, EndpointerConfig, SpeechStart, Utterance, make_vad

SILENT_FRAME = bytes([audio.ULAW_SILENCE]) * audio.FRAME_BYTES
# The carrier stops sending frames mid-speech: the utterance ends this long after the
# last frame, past the usual hangover.
_STALL_MARGIN_S = 0.2


@dataclass(frozen=True)
class Heard:
    """An utterance endpointed; ``during_playback``: it began over our audio or barged in."""

    utterance: Utterance
    during_playback: bool


@dataclass(frozen=True)
class BargeInDue:
    at: float


CallerEvent = SpeechStart | Discarded | Heard | BargeInDue


def endpointer_for(s: GatewaySettings) -> Endpointer:
    return Endpointer(
        EndpointerConfig.from_ms(
            start_frames=s.speech_start_frames,
            start_window=max(s.speech_start_window, s.speech_start_frames),
            end_silence_ms=s.end_silence_ms,
            min_speech_ms=s.min_speech_ms,
            preroll_ms=s.preroll_ms,
            tail_ms=s.tail_ms,
            max_utterance_s=s.max_utterance_s,
        )
    )


class CallerAudio:
    def __init__(
        self,
        settings: GatewaySettings,
        playback: Playback,
        on_event: Callable[[CallerEvent], None],
    ) -> None:
        s = settings
        self.vad = make_vad(s.vad_kind, s.vad_aggressiveness, s.energy_threshold)
        self.endpointer = endpointer_for(s)
        self._barge_in_ms = s.barge_in_min_speech_ms
        self._stall_s = s.end_silence_ms / 1000.0 + _STALL_MARGIN_S
        self._playback = playback
        self._on_event = on_event
        self._inbuf = b""
        self._next_ts: float | None = None
        self._last_frame_at = time.monotonic()
        self._during_playback = False  # this utterance began while we were playing
        self._barged = False  # this utterance already triggered a barge-in

    def feed(self, frame: MediaFrame) -> None:
        """One inbound media frame (any length; Twilio's timestamps reveal skipped silence)."""
        data, ts = frame.payload, frame.timestamp
        now = time.time()
        self._last_frame_at = time.monotonic()
        if ts is not None and self._next_ts is not None and not self._inbuf:
            gap = ts - self._next_ts
            if gap >= audio.FRAME_MS:  # the carrier sent nothing during silence
                missing = min(
                    int(gap // audio.FRAME_MS), self.endpointer.config.end_silence_frames + 1
                )
                for _ in range(missing):
                    self._process(SILENT_FRAME, False, now)
        if ts is not None:
            self._next_ts = ts + audio.duration_ms(data)
        self._inbuf += data
        while len(self._inbuf) >= audio.FRAME_BYTES:
            chunk, self._inbuf = self._inbuf[: audio.FRAME_BYTES], self._inbuf[audio.FRAME_BYTES :]
            self._process(chunk, self.vad.is_speech(audio.ulaw_to_pcm16(chunk)), now)

    def end_if_stalled(self) -> None:
        """End the utterance in progress when the carrier stopped sending frames mid-speech."""
        if self.endpointer.in_speech and time.monotonic() - self._last_frame_at > self._stall_s:
            ev = self.endpointer.flush(time.time())
            if ev is not None:
                self._endpoint(ev)

    def _process(self, chunk: bytes, voiced: bool, at: float) -> None:
        for ev in self.endpointer.feed(chunk, voiced, at):
            self._endpoint(ev)
        if (
            self.endpointer.in_speech
            and not self._barged
            and self.endpointer.voiced_ms >= self._barge_in_ms
            and self._playback.active()
        ):
            self._barged = True
            self._on_event(BargeInDue(at))

    def _endpoint(self, ev: SpeechStart | Utterance | Discarded) -> None:
        if isinstance(ev, SpeechStart):
            self._barged = False
            self._during_playback = self._playback.active()
            self._on_event(ev)
        elif isinstance(ev, Discarded):
            self._on_event(ev)
        else:
            heard = Heard(ev, self._during_playback or self._barged)
            self._during_playback = False
            self._on_event(heard)
