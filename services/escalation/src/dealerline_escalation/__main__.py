"""``python -m dealerline_escalation``: run the escalation service until SIGTERM."""

from __future__ import annotations

import asyncio

from dealerline_common.logs import configure_logging
from dealerline_common.ops import run_until_signalled
from dealerline_common.settings import load_settings

from .app import Service
from .settings import EscalationSettings


async def _run() -> None:
    settings = load_settings(EscalationSettings)
    configure_logging("escalation", settings.log_level, settings.log_json)
    service = Service(settings)
    await run_until_signalled(service.start, service.drain, service.health)


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
