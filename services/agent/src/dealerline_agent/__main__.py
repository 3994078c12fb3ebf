"""``dealerline-agent`` / ``python -m dealerline_agent``: run the agent until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from dealerline_common.logs import configure_logging, get_logger
from dealerline_common.ops import run_until_signalled
from dealerline_common.settings import SettingsError, load_settings

from .service import AgentService
from .settings import AgentSettings

log = get_logger("dealerline_agent")


async def _run(settings: AgentSettings) -> None:
    agent = AgentService(settings)
    await run_until_signalled(agent.start, agent.drain, agent.health)


def main() -> None:
    configure_logging("agent")
    try:
        settings = load_settings(AgentSettings)
        settings.api_key()  # fail now, naming the variable, not on the first call
    except SettingsError as exc:
        log.error("bad configuration", error=str(exc))
        sys.exit(2)
    configure_logging("agent", settings.log_level, settings.log_json)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
