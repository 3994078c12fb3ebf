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
    llm_timeout_s: float = Field(default=20.0, gt=0, description="one summary request")
    summary_attempts: int = Field(
        default=3, ge=1, le=10, description="summary requests per try (tenacity, backing off)"
    )
    summary_retry_after_s: float = Field(
        default=60.0, gt=0, description="a record without a summary is retried this often"
    )
    summary_give_up_after_s: float = Field(
        default=86400.0, gt=0, description="stop retrying a missing summary after this"
    )
    end_grace_s: float = Field(
        default=1.5, ge=0, description="after call_ended, wait for late events, then finalize"
    )
    stale_after_s: float = Field(
        default=1800.0,
        gt=0,
        description="a call silent this long with no end is closed as stream_lost",
    )
    sweep_interval_s: float = Field(
        default=15.0, gt=0, description="how often unfinished records are looked for"
    )
    record_ack_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="an event whose write died is redelivered after this (writes are "
        "idempotent; heartbeats keep a live one's)",
    )
    record_max_deliver: int = Field(
        default=20, ge=1, description="writes of one event before it is given up (DB down)"
    )

    # ---------------------------------------------------------------- notifier
    smtp_host: str | None = Field(default=None, description="unset: emails are not sent")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=True, description="STARTTLS after connecting")
    smtp_ca_file: str | None = Field(
        default=None, description="CA bundle that signs the SMTP server's certificate"
    )
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
    twilio_timeout_s: float = Field(default=15.0, gt=0, description="one Messages request")
    notify_max_attempts: int = Field(
        default=8, ge=1, le=100, description="sends of one email or text before it is dead"
    )
    notify_backoff_base_s: float = Field(
        default=5.0, gt=0, description="first retry delay; doubles with each attempt"
    )
    notify_backoff_max_s: float = Field(default=600.0, gt=0, description="longest retry delay")
    text_max_age_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="an appointment event older than this (service down for long) gets no text",
    )
    notify_concurrency: int = Field(
        default=4, ge=1, le=64, description="emails sent at once (texts: one at a time, in order)"
    )
