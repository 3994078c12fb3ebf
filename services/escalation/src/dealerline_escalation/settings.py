"""Settings of the escalation service (environment prefix ``ESCALATION_``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from dealerline_common.twilio_signing import TwilioSigningSettings


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL such as https://dealer.example.com")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return value.rstrip("/")


class EscalationSettings(TwilioSigningSettings):
    """The escalation service's settings; the signature ones
    (``ESCALATION_TRUST_FORWARDED_HEADERS``, ``ESCALATION_TWILIO_SIGNATURE_ALGORITHM``,
    ``ESCALATION_TWILIO_WEBHOOK_KEY``, ``ESCALATION_TWILIO_WEBHOOK_KEY_ID``) are
    :class:`TwilioSigningSettings`'."""

    model_config = SettingsConfigDict(
        env_prefix="ESCALATION_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8085, ge=0, le=65535, description="webhooks and ops routes")

    # Twilio. Optional so that a fleet without a phone line still starts (every escalation
    # then fails at once and the agent offers a callback); ``missing`` names what is unset
    # and the service logs it at start-up.
    twilio_account_sid: str | None = Field(
        default=None, min_length=2, description="Twilio Account SID (AC...)"
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio auth token (REST and signatures)"
    )
    from_number: str | None = Field(
        default=None,
        pattern=r"^\+[1-9]\d{6,14}$",
        description="E.164 number the staff calls come from",
    )
    twilio_api_base_url: str | None = Field(
        default=None, description="Twilio REST base URL override (the phone simulator in tests)"
    )
    twilio_request_timeout_s: float = Field(default=10.0, gt=0)

    # Where Twilio reaches us and the gateway
    public_url: str | None = Field(
        default=None,
        description="public base URL of this service: the webhook URLs given to Twilio, and "
        "the URL signatures are checked against",
    )
    gateway_public_url: str | None = Field(
        default=None,
        description="public base URL of the gateway (the customer's call is redirected to "
        "its /api/voice/escalate and /api/voice/return-to-ai)",
    )

    # Timings
    ring_timeout_s: int = Field(default=45, ge=5, le=600, description="Twilio's dial timeout")
    watchdog_interval_s: float = Field(
        default=5.0, gt=0, description="fetch every non-final human call this often"
    )
    stalled_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="a call still unanswered this long after the ring timeout is cancelled",
    )
    confirm_deadline_s: float = Field(
        default=90.0,
        gt=0,
        description="a person who answered but has not accepted within this is hung up on",
    )
    create_grace_s: float = Field(
        default=20.0,
        gt=0,
        description="an attempt whose call creation never reported back is given up after",
    )
    confirm_speech_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="after acceptance, wait this long for the 'connecting you' turn to have "
        "played before moving the caller anyway",
    )
    answer_gather_timeout_s: int = Field(
        default=10, ge=1, le=60, description="'press any key' prompt timeout"
    )
    confirm_gather_timeout_s: int = Field(
        default=10, ge=1, le=60, description="'press 1 to accept' prompt timeout"
    )

    # The work queue and the state store
    max_concurrent: int = Field(
        default=32, ge=1, le=64, description="escalations one replica runs at once"
    )
    ack_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="a dead replica's escalation is resumed after this (heartbeats keep a "
        "live one's; unanswered for 3/4 of it, the replica lets go)",
    )
    max_deliver: int = Field(
        default=20, ge=1, description="times an escalation may be resumed by another replica"
    )
    state_url: str | None = Field(
        default=None,
        description="conversation state store shared with the agent: redis://... or memory://",
    )
    state_namespace: str = Field(default="", description="key prefix (same as the agent's)")
    state_ttl_s: float = Field(default=86400.0, gt=0)
    state_conflict_deadline_s: float = Field(
        default=10.0, gt=0, description="a state write that keeps losing races is retried this long"
    )
    state_unavailable_deadline_s: float = Field(
        default=10.0,
        gt=0,
        description="Redis unreachable (restart, failover): each state call retries this long",
    )

    @field_validator("public_url", "gateway_public_url", "twilio_api_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _base_url(value)

    @property
    def missing(self) -> list[str]:
        """The environment variables that must be set before a team member can be rung."""
        needed = {
            "twilio_account_sid": self.twilio_account_sid,
            "twilio_auth_token": self.twilio_auth_token,
            "from_number": self.from_number,
            "public_url": self.public_url,
            "gateway_public_url": self.gateway_public_url,
        }
        return [f"ESCALATION_{name.upper()}" for name, value in needed.items() if not value]

    # Only staff are rung (staff_check): each number is looked up in the dealership database.
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ESCALATION_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="the dealership database the staff are checked in (postgresql+asyncpg://… "
        "or sqlite+aiosqlite://…); None: DATABASE_URL, else the embedded SQLite file",
    )
