"""Settings of the dashboard-api service (environment prefix ``DASHBOARD_``)."""

from __future__ import annotations

import ipaddress
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
        default=5,
        ge=1,
        description="failed logins for one email from one client address before that "
        "pair (only) is locked out; other addresses can still log in as that person",
    )
    login_lockout_s: float = Field(
        default=300.0, gt=0, description="window of the failure count and length of a lockout"
    )
    login_ip_max_attempts: int = Field(
        default=30, ge=1, description="logins (good or bad) one client address may try per window"
    )
    login_ip_window_s: float = Field(
        default=60.0, gt=0, description="window of the per-address login limit"
    )
    login_max_concurrent: int = Field(
        default=2,
        ge=1,
        description="password checks (64 MiB argon2 each) running at once per replica; a "
        "login beyond them is answered 503 with Retry-After at once",
    )
    state_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DASHBOARD_STATE_URL", "REDIS_URL", "state_url"),
        description="redis://… keeps the login limits there, shared by every replica; "
        "None or memory://: per replica",
    )
    state_namespace: str = Field(default="", description="key prefix in Redis")
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="addresses or networks (CIDR) of the reverse proxies whose "
        "X-Forwarded-For is believed; empty: the peer address is the client",
    )
    ws_auth_timeout_s: float = Field(
        default=5.0, gt=0, description="a socket must send its token (first message) by then"
    )
    ws_recheck_s: float = Field(
        default=15.0,
        gt=0,
        description="sockets re-read their staff row this often (a role change on another "
        "replica, a removed person); a change closes them with 4401",
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

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> DashboardSettings:
        if self.events_batch > self.ws_send_queue:
            raise ValueError(
                f"events_batch ({self.events_batch}) must not exceed ws_send_queue "
                f"({self.ws_send_queue}): one batch would close every sales socket as too slow"
            )
        return self
