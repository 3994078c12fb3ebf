"""The Twilio REST side of the human leg: place, fetch, redirect and end calls.

:class:`CallControl` is the interface the orchestrator uses; :class:`TwilioCalls`
implements it with the official ``twilio`` client (async HTTP client, so the event loop is
never blocked). Its errors are sorted into what the orchestrator must tell apart:

- :class:`CallNotLive` - Twilio refused because the call is not in progress (redirecting a
  call that has ended answers 400) or does not exist (404): a fact about the call;
- :class:`TwilioUnavailable` - the API could not be reached, timed out or answered 5xx/429
  after bounded retries: nothing is known, try again later;
- :class:`TwilioRejected` - any other 4xx (bad number, bad parameters): retrying is useless.

twilio-python has no base-URL option; ``api_base_url`` sets ``client.api.base_url`` (the
phone simulator's URL in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, TypeVar

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dealerline_common.logs import get_logger, mask_phone

log = get_logger(__name__)

T = TypeVar("T")

STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Twilio's call statuses after which the call can never change again.
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class TwilioError(RuntimeError):
    """Base of the errors :class:`CallControl` raises."""


class CallNotLive(TwilioError):
    """The call is not in progress (or unknown), so it cannot be redirected or changed."""


class TwilioRejected(TwilioError):
    """Twilio refused the request for good (a 4xx other than "not in progress")."""

    def __init__(self, message: str, status: int, code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TwilioUnavailable(TwilioError):
    """The API could not be reached or kept failing (5xx, 429, timeouts)."""


class CallControl(Protocol):
    """What the orchestrator asks of Twilio (a fake implements it in unit tests)."""

    async def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str, timeout_s: int
    ) -> str:
        """Place an outbound call; returns its CallSid."""
        ...

    async def fetch_status(self, call_sid: str) -> str:
        """The call's current ``status`` (queued, ringing, in-progress, completed, ...)."""
        ...

    async def redirect(self, call_sid: str, url: str) -> None:
        """Make a live call fetch and run new TwiML from ``url`` (POST)."""
        ...

    async def end_call(self, call_sid: str, status: Literal["canceled", "completed"]) -> None:
        """Cancel a queued/ringing call, or hang up one in progress."""
        ...

    async def close(self) -> None: ...


async def hang_up(calls: CallControl, call_sid: str) -> str | None:
    """End ``call_sid`` whatever stage it is in; returns the status it had (None if it
    could not be fetched). Ringing calls are cancelled, live ones completed, ended ones
    left alone."""
    try:
        status = await calls.fetch_status(call_sid)
    except CallNotLive:
        return None
    if status in FINAL_CALL_STATUSES:
        return status
    target: Literal["canceled", "completed"] = (
        "canceled" if status in ("queued", "initiated", "ringing") else "completed"
    )
    try:
        await calls.end_call(call_sid, target)
    except CallNotLive:
        # It moved on meanwhile (answered while we cancelled, or ended): try the other way.
        if target == "canceled":
            with contextlib.suppress(CallNotLive):
                await calls.end_call(call_sid, "completed")
    return status


class NoTwilio:
    """:class:`CallControl` of a service started without Twilio credentials: every call
    is refused at once (the hunt list fails through and the agent offers a callback)."""

    def __init__(self, missing: list[str]) -> None:
        self.reason = "not configured: set " + ", ".join(missing)

    async def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str, timeout_s: int
    ) -> str:
        raise TwilioRejected(f"create call: Twilio {self.reason}", 0, None)

    async def fetch_status(self, call_sid: str) -> str:
        raise TwilioUnavailable(f"fetch call: Twilio {self.reason}")

    async def redirect(self, call_sid: str, url: str) -> None:
        raise TwilioUnavailable(f"redirect call: Twilio {self.reason}")

    async def end_call(self, call_sid: str, status: Literal["canceled", "completed"]) -> None:
        raise TwilioUnavailable(f"end call: Twilio {self.reason}")

    async def close(self) -> None:
        pass


class TwilioCalls:
    """:class:`CallControl` over the real Twilio REST API (or the simulator's)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_base_url: str | None = None,
        request_timeout_s: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.api_base_url = api_base_url.rstrip("/") if api_base_url else None
        self.request_timeout_s = request_timeout_s
        self.attempts = attempts
        self._client: Client | None = None
        self._http: AsyncTwilioHttpClient | None = None

    @property
    def client(self) -> Client:
        """Built on first use (aiohttp's session must be made inside the event loop)."""
        if self._client is None:
            self._http = AsyncTwilioHttpClient()
            self._client = Client(self.account_sid, self._auth_token, http_client=self._http)
            if self.api_base_url:
                self._client.api.base_url = self.api_base_url
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One REST request with a deadline, retrying only what may succeed next time."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TwilioUnavailable),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await asyncio.wait_for(fn(), self.request_timeout_s)
                except TwilioRestException as exc:
                    if exc.status == 429 or exc.status >= 500:
                        raise TwilioUnavailable(f"{what}: HTTP {exc.status} {exc.msg}") from exc
                    if exc.status == 404 or (exc.status == 400 and exc.code in (21220, None)):
                        raise CallNotLive(f"{what}: HTTP {exc.status} {exc.msg}") from exc
                    raise TwilioRejected(
                        f"{what}: HTTP {exc.status} code={exc.code} {exc.msg}",
                        exc.status,
                        exc.code,
                    ) from exc
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    raise TwilioUnavailable(f"{what}: {exc!r}") from exc
        raise AssertionError("unreachable: tenacity either returned or raised")

    async def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str, timeout_s: int
    ) -> str:
        async def create() -> str:
            call = await self.client.calls.create_async(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_event=STATUS_EVENTS,
                status_callback_method="POST",
                timeout=timeout_s,
            )
            return str(call.sid)

        # Never retried: a create that timed out may have placed the call anyway, and a
        # second one would ring the same person twice. The watchdog reconciles instead.
        try:
            return await asyncio.wait_for(create(), self.request_timeout_s)
        except TwilioRestException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise TwilioUnavailable(f"create call: HTTP {exc.status} {exc.msg}") from exc
            log.warning(
                "outbound call refused", to=mask_phone(to), status=exc.status, code=exc.code
            )
            raise TwilioRejected(
                f"create call: HTTP {exc.status} code={exc.code} {exc.msg}", exc.status, exc.code
            ) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TwilioUnavailable(f"create call: {exc!r}") from exc

    async def fetch_status(self, call_sid: str) -> str:
        async def fetch() -> str:
            call = await self.client.calls(call_sid).fetch_async()
            return str(call.status)

        return await self._call("fetch call", fetch)

    async def redirect(self, call_sid: str, url: str) -> None:
        async def update() -> None:
            await self.client.calls(call_sid).update_async(url=url, method="POST")

        await self._call("redirect call", update)

    async def end_call(self, call_sid: str, status: Literal["canceled", "completed"]) -> None:
        async def update() -> None:
            await self.client.calls(call_sid).update_async(status=status)

        await self._call(f"end call ({status})", update)
