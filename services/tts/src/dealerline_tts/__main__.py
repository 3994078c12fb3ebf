"""``dealerline-tts`` / ``python -m dealerline_tts``: run one TTS worker until SIGTERM."""

from __future__ import annotations

import asyncio

from dealerline_common.logs import configure_logging
from dealerline_common.ops import run_until_signalled
from dealerline_common.settings import load_settings

from .service import TtsService
from .settings import TtsSettings


async def serve(settings: TtsSettings) -> None:
    service = TtsService(settings)
    await run_until_signalled(service.start, service.drain, service.health)


def main() -> None:
    configure_logging("tts")
    settings = load_settings(TtsSettings)
    configure_logging("tts", settings.log_level, settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
