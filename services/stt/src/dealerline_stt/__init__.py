"""Speech-to-text worker: endpointed utterances in, transcripts out (faster-whisper)."""

from .engine import TranscribeResult, WhisperEngine
from .service import SttService
from .settings import SttSettings

__all__ = ["SttService", "SttSettings", "TranscribeResult", "WhisperEngine"]
