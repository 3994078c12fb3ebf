"""Settings of the dashboard-api service (environment prefix ``DASHBOARD_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings

# The built web UI: ``services/dashboard-api/web/dist`` (``make setup`` builds it there).
DEFAULT_WEB_DIR = Path(__file__).resolve().parents[2] / "web" / "dist"

MIN_SECRET_CHARS = 32


class DashboardSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="DASHBOARD_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8086, ge=0, le=65535, description="API, sockets, web UI, ops")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DASHBOARD_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="the dealership database (postgresql+asyncpg://… or sqlite+aiosqlite://…); "
        "None: the embedded SQLite file",
    )
    dealership_timezone: str = Field(
        default="America/Los_Angeles",
        description="used for 'today' only when the database has no dealership profile",
    )

    auth_secret: SecretStr = Field(
        description=f"signs staff tokens (HS256); at least {MIN_SECRET_CHARS} characters, "
        "the same on every replica"
    )
    token_ttl_s: float = Field(default=8 * 3600.0, gt=0, description="a login lasts this long")
    login_max_failures: int = Field(
        default=5, ge=1, description="failed logins for one email before it is locked out"
    )
    login_lockout_s: float = Field(
        default=300.0, gt=0, description="window of the failure count and length of a lockout"
    )
    full_number_roles: frozenset[str] = Field(
        default=frozenset({"manager"}),
        description="staff roles that see whole phone numbers (others see them masked)",
    )

    web_dir: Path = Field(default=DEFAULT_WEB_DIR, description="the built web UI (index.html)")

    ws_send_queue: int = Field(
        default=512,
        ge=1,
        description="frames a socket may have waiting; a client that falls further behind "
        "is closed with 4008 (too slow)",
    )
    events_batch: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="events read from the stream at once (at most ws_send_queue: a batch "
        "is handed to every sales socket at once)",
    )
    replay_window_s: float = Field(
        default=86400.0,
        gt=0,
        description="on start, events this old are replayed to rebuild live calls and "
        "today's escalations",
    )
    replay_timeout_s: float = Field(
        default=60.0, gt=0, description="readiness waits at most this long for the replay"
    )
    stale_call_s: float = Field(
        default=4 * 3600.0,
        gt=0,
        description="a live call with no event for this long is dropped (its end was lost)",
    )
    staff_action_timeout_s: float = Field(
        default=3.0, gt=0, description="claim/pass: wait this long for the escalation service"
    )

    @field_validator("auth_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(
                f"must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> DashboardSettings:
        if self.events_batch > self.ws_send_queue:
            raise ValueError(
                f"events_batch ({self.events_batch}) must not exceed ws_send_queue "
                f"({self.ws_send_queue}): one batch would close every sales socket as too slow"
            )
        return self
