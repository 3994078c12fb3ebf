"""Checking ``X-Twilio-Signature`` on webhooks and on the media-stream handshake.

What was signed (the public URL, with its path prefix, or the one rebuilt from trusted
``X-Forwarded-*`` headers) and with which key and hash (the auth token and HMAC-SHA1, or
a Webhooks Rule's SharedKey and HMAC-SHA256) follow the one rule of
:mod:`dealerline_common.twilio_urls`, checked by
:func:`dealerline_common.twilio_signing.check_signature`, shared with the escalation
service.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import HTTPConnection

from dealerline_common.logs import get_logger
from dealerline_common.twilio_signing import check_signature

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

    def valid(
        self,
        request: HTTPConnection,
        params: FormData | dict[str, str],
        websocket: bool = False,
    ) -> bool:
        url = request.url
        urls = self.settings.signed_urls(url.path, url.query, request.headers, websocket=websocket)
        return check_signature(self.keys, request.headers, urls, params)
