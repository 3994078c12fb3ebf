"""Settings of the escalation service (environment prefix ``ESCALATION_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings


class EscalationSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="ESCALATION_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = 8085
