"""Kokoro-82M through kokoro-onnx, on the onnxruntime providers the settings ask for."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dealerline_common import audio as audio_module
from dealerline_common.audio import Float32Array
from dealerline_common.logs import get_logger
from dealerline_common.models import bundled_voices_path, kokoro_int8_path

from .settings import TtsSettings

log = get_logger(__name__)

KOKORO_RATE = 24000
WARM_UP_TEXT = "Thanks for calling, how can I help you today?"


class TextToSpeech(Protocol):
    """What the worker needs from a model; tests may pass a fake with this shape."""

    name: str
    sample_rate: int

    def synthesize(self, text: str) -> Float32Array:
        """Speak already normalised text; blocking, called from a worker thread."""
        ...


class MultiVoice(Protocol):
    """An engine that can also speak in other voices than its default one (a ``Say`` asks
    for the dealership's voice); ``synthesize(text)`` stays the default voice."""

    def has_voice(self, voice: str) -> bool: ...

    def synthesize_as(self, text: str, voice: str) -> Float32Array: ...


class NothingToSay(ValueError):
    """The text produced no phonemes (only punctuation, symbols Kokoro cannot say)."""


def providers_for(device: str, device_index: int = 0) -> list[Any]:
    """onnxruntime execution providers for ``device``; CUDA only where onnxruntime has it
    (the ``onnxruntime-gpu`` build), which plain ``onnxruntime`` never does."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device_index}), "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError(
            "TTS_DEVICE=cuda but onnxruntime has no CUDAExecutionProvider "
            f"(available: {available}); install onnxruntime-gpu in place of onnxruntime"
        )
    return ["CPUExecutionProvider"]


def trim_silence(
    audio: Float32Array,
    rate: int,
    lead_ms: float,
    tail_ms: float,
    threshold_db: float = -45.0,
) -> Float32Array:
    """Cut silence before the first and after the last sound above ``threshold_db``
    (relative to the peak), keeping ``lead_ms`` before and ``tail_ms`` after, so a reply
    starts promptly and still ends on a natural decay."""
    if audio.size == 0:
        return audio
    peak = float(np.max(np.abs(audio)))
    if peak <= 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) >= peak * 10.0 ** (threshold_db / 20.0))
    start = max(0, int(loud[0]) - int(rate * lead_ms / 1000.0))
    end = min(audio.size, int(loud[-1]) + 1 + int(rate * tail_ms / 1000.0))
    return audio[start:end]


class KokoroEngine:
    def __init__(self, settings: TtsSettings) -> None:
        import onnxruntime as ort
        from kokoro_onnx import Kokoro

        self.settings = settings
        model_path = Path(settings.model_path) if settings.model_path else kokoro_int8_path()
        voices_path = Path(settings.voices_path) if settings.voices_path else bundled_voices_path()
        self.name = f"{model_path.stem}:{settings.voice}"
        self.sample_rate = KOKORO_RATE
        started = time.perf_counter()
        options = ort.SessionOptions()
        if settings.intra_op_threads:
            options.intra_op_num_threads = settings.intra_op_threads
        self.providers = providers_for(settings.device, settings.device_index)
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=self.providers
        )
        self.kokoro = Kokoro.from_session(session, str(voices_path))
        self.voices = frozenset(self.kokoro.get_voices())
        if settings.voice not in self.voices:
            raise RuntimeError(
                f"TTS_VOICE={settings.voice!r} is not in {voices_path} "
                f"(it has {', '.join(sorted(self.voices))})"
            )
        self.identity = _identity(settings, model_path, voices_path, session.get_providers())
        log.info(
            "kokoro model loaded",
            model=str(model_path),
            voice=settings.voice,
            providers=session.get_providers(),
            load_s=round(time.perf_counter() - started, 2),
        )

    def has_voice(self, voice: str) -> bool:
        return voice in self.voices

    def synthesize(self, text: str) -> Float32Array:
        return self.synthesize_as(text, self.settings.voice)

    def synthesize_as(self, text: str, voice: str) -> Float32Array:
        s = self.settings
        phonemes = self.kokoro.tokenizer.phonemize(text, s.lang)
        if not phonemes.strip():
            raise NothingToSay(f"no phonemes in {text!r}")
        audio, rate = self.kokoro.create(
            phonemes, voice=voice, speed=s.speed, lang=s.lang, is_phonemes=True
        )
        return trim_silence(np.asarray(audio, dtype=np.float32), rate, s.lead_ms, s.tail_ms)

    def warm_up(self) -> None:
        self.synthesize(WARM_UP_TEXT)


def _identity(
    settings: TtsSettings, model_path: Path, voices_path: Path, providers: list[str]
) -> str:
    """Everything the audio of a text depends on besides the text: the model and voice
    files, the libraries that phonemise and run them, the code that trims and encodes
    the result, and the settings. Saved phrases are found by a digest of it."""

    def file_id(path: Path) -> list[object]:
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    code = hashlib.sha256()
    for source in (Path(__file__), Path(str(audio_module.__file__))):
        code.update(source.read_bytes())
    return json.dumps(
        {
            "model": file_id(model_path),
            "voices": file_id(voices_path),
            "libraries": {
                d: version(d)
                for d in (
                    "kokoro-onnx",
                    "onnxruntime",
                    "onnxruntime-gpu",
                    "espeakng-loader",
                    "phonemizer",
                    "phonemizer-fork",
                    "numpy",
                )
            },
            "code": code.hexdigest(),
            "providers": providers,
            "voice": settings.voice,
            "speed": settings.speed,
            "lang": settings.lang,
            "lead_ms": settings.lead_ms,
            "tail_ms": settings.tail_ms,
        },
        sort_keys=True,
    )
