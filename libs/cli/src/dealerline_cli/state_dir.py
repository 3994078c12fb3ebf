"""Where ``make run`` keeps what must survive a restart: the data folder (``var/`` in the
checkout by default, ``--data-dir`` or ``$DEALERLINE_DATA_DIR`` otherwise).

    var/dealerline.db      the dealership database (unless DATABASE_URL names another)
    var/secrets.env        secrets generated on the first start (mode 0600), reused after
    var/nats/              the local nats-server's JetStream store
    var/log/               one log per process (appended to across restarts)

A secret configured in the environment (or the ``.env`` file) always wins over the stored
one, and is never written to ``secrets.env``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

DATA_DIR_ENV = "DEALERLINE_DATA_DIR"
SECRETS_FILE = "secrets.env"

# Stored name → the environment variables that configure it instead (the first set wins).
DASHBOARD_SECRET = "DASHBOARD_AUTH_SECRET"
TWILIO_TOKEN = "TWILIO_AUTH_TOKEN"
_CONFIGURED_BY: dict[str, tuple[str, ...]] = {
    DASHBOARD_SECRET: (DASHBOARD_SECRET,),
    TWILIO_TOKEN: ("GATEWAY_TWILIO_AUTH_TOKEN", "ESCALATION_TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
}
_GENERATED_BYTES = {DASHBOARD_SECRET: 32, TWILIO_TOKEN: 16}


def database_url(data_dir: Path | None = None) -> str:
    """``DATABASE_URL`` if set, else the SQLite file in ``data_dir`` (default: the data
    folder, :func:`default_data_dir`). Not normalised (the caller reports a bad one)."""
    given = os.environ.get("DATABASE_URL", "").strip()
    if given:
        return given
    return f"sqlite+aiosqlite:///{(data_dir or default_data_dir()).resolve() / 'dealerline.db'}"


def _checkout() -> Path | None:
    """The checkout this package runs from (the folder with ``uv.lock`` and ``libs/``)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "uv.lock").is_file() and (parent / "libs").is_dir():
            return parent
    return None


def default_data_dir() -> Path:
    """``$DEALERLINE_DATA_DIR``, else ``var/`` in the checkout (``./var`` outside one)."""
    named = os.environ.get(DATA_DIR_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    return (_checkout() or Path.cwd()) / "var"


@dataclass(frozen=True)
class Secret:
    value: str
    source: str  # the environment variable it came from, or the secrets file

    def __repr__(self) -> str:  # never in a traceback or a log
        return f"Secret(source={self.source!r})"


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def open(cls, root: Path) -> DataDir:
        """The data folder at ``root``, created (0700) with its ``log`` folder if missing."""
        root = root.expanduser().resolve()
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            (root / "log").mkdir(exist_ok=True)
        except OSError as exc:
            raise SystemExit(f"cannot use the data folder {root}: {exc.strerror}") from exc
        if not os.access(root, os.W_OK):
            raise SystemExit(f"the data folder {root} is not writable")
        return cls(root)

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.root / 'dealerline.db'}"

    @property
    def nats_store(self) -> Path:
        return self.root / "nats"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def secrets_path(self) -> Path:
        return self.root / SECRETS_FILE

    @property
    def state_namespace(self) -> str:
        """A Redis key prefix of this data folder's own (two folders never share state)."""
        return f"dl-run-{hashlib.sha256(str(self.root).encode()).hexdigest()[:8]}:"

    def secret(self, name: str) -> Secret:
        """Secret ``name``: from the environment when configured there, else the one
        stored in ``secrets.env``, else a new random one, stored there first."""
        for var in _CONFIGURED_BY[name]:
            value = os.environ.get(var, "").strip()
            if value:
                return Secret(value, f"${var}")
        stored = self._stored()
        if stored.get(name):
            return Secret(stored[name], str(self.secrets_path))
        value = secrets.token_hex(_GENERATED_BYTES[name])
        self._store({**stored, name: value})
        return Secret(value, f"{self.secrets_path} (new)")

    def _stored(self) -> dict[str, str]:
        path = self.secrets_path
        if not path.exists():
            return {}
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # copied in with a loose mode: tighten it before reading
        return {k: v for k, v in dotenv_values(path).items() if v}

    def _store(self, values: dict[str, str]) -> None:
        """Write ``values`` to ``secrets.env`` (0600 from the start, replaced atomically)."""
        tmp = self.secrets_path.with_name(f".{SECRETS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "# Generated by `make run` on its first start; delete a line to get a new one.\n"
            )
            f.writelines(f"{k}={v}\n" for k, v in sorted(values.items()))
        tmp.replace(self.secrets_path)
