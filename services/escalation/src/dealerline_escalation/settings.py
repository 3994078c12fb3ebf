"""Settings of the escalation service (environment prefix ``ESCALATION_``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings
from dealerline_common.twilio_urls import SignatureAlgorithms, SigningKeys


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL such as https://dealer.example.com")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return value.rstrip("/")


class EscalationSettings(ServiceSettings):
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
    trust_forwarded_headers: bool = Field(
        default=False,
        description="also accept signatures over the URL rebuilt from "
        "X-Forwarded-Proto/Host/Prefix (dealerline_common.twilio_urls)",
    )
    twilio_signature_algorithm: SignatureAlgorithms = Field(
        default="sha1",
        description="signatures accepted: sha1 (auth token), sha256 (a Webhooks Rule's "
        "SharedKey, X-Twilio-Webhooks-Signature-Settings) or both",
    )
    twilio_webhook_key: SecretStr | None = Field(
        default=None, description="the Webhooks Rule's SharedKey secret (HMAC-SHA256)"
    )
    twilio_webhook_key_id: str | None = Field(
        default=None, description="when set, an HMAC-SHA256 request must name this SharedKey id"
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
        default=15.0, gt=0, description="a dead replica's escalation is resumed after this"
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

    @field_validator("public_url", "gateway_public_url", "twilio_api_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _base_url(value)

    @model_validator(mode="after")
    def _check_signing(self) -> EscalationSettings:
        if self.twilio_signature_algorithm != "sha1" and self.twilio_webhook_key is None:
            raise ValueError(
                "ESCALATION_TWILIO_SIGNATURE_ALGORITHM=sha256 or both needs "
                "ESCALATION_TWILIO_WEBHOOK_KEY (the Webhooks Rule's SharedKey secret)"
            )
        return self

    @property
    def signing_keys(self) -> SigningKeys:
        token, key = self.twilio_auth_token, self.twilio_webhook_key
        return SigningKeys(
            self.twilio_signature_algorithm,
            token.get_secret_value() if token is not None else None,
            key.get_secret_value() if key is not None else None,
            self.twilio_webhook_key_id,
        )

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
