"""How a :class:`~.client.Bus` proves who it is to NATS and protects the connection.

:class:`NatsAuth` holds one identity (a user and password, a ``.creds`` file, or an nkey
seed file) and the TLS files (the CA the server's certificate is checked against, and a
client certificate for mutual TLS). :meth:`NatsAuth.from_settings` reads them from a
service's settings (``<PREFIX>NATS_USER``, ``<PREFIX>NATS_PASSWORD``,
``<PREFIX>NATS_CREDS_FILE``, ``<PREFIX>NATS_NKEY_SEED_FILE``, ``<PREFIX>NATS_TLS_CA_FILE``,
``<PREFIX>NATS_TLS_CERT_FILE``, ``<PREFIX>NATS_TLS_KEY_FILE``); :meth:`NatsAuth.connect_options`
turns them into nats-py's ``connect()`` keywords. What each service's user may publish and
subscribe to is in :mod:`.permissions`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import ServiceSettings, SettingsError

__all__ = ["NatsAuth", "inbox_prefix"]


def inbox_prefix(user: str) -> str:
    """The inbox prefix of ``user``'s connection: its replies and JetStream acks land here
    (its NATS permissions let it read nothing else's)."""
    return f"_INBOX.{user}"


@dataclass(frozen=True)
class NatsAuth:
    user: str | None = None
    password: str | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"NatsAuth(user={self.user!r}, tls={self.tls})"

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> NatsAuth:
        password = settings.nats_password
        return cls(
            user=settings.nats_user,
            password=password.get_secret_value() if password is not None else None,
            creds_file=settings.nats_creds_file,
            nkey_seed_file=settings.nats_nkey_seed_file,
            tls_ca_file=settings.nats_tls_ca_file,
            tls_cert_file=settings.nats_tls_cert_file,
            tls_key_file=settings.nats_tls_key_file,
        )

    @property
    def identified(self) -> bool:
        """Whether the connection logs in (else it is anonymous)."""
        return any(w is not None for w in (self.user, self.creds_file, self.nkey_seed_file))

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file)

    def tls_context(self) -> ssl.SSLContext | None:
        """A client TLS context verifying the server against ``tls_ca_file`` (the system's
        CAs when only a client certificate is given), or None without TLS files."""
        if not self.tls:
            return None
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise SettingsError(f"NATS {name.removeprefix('tls_')} {path!r} is not a file")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls_cert_file and self.tls_key_file:
            ctx.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return ctx

    def connect_options(self) -> dict[str, Any]:
        """Keywords for nats-py's ``Client.connect`` (none for an anonymous plain link)."""
        opts: dict[str, Any] = {}
        if self.user is not None:
            opts["user"] = self.user
            opts["password"] = self.password or ""
        if self.creds_file is not None:
            opts["user_credentials"] = self._existing(self.creds_file, "creds file")
        if self.nkey_seed_file is not None:
            opts["nkeys_seed"] = self._existing(self.nkey_seed_file, "nkey seed file")
        ctx = self.tls_context()
        if ctx is not None:
            opts["tls"] = ctx
        return opts

    @staticmethod
    def _existing(path: str, what: str) -> str:
        if not Path(path).is_file():
            raise SettingsError(f"NATS {what} {path!r} is not a file")
        return path
