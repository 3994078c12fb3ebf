"""``dealerline-tts`` / ``python -m dealerline_tts``: run one TTS worker until SIGTERM."""

from __future__ import annotations

from dealerline_common.service import service_main

from .service import TtsService
from .settings import TtsSettings


def main() -> None:
    service_main("tts", TtsSettings, TtsService)


if __name__ == "__main__":
    main()
