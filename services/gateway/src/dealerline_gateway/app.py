"""The gateway's HTTP surface: Twilio webhooks, the media-stream WebSocket, ops routes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Dial, Stream, VoiceResponse

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import CallStartedEvent, Wire, new_id
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, ops_routes

from .handoff import Handoffs
from .settings import GatewaySettings
from .stream import POLICY_VIOLATION, MediaSession
from .telemetry import GatewayMetrics
from .tokens import StreamGrant, TokenStore

log = get_logger(__name__)

TWIML = "application/xml"


class Gateway:
    """Everything one gateway process shares between requests."""

    def __init__(
        self, settings: GatewaySettings, bus: Bus, metrics: Metrics, health: Health
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.metrics = metrics
        self.gm = GatewayMetrics(metrics)
        self.health = health
        self.tokens = TokenStore(bus, settings.stream_token_ttl_s)
        self.handoffs = Handoffs(bus, settings.handoff_grace_s)
        self.validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
        self.sessions: dict[int, MediaSession] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        health.add_check("bus", lambda: bus.is_connected)
        health.add_check("stream_tokens", lambda: self.tokens.is_ready)

    async def start(self) -> None:
        """Open the token bucket and report ready (call once the bus is connected)."""
        await self.tokens.kv()
        await self.handoffs.kv()
        self.health.ready = True

    def register(self, session: MediaSession) -> None:
        self.sessions[id(session)] = session
        self._idle.clear()

    def unregister(self, session: MediaSession) -> None:
        self.sessions.pop(id(session), None)
        if not self.sessions:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until no media stream is open."""
        await self._idle.wait()

    async def drain(self, timeout_s: float) -> None:
        """Take no new calls; wait for the streams in progress, then close what is left."""
        self.health.draining = True
        log.info("draining", active_streams=len(self.sessions))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        left = list(self.sessions.values())
        if left:
            log.warning("closing streams still open at the drain deadline", count=len(left))
            await asyncio.gather(*(s.close() for s in left), return_exceptions=True)
            await asyncio.gather(
                *(asyncio.wait_for(s.done.wait(), 5.0) for s in left), return_exceptions=True
            )

    # ----------------------------------------------------------------- signatures

    def signed_urls(self, request: Request | WebSocket, scheme: str | None = None) -> list[str]:
        """URLs the signature may have been computed over: the configured public one, and,
        when trusted, the one rebuilt from X-Forwarded-Proto/Host."""
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

    def signature_ok(
        self,
        request: Request | WebSocket,
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


def _twiml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type=TWIML)


def _stream_twiml(settings: GatewaySettings, grant: StreamGrant, token: str) -> VoiceResponse:
    stream = Stream(url=settings.stream_url)
    params: dict[str, str | None] = {
        "session_id": grant.session_id,
        "call_sid": grant.call_sid,
        "token": token,
        "from": grant.from_number,
        "to": grant.to_number,
        "resumed": "true" if grant.resumed else "false",
        "reason": grant.reason,
    }
    for name, value in params.items():
        if value:
            stream.parameter(name=name, value=value)
    connect = Connect()
    connect.append(stream)
    response = VoiceResponse()
    response.append(connect)
    return response


def create_app(
    settings: GatewaySettings,
    bus: Bus,
    metrics: Metrics | None = None,
    health: Health | None = None,
) -> FastAPI:
    """The gateway app; ``app.state.gateway`` is its :class:`Gateway` (await its
    ``start()`` once the bus is connected, and ``drain()`` on shutdown)."""
    metrics = metrics or Metrics()
    health = health or Health()
    gw = Gateway(settings, bus, metrics, health)
    app = FastAPI(title="dealerline gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw
    app.router.routes.extend(ops_routes(health, metrics))

    async def signed_form(request: Request, route: str) -> FormData | Response:
        form = await request.form()
        if not gw.signature_ok(request, form):
            gw.gm.signature_failures.labels(route).inc()
            log.warning(
                "webhook signature rejected",
                route=route,
                has_signature="x-twilio-signature" in request.headers,
            )
            return PlainTextResponse("invalid or missing X-Twilio-Signature", status_code=403)
        return form

    async def publish_event(subject: str, event: Wire, session_id: str) -> None:
        """A best-effort dashboard event from a webhook: Twilio's answer must not wait on
        a slow or failing bus for longer than ``event_publish_timeout_s``."""
        kind = type(event).__name__
        try:
            await asyncio.wait_for(
                bus.publish_durable(subject, event), settings.event_publish_timeout_s
            )
        except TimeoutError:
            gw.gm.event_publish_failures.labels(kind).inc()
            log.warning(
                "event not published in time; answering anyway",
                session_id=session_id,
                event_type=kind,
                timeout_s=settings.event_publish_timeout_s,
            )
        except Exception as exc:
            gw.gm.event_publish_failures.labels(kind).inc()
            log.warning(
                "event not published; answering anyway",
                session_id=session_id,
                event_type=kind,
                error=repr(exc),
            )

    def field(form: FormData, name: str) -> str | None:
        value = form.get(name)
        return value if isinstance(value, str) and value else None

    @app.post("/api/voice/incoming")
    async def incoming(request: Request) -> Response:
        form = await signed_form(request, "incoming")
        if isinstance(form, Response):
            return form
        if health.draining:
            return PlainTextResponse("draining: not taking new calls", status_code=503)
        call_sid = field(form, "CallSid")
        if call_sid is None:
            return PlainTextResponse("CallSid is required", status_code=400)
        session_id = new_id("sess")
        from_number, to_number = field(form, "From"), field(form, "To")
        grant = StreamGrant(session_id, call_sid, from_number, to_number)
        token = await gw.tokens.issue(grant)
        gw.gm.calls.inc()
        log.info(
            "incoming call",
            session_id=session_id,
            call_sid=call_sid,
            caller=mask_phone(from_number),
        )
        await publish_event(
            subjects.events(session_id),
            CallStartedEvent(
                session_id=session_id, call_sid=call_sid, from_masked=mask_phone(from_number)
            ),
            session_id,
        )
        return _twiml(_stream_twiml(settings, grant, token))

    def query_session(request: Request) -> str | None:
        q = request.query_params
        sid = q.get("session_id") or q.get("session") or ""
        try:
            return subjects.check_session_id(sid)
        except ValueError:
            return None

    @app.post("/api/voice/return-to-ai")
    async def return_to_ai(request: Request) -> Response:
        form = await signed_form(request, "return-to-ai")
        if isinstance(form, Response):
            return form
        session_id = query_session(request)
        call_sid = field(form, "CallSid")
        if session_id is None or call_sid is None:
            return PlainTextResponse("session_id and CallSid are required", status_code=400)
        reason = request.query_params.get("reason") or "human_ended"
        grant = StreamGrant(
            session_id,
            call_sid,
            field(form, "From"),
            field(form, "To"),
            resumed=True,
            reason=reason,
        )
        token = await gw.tokens.issue(grant)
        # The call is back: a later stop of the new stream is a hang-up, not a hand-off.
        await gw.handoffs.clear(session_id)
        log.info("returning call to the AI", session_id=session_id, reason=reason)
        return _twiml(_stream_twiml(settings, grant, token))

    @app.post("/api/voice/escalate")
    async def escalate(request: Request) -> Response:
        """The escalation service moves the caller here once a team member accepted: the
        caller joins ``support_<sid>`` and owns it (``endConferenceOnExit``: when they
        leave, the conference ends for the team member too)."""
        form = await signed_form(request, "escalate")
        if isinstance(form, Response):
            return form
        session_id = query_session(request)
        if session_id is None:
            return PlainTextResponse("session_id is required", status_code=400)
        # Before answering: the stop of the caller's media stream that this redirect
        # causes must be read as a hand-off, not a hang-up (handoff.py).
        await gw.handoffs.mark(session_id, field(form, "CallSid"))
        extra: dict[str, Any] = {}
        if settings.conference_wait_url:
            extra["wait_url"] = settings.conference_wait_url
        if settings.escalation_public_url:
            q = urlencode({"session_id": session_id})
            extra["status_callback"] = (
                f"{settings.escalation_public_url}/api/voice/conference-status?{q}"
            )
            extra["status_callback_event"] = "start end join leave"
            extra["status_callback_method"] = "POST"
        dial = Dial()
        dial.conference(
            subjects.conference_name(session_id),
            start_conference_on_enter=True,
            end_conference_on_exit=True,
            **extra,
        )
        response = VoiceResponse()
        response.append(dial)
        log.info("customer leg to conference", session_id=session_id)
        return _twiml(response)

    @app.websocket("/api/voice/media-stream")
    async def media_stream(websocket: WebSocket) -> None:
        if (
            settings.validate_ws_signature
            and "x-twilio-signature" in websocket.headers
            and not gw.signature_ok(websocket, {}, scheme=urlsplit(settings.stream_url).scheme)
        ):
            gw.gm.signature_failures.labels("media-stream").inc()
            log.warning("media-stream handshake signature rejected")
            await websocket.close(code=POLICY_VIOLATION)
            return
        await MediaSession(gw, websocket).run()

    return app
