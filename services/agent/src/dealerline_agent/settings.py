"""The agent's configuration (environment variables ``AGENT_*``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings, SettingsError

from .dealership.identity import IdentityRules


class AgentSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENT_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8084, ge=0, le=65535, description="/livez /readyz /metrics")

    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (vLLM, the scripted sim); None: OpenAI",
    )
    llm_model: str = "gpt-4.1-mini"
    llm_api_key: SecretStr | None = Field(
        default=None,
        # AGENT_LLM_API_KEY wins; OPENAI_API_KEY is the fallback every OpenAI tool reads.
        validation_alias=AliasChoices("AGENT_LLM_API_KEY", "OPENAI_API_KEY", "llm_api_key"),
    )
    llm_temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    llm_timeout_s: float = Field(default=30.0, gt=0, description="a whole LLM reply")
    llm_first_token_timeout_s: float = Field(
        default=2.5, gt=0, description="a call with no token by then is retried"
    )
    llm_retries: int = Field(default=1, ge=0, le=3, description="retries before the apology")
    llm_fallback_timeout_s: float = Field(
        default=2.0, gt=0, description="the apology asked of the model after the retries"
    )
    last_resort_apology: str = Field(
        default="I'm sorry, I'm having trouble right now. Could you say that again?",
        description="spoken only if the model has never answered the fallback (the one "
        "sentence not written by the model)",
    )
    max_tool_rounds: int = Field(
        default=6, ge=1, description="LLM steps with tools bound per turn; then it must reply"
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AGENT_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="the dealership database (postgresql+asyncpg://… or sqlite+aiosqlite://…); "
        "None: the embedded SQLite file",
    )
    state_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AGENT_STATE_URL", "REDIS_URL", "state_url"),
        description="conversation state store: redis://… (every replica shares it) or "
        "memory:// (one replica)",
    )
    state_ttl_s: float = Field(default=86400.0, gt=0, description="state kept after last write")
    state_namespace: str = Field(default="", description="key prefix in Redis")
    state_conflict_deadline_s: float = Field(
        default=10.0, gt=0, description="a state write that keeps losing races is retried this long"
    )
    state_unavailable_deadline_s: float = Field(
        default=10.0,
        gt=0,
        description="Redis unreachable (restart, failover): each state call retries this long",
    )

    # The dealership's name, timezone, assistant and voice come from the database's
    # profile row, read at each turn; these two hold only while it has none (or is down).
    dealership_name: str = Field(
        default="Sunrise Motors", description="fallback while the database has no profile"
    )
    dealership_timezone: str = Field(
        default="America/Los_Angeles", description="fallback while the database has no profile"
    )

    ack_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="a transcript whose agent died is redelivered after this long; a turn "
        "still running tells NATS it is in progress (the bus's heartbeat, every third of "
        "this), so a long turn keeps its one owner",
    )
    concurrency: int = Field(default=16, ge=1, description="turns (of different calls) at once")
    max_history_messages: int = Field(default=40, ge=2, description="messages sent to the LLM")
    no_speech_max: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="transcripts with a higher no_speech_prob are noise",
    )
    cancel_timeout_s: float = Field(default=3.0, gt=0)
    session_idle_ttl_s: float = Field(
        default=1800.0,
        gt=0,
        description="a session with no stream and no turn (or no activity at all) for this "
        "long is forgotten; must outlast the longest human leg of an escalation",
    )

    verify_code_ttl_s: float = Field(
        default=300.0, gt=0, le=900, description="a texted verification code expires after"
    )
    verify_code_attempts: int = Field(
        default=3, ge=1, le=5, description="wrong tries before a texted code is void"
    )
    verify_codes_per_call: int = Field(
        default=3, ge=1, le=5, description="verification codes one call may have texted"
    )
    verify_fact_failures: int = Field(
        default=3, ge=1, le=5, description="wrong plates/VINs/services before facts stop counting"
    )
    verify_customer_failures: int = Field(
        default=5,
        ge=1,
        le=20,
        description="wrong facts for one customer, over every call in the window, before no "
        "fact can verify that customer",
    )
    verify_customer_codes: int = Field(
        default=5,
        ge=1,
        le=20,
        description="verification codes texted to one customer, over every call in the window",
    )
    verify_customer_window_s: float = Field(
        default=86400.0,
        ge=60,
        le=30 * 86400,
        description="the rolling window of the per-customer limits (shared by every replica "
        "through the state store)",
    )

    def identity_rules(self) -> IdentityRules:
        return IdentityRules(
            code_ttl_s=self.verify_code_ttl_s,
            code_attempts=self.verify_code_attempts,
            max_codes_per_call=self.verify_codes_per_call,
            max_fact_failures=self.verify_fact_failures,
            customer_failures=self.verify_customer_failures,
            customer_codes=self.verify_customer_codes,
            customer_window_s=self.verify_customer_window_s,
        )

    @property
    def session_sweep_interval_s(self) -> float:
        """How often idle sessions are looked for: a quarter of the TTL, at most a minute."""
        return min(60.0, self.session_idle_ttl_s / 4)

    def api_key(self) -> str:
        """The key for the LLM client, or SettingsError naming the variable to set."""
        if self.llm_api_key is not None and self.llm_api_key.get_secret_value():
            return self.llm_api_key.get_secret_value()
        if self.llm_base_url:
            # Self-hosted endpoints (vLLM, the scripted sim) usually need no key, but the
            # OpenAI client refuses to start without one.
            return "not-needed"
        raise SettingsError(
            "AgentSettings: AGENT_LLM_API_KEY is required (set the environment variable "
            "AGENT_LLM_API_KEY or OPENAI_API_KEY, or AGENT_LLM_BASE_URL for a self-hosted endpoint)"
        )
