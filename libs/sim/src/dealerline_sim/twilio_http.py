"""twilio-python's HTTP clients pointed at the simulator: every ``https://*.twilio.com``
URL the real client builds is rewritten to the simulator's REST URL (twilio-python has no
base-URL option)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse


def rewrite_twilio_url(url: str, rest_url: str) -> str:
    """``url`` on ``rest_url`` when it is a ``*.twilio.com`` URL, else unchanged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "twilio.com" or host.endswith(".twilio.com"):
        base = urlsplit(rest_url)
        return urlunsplit(
            (base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, "")
        )
    return url


class SimHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio has no stubs
    """twilio-python's sync HTTP client, sending ``*.twilio.com`` requests to the simulator."""

    def __init__(self, rest_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rest_url = rest_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        return super().request(method, rewrite_twilio_url(url, self.rest_url), *args, **kwargs)


class AsyncSimHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # no stubs
    """twilio-python's async (aiohttp) HTTP client, sending ``*.twilio.com`` requests to the
    simulator. Close it with ``await client.close()``."""

    def __init__(self, rest_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rest_url = rest_url

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        return await super().request(
            method, rewrite_twilio_url(url, self.rest_url), *args, **kwargs
        )
