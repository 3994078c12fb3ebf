"""``dealerline-agent`` / ``python -m dealerline_agent``: run the agent until SIGTERM."""

from __future__ import annotations

from pydantic import model_validator

from dealerline_common.service import service_main

from .service import AgentService
from .settings import AgentSettings


class _RunSettings(AgentSettings):
    """The settings of a running agent: the LLM key is checked at start-up, so a pod
    without one fails at once, naming the variable, not on the first call."""

    @model_validator(mode="after")
    def _key_is_set(self) -> _RunSettings:
        self.api_key()  # raises SettingsError, which service_main reports (exit 2)
        return self


def main() -> None:
    service_main("agent", _RunSettings, AgentService)


if __name__ == "__main__":
    main()
