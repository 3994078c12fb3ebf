"""Text-to-speech worker: sentences in, 8 kHz mu-law audio out (Kokoro-82M, ONNX)."""

from .cancel import CancelledTurns
from .engine import KokoroEngine
from .service import TtsService
from .settings import TtsSettings
from .text import normalize_text

__all__ = ["CancelledTurns", "KokoroEngine", "TtsService", "TtsSettings", "normalize_text"]
