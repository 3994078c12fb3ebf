"""Checking ``X-Twilio-Signature``, one way for every service that checks one (the
gateway's webhooks and media-stream handshake, the escalation service's webhooks).

:func:`check_signature` checks a request's signature against the URLs it may have been
signed over (:func:`dealerline_common.twilio_urls.signed_urls`) with the key and hash its
``X-Twilio-Webhooks-Signature-Settings`` may choose among those configured
(:func:`dealerline_common.twilio_urls.signing_scheme`); the hash itself is twilio-python's
``RequestValidator``. :class:`TwilioSigningSettings` holds the settings that configure it,
under each service's own environment prefix (``GATEWAY_TWILIO_WEBHOOK_KEY``,
``ESCALATION_TWILIO_WEBHOOK_KEY``, ...).

Needs the ``twilio`` extra (``dealerline-common[twilio]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, SecretStr, model_validator
from twilio.request_validator import RequestValidator

from .settings import ServiceSettings
from .twilio_urls import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    SignatureAlgorithms,
    SigningKeys,
    signed_urls,
    signing_scheme,
)


def check_signature(
    keys: SigningKeys, headers: Mapping[str, str], urls: Iterable[str], params: Mapping[str, Any]
) -> bool:
    """Whether the request's ``X-Twilio-Signature`` (in ``headers``, lower-case names as
    Starlette gives them) is valid over one of ``urls`` and its form ``params`` (``{}`` for
    the media-stream handshake): False when it is missing or the request asks for a
    key or hash not configured in ``keys``."""
    signature = headers.get(SIGNATURE_HEADER)
    if not signature:
        return False
    scheme = signing_scheme(keys, headers.get(SIGNATURE_SETTINGS_HEADER))
    if scheme is None:
        return False
    validator = RequestValidator(scheme.secret)
    return any(
        validator.validate(url, params, signature, algorithm=scheme.algorithm) for url in urls
    )


class TwilioSigningSettings(ServiceSettings):
    """The settings of a service that checks Twilio's signatures; a service's settings
    class inherits them and sets its ``env_prefix``. ``public_url`` and
    ``twilio_auth_token`` are redeclared by each service (required or not, and what else
    it uses them for)."""

    public_url: str | None = Field(
        default=None, description="public base URL Twilio calls (signatures are checked on it)"
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio auth token (HMAC-SHA1 signatures)"
    )
    trust_forwarded_headers: bool = Field(
        default=False,
        description="Also accept signatures over the URL rebuilt from "
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

    @model_validator(mode="after")
    def _check_twilio_signing(self) -> TwilioSigningSettings:
        p = str(self.model_config.get("env_prefix", "")).upper()
        if self.twilio_signature_algorithm != "sha1" and self.twilio_webhook_key is None:
            raise ValueError(
                f"{p}TWILIO_SIGNATURE_ALGORITHM=sha256 or both needs "
                f"{p}TWILIO_WEBHOOK_KEY (the Webhooks Rule's SharedKey secret)"
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

    def signed_urls(
        self, path: str, query: str, headers: Mapping[str, str], *, websocket: bool = False
    ) -> list[str]:
        """The URLs a request to ``path`` with ``query`` may have been signed over."""
        return signed_urls(
            self.public_url,
            path,
            query,
            headers,
            trust_forwarded=self.trust_forwarded_headers,
            websocket=websocket,
        )
