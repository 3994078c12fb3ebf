"""Twilio's REST side, the human leg and conferences, for tests of the escalation flow.

:class:`TwilioSim` plays the whole of Twilio around one account: a REST API
(``/2010-04-01/Accounts/{AccountSid}/Calls.json`` create / list, ``Calls/{Sid}.json`` fetch /
update / delete, ``Conferences.json``, ``Conferences/{Sid}.json``, ``.../Participants.json``)
served over real HTTP on a free port, the outbound call legs it creates (rung at phone
numbers where :class:`~dealerline_sim.humans.HumanScript`\\ s answer, or not), the
customer calls a :class:`~dealerline_sim.phone.PhoneSimulator` places, and the conference
rooms ``<Dial><Conference>`` builds. Answers follow twilio-oai (``api.v2010.account.call``;
``dealerline_sim.twilio_schema`` has the JSON Schemas) and Twilio's error bodies
(``{"code": 20404, "message": …, "more_info": …, "status": 404}``).

Typical end-to-end test::

    async with TwilioSim(TOKEN, time_scale=0.02) as tw:       # 45 s of ringing ≈ 0.9 s
        tw.add_route("https://esc.example.com", escalation_local_base)
        tw.add_human("+14155550123", HumanScript.accepts_then_hangs_up(talk_s=30))
        phone = tw.phone(gateway_base, "https://dealer.example.com", pace=8)
        call = await phone.place_call("+14155550100", "+14155550199")
        # ... the service under test calls the REST API, built from
        client = tw.twilio_client()           # real twilio.rest.Client → tw.rest_url
        # (sync client: call it through asyncio.to_thread, the simulator shares the loop;
        #  async: tw.twilio_client(async_http=True) and the *_async methods)
        leg = await tw.wait_for_call_to("+14155550123")
        await tw.wait_for_status(leg.sid, "completed", timeout_s=10)
        assert tw.conferences["support_sess1"].held_together(leg.sid, call.call_sid)
        await call.wait_for_stream(2)        # back to the AI on a new Media Stream
        await tw.drain_callbacks()
        assert [p["CallStatus"] for p in tw.callbacks(leg.sid)] == [
            "initiated", "ringing", "in-progress", "completed"]

Pointing the real client at the simulator: twilio-python has no base-URL option, so either
set ``client.api.base_url = tw.rest_url`` (what :meth:`TwilioSim.twilio_client` does) or
pass ``http_client=tw.http_client()`` / ``tw.async_http_client()``, which rewrite every
``https://*.twilio.com`` URL to the simulator.

REST behaviour: HTTP Basic auth with the account sid and auth token (or an API key from
:meth:`TwilioSim.add_api_key`), else 401 code 20003; an account sid in the path other than
the simulator's, or an unknown call/conference sid → 404 code 20404; create validates
``To``/``From`` (21201/21213 missing, 21211/21212 invalid, 21210 when ``owned_numbers`` is
set and ``From`` is not one), needs ``Url`` or ``Twiml`` (21205), ``Timeout`` 1–600, events
from ``initiated ringing answered completed``; update with ``Url``/``Twiml`` of a call that
is not in progress → 400 code 21220 "Call is not in-progress. Cannot redirect.";
``Status=canceled`` ends a queued/ringing call (ignored once answered), ``Status=completed``
ends any live call. Every request is a ``rest`` timeline event.

Messages (``Messages.json`` create / list, ``Messages/{Sid}.json`` fetch): create validates
``To`` (21604 missing, 21211 invalid), ``From`` (21603 missing, 21212 invalid, 21606 when
``owned_numbers`` is set and ``From`` is not one), ``Body`` (21602 missing, 21617 over 1600
characters) and answers the ``api.v2010.account.message`` resource with status ``queued``
(dates are wall-clock, not the scaled call clock: texts have no part in a call's timing).
Every accepted text is kept in ``tw.messages`` (a :class:`SentMessage` each, in order) and
is a ``message`` timeline event. ``tw.fail_messages()`` makes creates answer 503 (code
20503, nothing recorded) until ``tw.heal_messages()``, or for ``times`` requests.

Everything observable is on ``tw.timeline`` (see ``dealerline_sim.timeline`` for the kinds);
faults on status callbacks are set with ``tw.faults`` (``dealerline_sim.callbacks``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.ops import HttpServer
from dealerline_sim.callbacks import CallbackDispatcher, Faults, WebhookClient
from dealerline_sim.conference import Conference, Conferences
from dealerline_sim.humans import HumanScript
from dealerline_sim.legs import FINAL_STATUSES, CallLeg
from dealerline_sim.phone import Call, PhoneSimulator, new_sid
from dealerline_sim.tasks import TaskSet
from dealerline_sim.timeline import SimClock, SimEvent, Timeline
from dealerline_sim.twiml import SimulatorError, TwimlError, parse_twiml

__all__ = [
    "AsyncSimHttpClient",
    "SentMessage",
    "SimHttpClient",
    "TwilioSim",
    "twilio_error",
]

log = get_logger(__name__)

API = "/2010-04-01"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SID = {
    "AC": re.compile(r"^AC[0-9a-fA-F]{32}$"),
    "CA": re.compile(r"^CA[0-9a-fA-F]{32}$"),
    "CF": re.compile(r"^CF[0-9a-fA-F]{32}$"),
    "SM": re.compile(r"^SM[0-9a-fA-F]{32}$"),
}
_CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
_TWIML_MAX = 4000
_BODY_MAX = 1600
# GSM 03.38's basic set: a text of only these is 160 characters a segment, else UCS-2 (70).
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def _segments(body: str) -> int:
    single, multi = (160, 153) if set(body) <= _GSM7 else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


def _rfc2822(at: datetime | None) -> str | None:
    return format_datetime(at, usegmt=True) if at is not None else None


@dataclass
class SentMessage:
    """One text the REST API accepted (``tw.messages``)."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    params: dict[str, Any] = field(default_factory=dict)  # the create request's form

    def resource(self) -> dict[str, Any]:
        """Twilio's Message resource (``api.v2010.account.message``)."""
        uri = f"{API}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": _rfc2822(self.created_at),
            "date_sent": None,
            "date_updated": _rfc2822(self.created_at),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's REST error body."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


class _Form:
    """A form body with repeated keys (``StatusCallbackEvent`` comes once per value)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str) -> str | None:
        for key, value in self.pairs:
            if key == name:
                return value
        return None

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.pairs:
            if key in out:
                prev = out[key]
                out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                out[key] = value
        return out


class _BadRequest(Exception):
    """Ends a REST request with Twilio's error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        resp = twilio_error(self.status, self.code, self.message)
        if self.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return resp


def _valid_endpoint(value: str) -> bool:
    return bool(_E164.match(value)) or value.startswith(("client:", "sip:"))


def _valid_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _rewrite_twilio_url(url: str, rest_url: str) -> str:
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
        return super().request(method, _rewrite_twilio_url(url, self.rest_url), *args, **kwargs)


class AsyncSimHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # no stubs
    """twilio-python's async (aiohttp) HTTP client, sending ``*.twilio.com`` requests to the
    simulator. Close it with ``await client.close()``."""

    def __init__(self, rest_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rest_url = rest_url

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        return await super().request(
            method, _rewrite_twilio_url(url, self.rest_url), *args, **kwargs
        )


class TwilioSim:
    """Twilio for one account: REST server, call legs, scripted humans, conferences.

    ``time_scale`` is wall seconds per simulated second (0.02: 50× faster); ``routes`` maps
    public URL prefixes (what the application puts in ``Url``, TwiML and callbacks) to
    where they are served locally; ``owned_numbers``, when given, are the only ``From``
    numbers create accepts; ``default_human`` answers numbers with no script of their own
    (without one such calls fail); ``inbound_status_callback`` receives the ``completed``
    callback of customer calls, as a phone number's status callback would.
    """

    def __init__(
        self,
        auth_token: str | None = None,
        *,
        account_sid: str | None = None,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        routes: Mapping[str, str] | None = None,
        owned_numbers: Iterable[str] = (),
        default_human: HumanScript | None = None,
        dial_delay_s: float = 0.3,
        inbound_status_callback: str | None = None,
        forwarded_headers: bool = False,
        http_timeout_s: float = 15.0,
    ) -> None:
        self.auth_token = auth_token or secrets.token_hex(16)
        self.account_sid = account_sid or new_sid("AC")
        if not _SID["AC"].match(self.account_sid):
            raise ValueError("account_sid must be AC followed by 32 hex digits")
        if dial_delay_s < 0:
            raise ValueError("dial_delay_s must not be negative")
        self.host = host
        self.port = port
        self.dial_delay_s = dial_delay_s
        self.default_human = default_human
        self.owned_numbers = set(owned_numbers)
        self.inbound_status_callback = inbound_status_callback
        self.clock = SimClock(time_scale)
        self.timeline = Timeline(self.clock)
        self.tasks = TaskSet("twilio-sim")
        self.webhooks = WebhookClient(
            self.auth_token, timeout_s=http_timeout_s, forwarded_headers=forwarded_headers
        )
        for prefix, local in (routes or {}).items():
            self.webhooks.add_route(prefix, local)
        self.faults = Faults()
        self.dispatcher = CallbackDispatcher(
            self.webhooks, self.faults, self.timeline, self.clock, self.tasks
        )
        self.conferences = Conferences(self.account_sid, self.clock, self.timeline, self.dispatcher)
        self.calls: dict[str, CallLeg] = {}
        self.humans: dict[str, HumanScript] = {}
        self.api_keys: dict[str, str] = {}
        self.messages: list[SentMessage] = []
        self._messages_down: tuple[int, int | None] | None = None  # (status, times left)
        self._server: HttpServer | None = None
        self._aio_clients: list[AsyncTwilioHttpClient] = []

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> TwilioSim:
        if self._server is not None:
            return self
        self._server = HttpServer(self._app(), self.host, self.port)
        await self._server.start()
        log.info("twilio_sim_started", rest_url=self.rest_url, account_sid=self.account_sid)
        return self

    async def aclose(self) -> None:
        """Stop every leg (no more callbacks), close clients made here, stop the server."""
        for leg in list(self.calls.values()):
            await leg.shutdown()
        await self.tasks.close()
        for client in self._aio_clients:
            await client.close()
        self._aio_clients.clear()
        await self.webhooks.aclose()
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> TwilioSim:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:<port>``: the simulator's ``https://api.twilio.com``."""
        if self._server is None:
            raise RuntimeError("TwilioSim is not started (use `async with` or `await start()`)")
        return f"http://{self.host}:{self._server.port}"

    # -- configuration --------------------------------------------------------------------

    def add_route(self, public_prefix: str, local_base: str) -> None:
        """Serve the application's public URLs from a local server (signatures still cover
        the public URL)."""
        self.webhooks.add_route(public_prefix, local_base)

    def add_human(self, phone: str, script: HumanScript) -> None:
        """Who answers (or not) when a REST call dials ``phone`` (E.164)."""
        if not _E164.match(phone):
            raise ValueError(f"not an E.164 number: {phone!r}")
        self.humans[phone] = script

    def add_api_key(self) -> tuple[str, str]:
        """A new API key (``SK…`` sid, secret) the REST API accepts for Basic auth."""
        sid, secret = new_sid("SK"), secrets.token_hex(16)
        self.api_keys[sid] = secret
        return sid, secret

    def fail_messages(self, *, status: int = 503, times: int | None = None) -> None:
        """Make ``POST Messages.json`` answer ``status`` (Twilio's error body, code 20000 +
        status, nothing recorded) for the next ``times`` requests, or until
        :meth:`heal_messages` when ``times`` is None: the Messages API is down."""
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (4xx or 5xx)")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None until healed)")
        self._messages_down = (status, times)

    def heal_messages(self) -> None:
        """The Messages API accepts texts again."""
        self._messages_down = None

    def messages_to(self, number: str) -> list[SentMessage]:
        return [m for m in self.messages if m.to == number]

    async def wait_for_messages(
        self, count: int, *, to: str | None = None, timeout_s: float = 10.0
    ) -> list[SentMessage]:
        """Wait until at least ``count`` texts (to ``to``, if given) were accepted."""

        def chosen() -> list[SentMessage]:
            return self.messages_to(to) if to is not None else list(self.messages)

        await self.wait_for(
            lambda: len(chosen()) >= count,
            timeout_s,
            f"{count} text(s){' to ' + mask_phone(to) if to else ''}",
        )
        return chosen()

    def phone(self, http_base: str, public_url: str, **kwargs: Any) -> PhoneSimulator:
        """A :class:`PhoneSimulator` on this account whose calls this simulator hosts."""
        phone = PhoneSimulator(
            http_base, public_url, self.auth_token, account_sid=self.account_sid, **kwargs
        )
        self.attach(phone)
        return phone

    def attach(self, phone: PhoneSimulator) -> None:
        """Host the calls ``phone`` places from now on (same account and token needed)."""
        if phone.account_sid != self.account_sid or phone.auth_token != self.auth_token:
            raise ValueError("the PhoneSimulator must use this TwilioSim's account and token")
        self.webhooks.add_route(phone.public_url, phone.http_base)
        if phone.forwarded_headers:  # the gateway reads its public URL from those headers
            self.webhooks.forwarded_headers = True
        phone.add_call_observer(self._host_customer_call)

    def _host_customer_call(self, call: Call) -> None:
        leg = CallLeg(
            self,
            sid=call.call_sid,
            direction="inbound",
            from_number=call.from_number,
            to_number=call.to_number,
            status="ringing",
            url=call.webhook_url or None,
            status_callback=self.inbound_status_callback,
            customer=call,
        )
        self.calls[call.call_sid] = leg
        call.host = leg
        self.timeline.record("status", call.call_sid, status="ringing", previous=None)
        self.timeline.record(
            "webhook",
            call.call_sid,
            url=call.webhook_url,
            method="POST",
            params=dict(call.webhook_params),
            http_status=200,
            body=call.instruction.twiml[:4000],
            purpose="incoming",
            error=None,
        )

    # -- real twilio clients --------------------------------------------------------------

    def twilio_client(self, *, async_http: bool = False) -> Client:
        """A real ``twilio.rest.Client`` for this account, ``api.base_url`` set to the
        simulator. Sync by default (call it through ``asyncio.to_thread``: the simulator
        runs on the caller's loop); ``async_http=True`` uses ``AsyncTwilioHttpClient`` for
        the ``*_async`` methods, closed by :meth:`aclose`."""
        http_client: AsyncTwilioHttpClient | None = None
        if async_http:
            http_client = AsyncTwilioHttpClient()
            self._aio_clients.append(http_client)
        client = Client(self.account_sid, self.auth_token, http_client=http_client)
        client.api.base_url = self.rest_url
        return client

    def http_client(self) -> SimHttpClient:
        """For ``Client(..., http_client=tw.http_client())``: rewrites ``*.twilio.com``."""
        return SimHttpClient(self.rest_url)

    def async_http_client(self) -> AsyncSimHttpClient:
        """As :meth:`http_client`, asynchronous; closed by :meth:`aclose`."""
        client = AsyncSimHttpClient(self.rest_url)
        self._aio_clients.append(client)
        return client

    # -- inspection and waiting -----------------------------------------------------------

    def call(self, sid: str) -> CallLeg:
        return self.calls[sid]

    def calls_to(self, number: str) -> list[CallLeg]:
        return [leg for leg in self.calls.values() if leg.to_number == number]

    def events(
        self, kind: str | None = None, call_sid: str | None = None, **match: Any
    ) -> list[SimEvent]:
        return self.timeline.select(kind, call_sid, **match)

    @property
    def errors(self) -> list[SimEvent]:
        """What Twilio's debugger would show (application errors, unsupported TwiML...)."""
        return self.timeline.select("error")

    def error(self, call_sid: str | None, code: int, message: str) -> None:
        self.timeline.record("error", call_sid, code=code, message=message)
        log.warning("twilio_sim_error", call_sid=call_sid, code=code, message=message)

    def callbacks(self, call_sid: str | None = None, kind: str = "call") -> list[dict[str, str]]:
        """Params of every status callback delivered (duplicates included), in arrival
        order; ``kind="conference"`` for conference callbacks."""
        return [
            dict(e.data["params"])
            for e in self.timeline.select("callback", call_sid, callback_kind=kind)
        ]

    def said_to(self, call_sid: str) -> list[str]:
        """Every ``<Say>`` the leg heard."""
        return [str(e.data["text"]) for e in self.timeline.select("say", call_sid)]

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
    ) -> None:
        await self.timeline.wait_for(predicate, timeout_s, what)

    async def wait_for_event(
        self, kind: str, call_sid: str | None = None, *, timeout_s: float = 10.0, **match: Any
    ) -> SimEvent:
        return await self.timeline.wait_for_event(kind, call_sid, timeout_s=timeout_s, **match)

    async def wait_for_status(self, call_sid: str, *statuses: str, timeout_s: float = 10.0) -> str:
        """Wait until the leg has been in one of ``statuses`` (any final one if none given);
        returns the status reached."""
        wanted = set(statuses) or set(FINAL_STATUSES)
        await self.wait_for(
            lambda: call_sid in self.calls and bool(wanted & set(self.calls[call_sid].statuses)),
            timeout_s,
            f"call {call_sid} status in {sorted(wanted)}",
        )
        return next(s for s in self.calls[call_sid].statuses if s in wanted)

    async def wait_for_call_to(self, number: str, timeout_s: float = 10.0) -> CallLeg:
        """The first REST-created leg to ``number``."""
        await self.wait_for(
            lambda: bool(self.calls_to(number)), timeout_s, f"a call to {mask_phone(number)}"
        )
        return self.calls_to(number)[0]

    async def drain_callbacks(self, timeout_s: float = 10.0) -> None:
        """Wait until every status callback submitted so far has been delivered."""
        await self.dispatcher.drain(timeout_s)

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every REST-created leg has ended and all callbacks are delivered."""
        await self.wait_for(
            lambda: all(leg.is_final for leg in self.calls.values() if leg.customer is None),
            timeout_s,
            "every outbound leg ended",
        )
        await self.drain_callbacks(timeout_s)

    # -- the REST API -----------------------------------------------------------------------

    def _app(self) -> Starlette:
        acct = API + "/Accounts/{account}"
        routes = [
            Route(acct + "/Calls.json", self._calls_endpoint, methods=["GET", "POST"]),
            Route(
                acct + "/Calls/{sid}.json", self._call_endpoint, methods=["GET", "POST", "DELETE"]
            ),
            Route(acct + "/Conferences.json", self._conferences_endpoint, methods=["GET"]),
            Route(
                acct + "/Conferences/{sid}.json",
                self._conference_endpoint,
                methods=["GET", "POST"],
            ),
            Route(
                acct + "/Conferences/{sid}/Participants.json",
                self._participants_endpoint,
                methods=["GET"],
            ),
            Route(acct + "/Messages.json", self._messages_endpoint, methods=["GET", "POST"]),
            Route(acct + "/Messages/{sid}.json", self._message_endpoint, methods=["GET"]),
        ]

        async def not_found(request: Request, exc: Exception) -> Response:
            return twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )

        async def not_allowed(request: Request, exc: Exception) -> Response:
            return twilio_error(405, 20004, "Method not allowed")

        return Starlette(
            routes=routes,
            exception_handlers={404: not_found, 405: not_allowed},
        )

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        user = password = ""
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        ok = (user == self.account_sid and secrets.compare_digest(password, self.auth_token)) or (
            user in self.api_keys and secrets.compare_digest(password, self.api_keys[user])
        )
        if not ok:
            raise _BadRequest(401, 20003, "Authenticate")
        if request.path_params.get("account") != self.account_sid:
            raise self._not_found(request)

    async def _form(self, request: Request) -> _Form:
        body = (await request.body()).decode("utf-8", errors="replace")
        return _Form(parse_qsl(body, keep_blank_values=True))

    async def _handle(
        self,
        request: Request,
        handler: Callable[[Request, _Form], Awaitable[tuple[int, Any]]],
    ) -> Response:
        form = await self._form(request) if request.method == "POST" else _Form([])
        code: int | None = None
        body: Any = None
        try:
            self._authorize(request)
            status, body = await handler(request, form)
            response: Response = (
                Response(status_code=204) if body is None else JSONResponse(body, status)
            )
        except _BadRequest as exc:
            response = exc.response()
            code = exc.code
        sid = request.path_params.get("sid")
        call_sid = sid if isinstance(sid, str) and sid.startswith("CA") else None
        if call_sid is None and response.status_code == 201 and isinstance(body, dict):
            created = body.get("sid")
            call_sid = created if isinstance(created, str) and created.startswith("CA") else None
        params = form.as_dict()
        self.timeline.record(
            "rest",
            call_sid,
            method=request.method,
            path=request.url.path,
            params=params,
            http_status=response.status_code,
            code=code,
        )
        log.info(
            "twilio_rest",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            code=code,
            to=mask_phone(str(params.get("To", ""))),
        )
        return response

    def _not_found(self, request: Request) -> _BadRequest:
        return _BadRequest(404, 20404, f"The requested resource {request.url.path} was not found")

    # Calls.json

    async def _calls_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._handle(request, self._create_call)
        return await self._handle(request, self._list_calls)

    async def _create_call(self, request: Request, form: _Form) -> tuple[int, Any]:
        to, from_ = form.get("To"), form.get("From")
        if not to:
            raise _BadRequest(400, 21201, "No 'To' number is specified")
        if not from_:
            raise _BadRequest(400, 21213, "No 'From' number is specified")
        if not _valid_endpoint(to):
            raise _BadRequest(400, 21211, f"Invalid 'To' Phone Number: {mask_phone(to)}")
        if not _valid_endpoint(from_):
            raise _BadRequest(400, 21212, f"Invalid 'From' Phone Number: {mask_phone(from_)}")
        if self.owned_numbers and from_ not in self.owned_numbers:
            raise _BadRequest(
                400,
                21210,
                f"The source phone number provided, {mask_phone(from_)}, is not yet verified "
                "for your account. You may only make calls from phone numbers that you've "
                "verified or purchased from Twilio.",
            )
        if form.get("ApplicationSid"):
            raise _BadRequest(400, 21218, "ApplicationSid is not supported by the simulator")
        url, twiml = form.get("Url"), form.get("Twiml")
        if not url and not twiml:
            raise _BadRequest(400, 21205, "Url parameter is required.")
        if url and not _valid_url(url):
            raise _BadRequest(400, 21205, f"Url is not a valid URL: {url}")
        if url:
            twiml = None  # Twilio ignores Twiml when both are given
        elif twiml is not None:
            self._check_twiml(twiml)
        method = self._method(form.get("Method"), "Method")
        callback = form.get("StatusCallback")
        if callback is not None and not _valid_url(callback):
            raise _BadRequest(400, 21609, f"Invalid StatusCallback url: {callback}")
        callback_method = self._method(form.get("StatusCallbackMethod"), "StatusCallbackMethod")
        events: set[str] = set()
        for value in form.getlist("StatusCallbackEvent"):
            events.update(value.replace(",", " ").split())
        unknown = events - _CALL_EVENTS
        if unknown:
            raise _BadRequest(
                400,
                20001,
                f"StatusCallbackEvent must be initiated, ringing, answered or completed, not {sorted(unknown)}",
            )
        timeout_raw = form.get("Timeout")
        timeout = 60
        if timeout_raw:
            try:
                timeout = int(timeout_raw)
            except ValueError as exc:
                raise _BadRequest(400, 20001, f"Timeout must be an integer: {timeout_raw}") from exc
            if not 1 <= timeout <= 600:
                raise _BadRequest(400, 20001, "Timeout must be between 1 and 600 seconds")
        amd = form.get("MachineDetection")
        if amd is not None and amd not in ("Enable", "DetectMessageEnd"):
            raise _BadRequest(400, 20001, "MachineDetection must be Enable or DetectMessageEnd")
        leg = CallLeg(
            self,
            sid=new_sid("CA"),
            direction="outbound-api",
            from_number=from_,
            to_number=to,
            status="queued",
            url=url,
            method=method,
            twiml=twiml,
            status_callback=callback,
            status_callback_method=callback_method,
            status_callback_events=frozenset(events),
            timeout_s=float(timeout),
            machine_detection=amd,
            human=self.humans.get(to, self.default_human),
        )
        self.calls[leg.sid] = leg
        self.timeline.record("status", leg.sid, status="queued", previous=None)
        leg.start_outbound()
        return 201, leg.resource()

    async def _list_calls(self, request: Request, form: _Form) -> tuple[int, Any]:
        q = request.query_params
        legs = list(self.calls.values())
        for name, attr in (("To", "to_number"), ("From", "from_number")):
            if q.get(name):
                legs = [leg for leg in legs if getattr(leg, attr) == q[name]]
        if q.get("Status"):
            legs = [leg for leg in legs if leg.rest_status == q["Status"]]
        if q.get("ParentCallSid"):
            legs = [leg for leg in legs if leg.parent_call_sid == q["ParentCallSid"]]
        legs.sort(key=lambda leg: leg.created_sim_s, reverse=True)
        return 200, self._page(request, "calls", [leg.resource() for leg in legs])

    def _page(self, request: Request, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        q = request.query_params
        try:
            size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError as exc:
            raise _BadRequest(400, 20001, "Page and PageSize must be integers") from exc
        start = page * size
        chunk = items[start : start + size]
        path = request.url.path

        def uri(p: int) -> str:
            return f"{path}?PageSize={size}&Page={p}"

        return {
            key: chunk,
            "end": start + max(0, len(chunk) - 1),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if start + size < len(items) else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": uri(page),
        }

    # Calls/{Sid}.json

    async def _call_endpoint(self, request: Request) -> Response:
        handler = {
            "GET": self._fetch_call,
            "POST": self._update_call,
            "DELETE": self._delete_call,
        }[request.method]
        return await self._handle(request, handler)

    def _leg(self, request: Request) -> CallLeg:
        sid = str(request.path_params["sid"])
        leg = self.calls.get(sid)
        if leg is None:
            raise self._not_found(request)
        return leg

    async def _fetch_call(self, request: Request, form: _Form) -> tuple[int, Any]:
        return 200, self._leg(request).resource()

    async def _update_call(self, request: Request, form: _Form) -> tuple[int, Any]:
        leg = self._leg(request)
        status = form.get("Status")
        url, twiml = form.get("Url"), form.get("Twiml")
        callback = form.get("StatusCallback")
        if callback is not None:
            if not _valid_url(callback):
                raise _BadRequest(400, 21609, f"Invalid StatusCallback url: {callback}")
            leg.status_callback = callback
            leg.status_callback_method = self._method(
                form.get("StatusCallbackMethod"), "StatusCallbackMethod"
            )
            if not leg.status_callback_events:
                leg.status_callback_events = frozenset({"completed"})
        if status is not None:
            if status not in ("completed", "canceled"):
                raise _BadRequest(400, 20001, f"Status must be completed or canceled, not {status}")
            await leg.end(status)
            return 200, leg.resource()
        if url or twiml:
            if url and not _valid_url(url):
                raise _BadRequest(400, 21205, f"Url is not a valid URL: {url}")
            if url:
                twiml = None
            elif twiml is not None:
                self._check_twiml(twiml)
            method = self._method(form.get("Method"), "Method")
            try:
                await leg.redirect(url=url, method=method, twiml=twiml)
            except SimulatorError as exc:
                raise _BadRequest(400, 21220, "Call is not in-progress. Cannot redirect.") from exc
        return 200, leg.resource()

    async def _delete_call(self, request: Request, form: _Form) -> tuple[int, Any]:
        leg = self._leg(request)
        if not leg.is_final:
            raise _BadRequest(400, 20009, "Cannot delete a call that is not completed")
        del self.calls[leg.sid]
        return 204, None

    # Conferences

    async def _conferences_endpoint(self, request: Request) -> Response:
        return await self._handle(request, self._list_conferences)

    async def _list_conferences(self, request: Request, form: _Form) -> tuple[int, Any]:
        q = request.query_params
        confs = self.conferences.all()
        if q.get("FriendlyName"):
            confs = [c for c in confs if c.friendly_name == q["FriendlyName"]]
        if q.get("Status"):
            confs = [c for c in confs if c.status == q["Status"]]
        confs.sort(key=lambda c: c.created_sim_s, reverse=True)
        return 200, self._page(request, "conferences", [c.resource(self.clock) for c in confs])

    def _conference(self, request: Request) -> Conference:
        conf = self.conferences.by_sid.get(str(request.path_params["sid"]))
        if conf is None:
            raise self._not_found(request)
        return conf

    async def _conference_endpoint(self, request: Request) -> Response:
        return await self._handle(
            request, self._update_conference if request.method == "POST" else self._fetch_conf
        )

    async def _fetch_conf(self, request: Request, form: _Form) -> tuple[int, Any]:
        return 200, self._conference(request).resource(self.clock)

    async def _update_conference(self, request: Request, form: _Form) -> tuple[int, Any]:
        conf = self._conference(request)
        status = form.get("Status")
        if status is not None:
            if status != "completed":
                raise _BadRequest(400, 20001, f"Status must be completed, not {status}")
            self.conferences.end(conf, "conference-ended-via-api")
        return 200, conf.resource(self.clock)

    async def _participants_endpoint(self, request: Request) -> Response:
        return await self._handle(request, self._list_participants)

    async def _list_participants(self, request: Request, form: _Form) -> tuple[int, Any]:
        conf = self._conference(request)
        items = [conf.participant_resource(p, self.clock) for p in conf.participants.values()]
        return 200, self._page(request, "participants", items)

    # Messages

    async def _messages_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._handle(request, self._create_message)
        return await self._handle(request, self._list_messages)

    async def _create_message(self, request: Request, form: _Form) -> tuple[int, Any]:
        if self._messages_down is not None:
            status, times = self._messages_down
            if times is not None:
                self._messages_down = (status, times - 1) if times > 1 else None
            raise _BadRequest(status, 20000 + status, "Service unavailable (simulated outage)")
        to, from_, body = form.get("To"), form.get("From"), form.get("Body")
        if not to:
            raise _BadRequest(400, 21604, "A 'To' phone number is required.")
        if not from_:
            if form.get("MessagingServiceSid"):
                raise _BadRequest(
                    400, 21704, "MessagingServiceSid is not supported by the simulator"
                )
            raise _BadRequest(400, 21603, "A 'From' phone number is required.")
        if not _E164.match(to):
            raise _BadRequest(400, 21211, f"Invalid 'To' Phone Number: {mask_phone(to)}")
        if not _E164.match(from_):
            raise _BadRequest(400, 21212, f"Invalid 'From' Phone Number: {mask_phone(from_)}")
        if self.owned_numbers and from_ not in self.owned_numbers:
            raise _BadRequest(
                400,
                21606,
                f"The From phone number {mask_phone(from_)} is not a valid, SMS-capable inbound "
                "phone number or short code for your account.",
            )
        if form.get("MediaUrl") or form.get("ContentSid"):
            raise _BadRequest(
                400, 21620, "MediaUrl and ContentSid are not supported by the simulator"
            )
        if not body:
            raise _BadRequest(400, 21602, "Message body is required.")
        if len(body) > _BODY_MAX:
            raise _BadRequest(
                400,
                21617,
                f"The concatenated message body exceeds the {_BODY_MAX} character limit.",
            )
        message = SentMessage(
            sid=new_sid("SM"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            body=body,
            params=form.as_dict(),
        )
        self.messages.append(message)
        self.timeline.record("message", None, sid=message.sid, to=to, from_=from_, body=body)
        return 201, message.resource()

    async def _list_messages(self, request: Request, form: _Form) -> tuple[int, Any]:
        q = request.query_params
        messages = list(self.messages)
        for name, attr in (("To", "to"), ("From", "from_")):
            if q.get(name):
                messages = [m for m in messages if getattr(m, attr) == q[name]]
        messages.reverse()  # newest first, as Twilio lists them
        return 200, self._page(request, "messages", [m.resource() for m in messages])

    async def _message_endpoint(self, request: Request) -> Response:
        return await self._handle(request, self._fetch_message)

    async def _fetch_message(self, request: Request, form: _Form) -> tuple[int, Any]:
        sid = str(request.path_params["sid"])
        for message in self.messages:
            if message.sid == sid:
                return 200, message.resource()
        raise self._not_found(request)

    # helpers

    @staticmethod
    def _method(value: str | None, name: str) -> str:
        if value is None or value == "":
            return "POST"
        if value.upper() not in ("GET", "POST"):
            raise _BadRequest(400, 20001, f"{name} must be GET or POST, not {value}")
        return value.upper()

    @staticmethod
    def _check_twiml(twiml: str) -> None:
        if len(twiml) > _TWIML_MAX:
            raise _BadRequest(400, 20001, f"Twiml is longer than {_TWIML_MAX} characters")
        try:
            parse_twiml(twiml)
        except TwimlError as exc:
            raise _BadRequest(400, 12100, f"Twiml is not valid TwiML: {exc}") from exc
