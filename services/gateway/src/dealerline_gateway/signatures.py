"""Checking ``X-Twilio-Signature`` on webhooks and on the media-stream handshake.

The signature may have been computed over the configured public URL (``public_url`` +
path + query) or, when ``trust_forwarded_headers`` is on, over the URL rebuilt from
``X-Forwarded-Proto``/``X-Forwarded-Host``; either is accepted.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import HTTPConnection
from twilio.request_validator import RequestValidator

from .settings import GatewaySettings


class TwilioSignatures:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.validator = RequestValidator(settings.twilio_auth_token.get_secret_value())

    def signed_urls(self, request: HTTPConnection, scheme: str | None = None) -> list[str]:
        """URLs the signature may have been computed over: the configured public one, and,
        when trusted, the one rebuilt from X-Forwarded-Proto/Host. ``scheme`` replaces
        the public URL's (``wss`` for the media stream)."""
        path = request.url.path
        query = f"?{request.url.query}" if request.url.query else ""
        base = self.settings.public_url
        if scheme is not None:
            parts = urlsplit(base)
            base = f"{scheme}://{parts.netloc}{parts.path}"
        urls = [f"{base}{path}{query}"]
        if self.settings.trust_forwarded_headers:
            proto = request.headers.get("x-forwarded-proto")
            host = request.headers.get("x-forwarded-host")
            if proto and host:
                proto = proto.split(",")[0].strip()
                if scheme is not None:
                    proto = "wss" if proto in ("https", "wss") else "ws"
                urls.append(f"{proto}://{host.split(',')[0].strip()}{path}{query}")
        return urls

    def valid(
        self,
        request: HTTPConnection,
        params: FormData | dict[str, str],
        scheme: str | None = None,
    ) -> bool:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            return False
        return any(
            self.validator.validate(url, params, signature)
            for url in self.signed_urls(request, scheme)
        )
