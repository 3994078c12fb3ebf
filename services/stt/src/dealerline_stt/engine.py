"""faster-whisper behind a small synchronous interface the worker runs in a thread."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dealerline_common.audio import Float32Array, ulaw_to_float
from dealerline_common.logs import get_logger
from dealerline_common.models import bundled_whisper_path

from .settings import SttSettings

log = get_logger(__name__)

WHISPER_RATE = 16000
BUNDLED_NAME = "tiny.en"
FRAMES_PER_S = 100  # Whisper's log-mel hop: 10 ms
FULL_WINDOW_FRAMES = 3000  # the 30 s window Whisper was trained on
# Kept after the last frame of audio when the window is cut: the model sees the speech end.
WINDOW_MARGIN_FRAMES = 100


@dataclass(frozen=True)
class TranscribeResult:
    text: str
    language: str | None
    confidence: float | None
    no_speech_prob: float | None


class SpeechToText(Protocol):
    """What the worker needs from a model; tests may pass a fake with this shape."""

    name: str

    def transcribe(self, audio: Float32Array) -> TranscribeResult:
        """Transcribe 16 kHz mono float audio; blocking, called from a worker thread."""
        ...


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def model_name(model: str) -> str:
    """A readable name for the Transcript: the folder name for a local model."""
    path = Path(model)
    return path.name if path.exists() else model


def summarise(segments: list[Any], language: str | None) -> TranscribeResult:
    """Join segments; confidence = mean per-segment exp(avg_logprob), within [0, 1]."""
    text = " ".join(s.text.strip() for s in segments if s.text.strip()).strip()
    if not segments:
        return TranscribeResult(text=text, language=language, confidence=None, no_speech_prob=None)
    probs = [min(1.0, max(0.0, math.exp(s.avg_logprob))) for s in segments]
    return TranscribeResult(
        text=text,
        language=language,
        confidence=float(np.mean(probs)),
        no_speech_prob=float(max(s.no_speech_prob for s in segments)),
    )


def encoder_frames(content_frames: int, window_frames: int) -> int:
    """How many mel frames to encode for ``content_frames`` of audio: the window, or the
    audio plus a margin when it is longer, never more than the full 30 s; even, because
    the encoder's convolution halves it."""
    frames = min(FULL_WINDOW_FRAMES, max(window_frames, content_frames + WINDOW_MARGIN_FRAMES))
    return frames + frames % 2


def cut_window(features: Any, window_frames: int) -> Any:
    """``features`` (mels × frames, or batch × mels × frames) padded to 30 s with zeros by
    faster-whisper, cut to :func:`encoder_frames` of its content. A zero column is only
    ever padding: the log-mel of real audio, even digital silence, is never all zero."""
    frames = features.shape[-1]
    used = np.flatnonzero(np.any(features != 0, axis=tuple(range(features.ndim - 1))))
    content = int(used[-1]) + 1 if used.size else 0
    keep = encoder_frames(content, window_frames)
    return features[..., :keep] if keep < frames else features


@functools.cache
def windowed_model_class() -> type[Any]:
    """faster-whisper's WhisperModel, encoding a shorter window than 30 s when asked.

    faster-whisper pads every segment's features to the 30 s window and the encoder's
    cost follows the frames it is given, not the speech in them: for a phone turn of a
    few seconds most of the ~350 ms of a CPU transcription is spent encoding padding.
    CTranslate2 encodes any length up to the window; Whisper keeps its accuracy with a
    10 s window and starts repeating itself below that (bench_stt.py).
    """
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]
        window_frames = FULL_WINDOW_FRAMES

        def encode(self, features: Any) -> Any:
            if self.window_frames < FULL_WINDOW_FRAMES:
                features = cut_window(features, self.window_frames)
            return super().encode(features)

    return WindowedWhisperModel


class WhisperEngine:
    """One loaded WhisperModel; ``transcribe`` is thread-safe (CTranslate2 queues jobs on
    ``num_workers`` model replicas, sized to the worker's concurrency)."""

    def __init__(self, settings: SttSettings) -> None:
        self.settings = settings
        model = settings.model or str(bundled_whisper_path())
        self.name = model_name(settings.model) if settings.model else BUNDLED_NAME
        self.device = resolve_device(settings.device)
        self.compute_type = resolve_compute_type(settings.compute_type, self.device)
        started = time.perf_counter()
        self.model = windowed_model_class()(
            model,
            device=self.device,
            device_index=settings.device_index,
            compute_type=self.compute_type,
            cpu_threads=settings.cpu_threads,
            # Probes share the job's replicas: on this 2-core CPU a second replica ran a
            # probe beside a job no sooner than queueing it (they share the cores).
            num_workers=settings.concurrency,
            # A size name must already be in the local cache: no weights at run time.
            local_files_only=True,
        )
        self.model.window_frames = window_frames(settings.encoder_window_s)
        log.info(
            "whisper model loaded",
            model=self.name,
            device=self.device,
            compute_type=self.compute_type,
            encoder_window_s=self.model.window_frames / FRAMES_PER_S,
            load_s=round(time.perf_counter() - started, 2),
        )

    def transcribe(self, audio: Float32Array) -> TranscribeResult:
        s = self.settings
        segments, info = self.model.transcribe(
            audio,
            language=s.language,
            beam_size=s.beam_size,
            best_of=s.beam_size,
            temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if s.temperature_fallback else 0.0,
            initial_prompt=s.initial_prompt,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=s.vad_filter,
        )
        # `segments` is a lazy generator: decoding happens here, inside the caller's thread.
        return summarise(list(segments), info.language)

    def warm_up(self) -> None:
        """Decode one second of quiet noise so the first real call pays no lazy set-up."""
        rng = np.random.default_rng(0)
        self.transcribe((rng.standard_normal(WHISPER_RATE) * 1e-3).astype(np.float32))


def window_frames(window_s: float) -> int:
    """The ``encoder_window_s`` setting in mel frames (0 = the full 30 s window)."""
    frames = round(window_s * FRAMES_PER_S)
    return FULL_WINDOW_FRAMES if frames <= 0 else min(frames, FULL_WINDOW_FRAMES)


def transcribe_ulaw(engine: SpeechToText, ulaw: bytes) -> TranscribeResult:
    """8 kHz mu-law (the wire's audio) → the engine's 16 kHz float input → its result."""
    return engine.transcribe(ulaw_to_float(ulaw, WHISPER_RATE))
