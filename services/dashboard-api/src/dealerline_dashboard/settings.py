"""Settings of the dashboard-api service (environment prefix ``DASHBOARD_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings


class DashboardSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="DASHBOARD_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = 8086
