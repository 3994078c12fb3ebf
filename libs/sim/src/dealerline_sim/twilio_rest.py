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

The resources live in ``dealerline_sim.rest_calls``, ``rest_conferences`` and
``rest_messages``; what they share (auth, error bodies, paging, parameter checks) in
``dealerline_sim.rest_request``; the real client's HTTP clients in ``dealerline_sim.twilio_http``.

Everything observable is on ``tw.timeline`` (see ``dealerline_sim.timeline`` for the kinds);
faults on status callbacks are set with ``tw.faults`` (``dealerline_sim.callbacks``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.ops import HttpServer
from dealerline_sim import rest_calls, rest_conferences
from dealerline_sim.callbacks import CallbackDispatcher, Faults, WebhookClient
from dealerline_sim.conference import Conferences
from dealerline_sim.humans import HumanScript
from dealerline_sim.legs import FINAL_STATUSES, CallLeg
from dealerline_sim.phone import Call, PhoneSimulator, new_sid
from dealerline_sim.rest_messages import Messages, SentMessage
from dealerline_sim.rest_request import (
    ACCOUNT_SID,
    API,
    E164,
    Handler,
    authorize,
    serve,
    twilio_error,
)
from dealerline_sim.tasks import TaskSet
from dealerline_sim.timeline import SimClock, SimEvent, Timeline
from dealerline_sim.twilio_http import AsyncSimHttpClient, SimHttpClient

__all__ = [
    "AsyncSimHttpClient",
    "SentMessage",
    "SimHttpClient",
    "TwilioSim",
    "twilio_error",
]

log = get_logger(__name__)


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
        if not ACCOUNT_SID.match(self.account_sid):
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
        self._messages = Messages(self.account_sid, self.owned_numbers, self.timeline)
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
        if not E164.match(phone):
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
        self._messages.fail(status=status, times=times)

    def heal_messages(self) -> None:
        """The Messages API accepts texts again."""
        self._messages.heal()

    @property
    def messages(self) -> list[SentMessage]:
        """Every text the REST API accepted, in order."""
        return self._messages.sent

    def messages_to(self, number: str) -> list[SentMessage]:
        return self._messages.sent_to(number)

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
            *rest_calls.routes(acct, self, self._serve),
            *rest_conferences.routes(acct, self.conferences, self.clock, self._serve),
            *self._messages.routes(acct, self._serve),
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

    async def _serve(self, request: Request, handler: Handler) -> Response:
        return await serve(request, handler, self._authorize, self.timeline)

    def _authorize(self, request: Request) -> None:
        authorize(request, self.account_sid, self.auth_token, self.api_keys)
