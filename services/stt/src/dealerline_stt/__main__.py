"""``dealerline-stt`` / ``python -m dealerline_stt``: run one STT worker until SIGTERM."""

from __future__ import annotations

import asyncio

from dealerline_common.logs import configure_logging
from dealerline_common.ops import run_until_signalled
from dealerline_common.settings import load_settings

from .service import SttService
from .settings import SttSettings


async def serve(settings: SttSettings) -> None:
    service = SttService(settings)
    await run_until_signalled(service.start, service.drain, service.health)


def main() -> None:
    configure_logging("stt")
    settings = load_settings(SttSettings)
    configure_logging("stt", settings.log_level, settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
