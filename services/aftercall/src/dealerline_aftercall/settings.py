"""Settings of the aftercall service (environment prefix ``AFTERCALL_``).

Two parts share one process: the record keeper (call records and summaries, from the
bus and the state store) and the notifier (emails and texts, from the ``DL_NOTIFY`` work
queue). Each part's settings are in its own section below.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings


class AftercallSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AFTERCALL_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8087, ge=0, le=65535, description="/livez /readyz /metrics")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AFTERCALL_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="the dealership database; default: the embedded SQLite file",
    )
    state_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AFTERCALL_STATE_URL", "REDIS_URL", "state_url"),
        description="the conversation state store (redis://…); default: none (bus only)",
    )
    state_namespace: str = Field(default="", description="key prefix in Redis")
    dashboard_url: str | None = Field(
        default=None, description="base URL of the dashboard, for links in emails"
    )

    # ---------------------------------------------------------------- record keeper
    llm_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AFTERCALL_LLM_BASE_URL", "OPENAI_BASE_URL", "llm_base_url"),
    )
    llm_model: str = "gpt-4.1-mini"
    llm_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AFTERCALL_LLM_API_KEY", "OPENAI_API_KEY", "llm_api_key"),
    )
    llm_timeout_s: float = Field(default=30.0, gt=0, description="one summary request")

    # ---------------------------------------------------------------- notifier
    smtp_host: str | None = Field(default=None, description="unset: emails are not sent")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=True, description="STARTTLS after connecting")
    smtp_timeout_s: float = Field(default=15.0, gt=0)
    mail_from: str = "dealerline <no-reply@dealerline.invalid>"
    desk_email: str | None = Field(
        default=None, description="overrides the dealership's service_desk_email"
    )
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = Field(default=None, description="E.164 sender of texts")
    twilio_api_base_url: str | None = Field(
        default=None, description="the Twilio REST base URL (a simulator in tests)"
    )
