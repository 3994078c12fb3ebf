"""Checking ``X-Twilio-Signature`` on webhooks and on the media-stream handshake.

What was signed (the public URL, with its path prefix, or the one rebuilt from trusted
``X-Forwarded-*`` headers) and with which key and hash (the auth token and HMAC-SHA1, or
a Webhooks Rule's SharedKey and HMAC-SHA256) follow the one rule of
:mod:`dealerline_common.twilio_urls`, shared with the escalation service; the hash itself
is twilio-python's ``RequestValidator``.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import HTTPConnection
from twilio.request_validator import RequestValidator

from dealerline_common.logs import get_logger
from dealerline_common.twilio_urls import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    signed_urls,
    signing_scheme,
)

from .settings import GatewaySettings

log = get_logger(__name__)


class TwilioSignatures:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.keys = settings.signing_keys
        if settings.allow_unsigned_streams:
            log.warning(
                "GATEWAY_ALLOW_UNSIGNED_STREAMS is on: media streams without "
                "X-Twilio-Signature are served (local development only)"
            )

    def signed_urls(self, request: HTTPConnection, websocket: bool = False) -> list[str]:
        """The URLs the signature may have been computed over."""
        return signed_urls(
            self.settings.public_url,
            request.url.path,
            request.url.query,
            request.headers,
            trust_forwarded=self.settings.trust_forwarded_headers,
            websocket=websocket,
        )

    def valid(
        self,
        request: HTTPConnection,
        params: FormData | dict[str, str],
        websocket: bool = False,
    ) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return False
        scheme = signing_scheme(self.keys, request.headers.get(SIGNATURE_SETTINGS_HEADER))
        if scheme is None:
            return False
        validator = RequestValidator(scheme.secret)
        return any(
            validator.validate(url, params, signature, algorithm=scheme.algorithm)
            for url in self.signed_urls(request, websocket)
        )
