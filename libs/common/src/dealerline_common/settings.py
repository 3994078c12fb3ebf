"""Settings shared by every service, read from the environment with pydantic-settings.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (``GATEWAY_``,
``STT_``, ``TTS_``, ``AGENT_``, ``ESCALATION_``, ``DASHBOARD_``). :func:`load_settings`
turns pydantic's validation error into one line that names the environment variables to
set, so a pod that starts without its configuration says exactly what is missing.

Every settings class here also reads an env file (:class:`EnvFileSettings`): ``.env`` in the
working directory, or the file ``DEALERLINE_ENV_FILE`` names. Precedence, highest first:
values passed to the class, real environment variables, the env file, the defaults. A
missing ``.env`` is fine; a ``DEALERLINE_ENV_FILE`` that names no file is a
:class:`SettingsError` (``DEALERLINE_ENV_FILE=/dev/null`` reads none).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Raised at start-up when the environment does not configure the service."""


ENV_FILE_VAR = "DEALERLINE_ENV_FILE"
DEFAULT_ENV_FILE = ".env"


def env_file() -> Path:
    """The env file settings read: ``$DEALERLINE_ENV_FILE``, else ``.env`` in the working
    directory (which need not exist). Raises SettingsError when ``DEALERLINE_ENV_FILE``
    names a path that does not exist (a typo there would otherwise go unnoticed)."""
    named = os.environ.get(ENV_FILE_VAR, "").strip()
    if not named:
        return Path(DEFAULT_ENV_FILE)
    path = Path(named).expanduser()
    if not path.exists():
        raise SettingsError(f"{ENV_FILE_VAR}={named}: no such file")
    if path.is_dir():
        raise SettingsError(f"{ENV_FILE_VAR}={named} is a folder, not an env file")
    return path


class EnvFileSettings(BaseSettings):
    """Settings that also read :func:`env_file` (real environment variables win over it).

    The file is looked up when the settings are built, not when the class is defined, so
    a process that changes directory or sets ``DEALERLINE_ENV_FILE`` first is honoured.
    """

    def __init__(self, **values: Any) -> None:
        if "_env_file" not in values:
            values["_env_file"] = env_file()
        super().__init__(**values)


class ServiceSettings(EnvFileSettings):
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
    nats_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="start: wait this long for NATS and its JetStream, then exit with a clear error",
    )
    nats_publish_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a durable publish keeps trying through a NATS outage this long, then fails",
    )

    # NATS authentication and TLS (dealerline_common.bus.auth); unset: an anonymous,
    # plain connection (a local nats-server without authorization).
    nats_user: str | None = Field(default=None, description="NATS user name (with the password)")
    nats_password: SecretStr | None = Field(default=None, description="NATS user's password")
    nats_creds_file: str | None = Field(
        default=None, description="NATS .creds file (user JWT and nkey seed; decentralised auth)"
    )
    nats_nkey_seed_file: str | None = Field(default=None, description="file holding an nkey seed")
    nats_tls_ca_file: str | None = Field(
        default=None, description="CA bundle the NATS server's certificate is checked against"
    )
    nats_tls_cert_file: str | None = Field(default=None, description="client certificate (mTLS)")
    nats_tls_key_file: str | None = Field(default=None, description="client certificate's key")

    @model_validator(mode="after")
    def _one_nats_identity(self) -> ServiceSettings:
        p = str(self.model_config.get("env_prefix", "")).upper()
        if (self.nats_user is None) != (self.nats_password is None):
            raise ValueError(f"{p}NATS_USER and {p}NATS_PASSWORD are set together (or neither)")
        ways = [self.nats_user, self.nats_creds_file, self.nats_nkey_seed_file]
        if sum(w is not None for w in ways) > 1:
            raise ValueError(
                f"one NATS identity at a time: {p}NATS_USER/{p}NATS_PASSWORD, "
                f"{p}NATS_CREDS_FILE or {p}NATS_NKEY_SEED_FILE"
            )
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError(f"{p}NATS_TLS_CERT_FILE and {p}NATS_TLS_KEY_FILE are set together")
        return self


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
            if not field:  # a rule over several variables: its message names them
                problems.append(str(err["msg"]).removeprefix("Value error, "))
            elif err["type"] == "missing":
                problems.append(f"{var} is required (set the environment variable {var})")
            else:
                problems.append(f"{var}: {err['msg']}")
        raise SettingsError(f"{cls.__name__}: " + "; ".join(problems)) from None
