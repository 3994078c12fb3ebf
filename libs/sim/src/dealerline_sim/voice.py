"""The simulated caller's voice (embedded Kokoro) and ear (embedded faster-whisper).

Both models are loaded once per process and shared; work runs in a worker thread so the
event loop keeps its 20 ms cadence. Nothing here downloads anything.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from dealerline_common.audio import float_to_ulaw, ulaw_to_float
from dealerline_common.models import (
    KOKORO_SAMPLE_RATE,
    bundled_voices_path,
    bundled_whisper_path,
    kokoro_int8_path,
)

_kokoro_lock = threading.Lock()
_kokoro: Any = None
_synth_cache: dict[tuple[str, str, float], bytes] = {}


def _load_kokoro() -> Any:
    global _kokoro
    with _kokoro_lock:
        if _kokoro is None:
            from kokoro_onnx import Kokoro

            _kokoro = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
        return _kokoro


def synthesize_ulaw_sync(text: str, voice: str = "jm_kumo", speed: float = 1.0) -> bytes:
    """Kokoro → 8 kHz mu-law, cached in memory by (text, voice, speed)."""
    key = (text, voice, speed)
    cached = _synth_cache.get(key)
    if cached is not None:
        return cached
    kokoro = _load_kokoro()
    with _kokoro_lock:  # one synthesis at a time: 2 cores, and cache fills once
        cached = _synth_cache.get(key)
        if cached is not None:
            return cached
        audio, rate = kokoro.create(text, voice=voice, speed=speed, lang="en-us")
        ulaw = float_to_ulaw(np.asarray(audio, dtype=np.float32), int(rate or KOKORO_SAMPLE_RATE))
        _synth_cache[key] = ulaw
    return ulaw


async def synthesize_ulaw(text: str, voice: str = "jm_kumo", speed: float = 1.0) -> bytes:
    """Async wrapper of :func:`synthesize_ulaw_sync` (runs in a thread unless cached)."""
    cached = _synth_cache.get((text, voice, speed))
    if cached is not None:
        return cached
    return await asyncio.to_thread(synthesize_ulaw_sync, text, voice, speed)


class Transcriber:
    """What the caller heard, as text: faster-whisper ``tiny.en`` on CPU (int8, beam 1).

    The model loads on first use (in a thread) and is shared by every ``Transcriber``.
    """

    _shared_model: Any = None
    _load_lock = threading.Lock()

    def __init__(self, *, cpu_threads: int = 2, beam_size: int = 1) -> None:
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._run_lock = threading.Lock()

    def _model(self) -> Any:
        cls = type(self)
        with cls._load_lock:
            if cls._shared_model is None:
                from faster_whisper import WhisperModel

                cls._shared_model = WhisperModel(
                    str(bundled_whisper_path()),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.cpu_threads,
                )
            return cls._shared_model

    async def load(self) -> None:
        await asyncio.to_thread(self._model)

    def transcribe_float_sync(self, audio16k: np.ndarray) -> str:
        if audio16k.size < 1600:  # under 0.1 s: nothing to hear
            return ""
        model = self._model()
        with self._run_lock:
            segments, _info = model.transcribe(
                np.asarray(audio16k, dtype=np.float32),
                beam_size=self.beam_size,
                language="en",
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            parts = [s.text for s in list(segments)]
        return " ".join(p.strip() for p in parts if p.strip())

    def transcribe_ulaw_sync(self, mulaw: bytes) -> str:
        return self.transcribe_float_sync(ulaw_to_float(bytes(mulaw), 16000))

    async def transcribe_ulaw(self, mulaw: bytes) -> str:
        """8 kHz mu-law bytes → text."""
        return await asyncio.to_thread(self.transcribe_ulaw_sync, bytes(mulaw))
