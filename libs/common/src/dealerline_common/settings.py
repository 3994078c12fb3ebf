"""Settings shared by every service, read from the environment with pydantic-settings.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (``GATEWAY_``,
``STT_``, ``TTS_``, ``AGENT_``, ``ESCALATION_``, ``DASHBOARD_``). :func:`load_settings`
turns pydantic's validation error into one line that names the environment variables to
set, so a pod that starts without its configuration says exactly what is missing.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Raised at start-up when the environment does not configure the service."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DL_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server(s), comma-separated"
    )
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535, description="/livez /readyz /metrics")
    log_level: str = "INFO"
    log_json: bool = True
    drain_timeout_s: float = Field(default=20.0, gt=0, description="SIGTERM: finish work within")
    js_file_storage: bool = Field(
        default=True, description="JetStream streams on disk (True) or in memory"
    )


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment, or raise SettingsError naming each bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            var = f"{prefix}{field}".upper()
            if err["type"] == "missing":
                problems.append(f"{var} is required (set the environment variable {var})")
            else:
                problems.append(f"{var}: {err['msg']}")
        raise SettingsError(f"{cls.__name__}: " + "; ".join(problems)) from None
