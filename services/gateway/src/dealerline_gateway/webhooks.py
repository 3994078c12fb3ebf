"""Twilio's voice webhooks for the customer leg (all signature-checked):

- ``POST /api/voice/incoming``: a new call gets a session id and a one-time stream token
  and is answered with ``<Connect><Stream>``; before answering, the call's audio is held
  (:mod:`.prefetch`) and ``CallIncoming`` asks the agent for the greeting (a durable job
  on ``call.<sid>.agent_job``, and a copy on the control subject), so that it is ready
  when the stream opens. A CallSid is admitted once (:mod:`.admissions`): the same
  call asking again, or a replay of the signed request, gets the very same answer (same
  session, same one-time token), on any replica;
- ``POST /api/voice/return-to-ai``: the call comes back from the human conference to a
  new stream (``resumed=true``);
- ``POST /api/voice/escalate``: the caller joins the conference ``support_<sid>``.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.datastructures import FormData
from starlette.requests import HTTPConnection
from twilio.twiml.voice_response import Connect, Dial, Stream, VoiceResponse

from dealerline_common import subjects, tracing
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import CallIncoming, CallStartedEvent, Wire, agent_job_id, new_id

from .admissions import Admission
from .gateway import Gateway
from .prefetch import Opened
from .settings import GatewaySettings
from .tokens import StreamGrant

log = get_logger(__name__)

TWIML = "application/xml"
_MAX_CALL_SID = 64  # Twilio's are 34 characters

router = APIRouter()


def gateway_of(conn: HTTPConnection) -> Gateway:
    gateway: Gateway = conn.app.state.gateway
    return gateway


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


def _conference_twiml(settings: GatewaySettings, session_id: str) -> VoiceResponse:
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
    return response


async def _signed_form(gw: Gateway, request: Request, route: str) -> FormData | Response:
    form = await request.form()
    if not gw.signatures.valid(request, form):
        gw.gm.signature_failures.labels(route).inc()
        log.warning(
            "webhook signature rejected",
            route=route,
            has_signature="x-twilio-signature" in request.headers,
        )
        return PlainTextResponse("invalid or missing X-Twilio-Signature", status_code=403)
    return form


async def _publish_event(gw: Gateway, subject: str, event: Wire, session_id: str) -> None:
    """A best-effort dashboard event from a webhook: Twilio's answer must not wait on
    a slow or failing bus for longer than ``event_publish_timeout_s``."""
    kind = type(event).__name__
    timeout_s = gw.settings.event_publish_timeout_s
    try:
        await asyncio.wait_for(gw.bus.publish_durable(subject, event), timeout_s)
    except TimeoutError:
        gw.gm.event_publish_failures.labels(kind).inc()
        log.warning(
            "event not published in time; answering anyway",
            session_id=session_id,
            event_type=kind,
            timeout_s=timeout_s,
        )
    except Exception as exc:
        gw.gm.event_publish_failures.labels(kind).inc()
        log.warning(
            "event not published; answering anyway",
            session_id=session_id,
            event_type=kind,
            error=repr(exc),
        )


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def _query_session(request: Request) -> str | None:
    q = request.query_params
    sid = q.get("session_id") or q.get("session") or ""
    try:
        return subjects.check_session_id(sid)
    except ValueError:
        return None


@router.post("/api/voice/incoming")
async def incoming(request: Request) -> Response:
    gw = gateway_of(request)
    form = await _signed_form(gw, request, "incoming")
    if isinstance(form, Response):
        return form
    call_sid = _field(form, "CallSid")
    if call_sid is None or len(call_sid) > _MAX_CALL_SID:
        return PlainTextResponse(
            f"CallSid is required (at most {_MAX_CALL_SID} characters)", status_code=400
        )
    # A CallSid is admitted once (admissions.py): the same call asking again, here or on
    # another replica, gets the first answer back, never a new session or token (also
    # while this replica drains: the call is not new).
    first = await gw.admissions.get(call_sid)
    if first is not None:
        return _answered_before(gw, call_sid, first)
    if gw.health.draining:
        return PlainTextResponse("draining: not taking new calls", status_code=503)
    grant = StreamGrant(new_id("sess"), call_sid, _field(form, "From"), _field(form, "To"))
    token = await gw.tokens.issue(grant)
    twiml = str(_stream_twiml(gw.settings, grant, token))
    first = await gw.admissions.claim(call_sid, Admission(grant.session_id, twiml))
    if first is not None:  # another replica answered the same call meanwhile
        await gw.tokens.revoke(token)
        return _answered_before(gw, call_sid, first)
    await _new_call(gw, grant)
    return Response(twiml, media_type=TWIML)


def _answered_before(gw: Gateway, call_sid: str, first: Admission) -> Response:
    gw.prefetches.m.prefetches.labels("duplicate").inc()
    log.info(
        "incoming webhook again for an admitted call; the same answer",
        session_id=first.session_id,
        call_sid=call_sid,
    )
    return Response(first.twiml, media_type=TWIML)


async def _new_call(gw: Gateway, grant: StreamGrant) -> None:
    """A call admitted just now: counted, its greeting asked for, the dashboard told."""
    session_id = grant.session_id
    gw.gm.calls.inc()
    log.info(
        "incoming call",
        session_id=session_id,
        call_sid=grant.call_sid,
        caller=mask_phone(grant.from_number),
    )
    await _prefetch_greeting(gw, grant)
    await _publish_event(
        gw,
        subjects.events(session_id),
        CallStartedEvent(
            session_id=session_id,
            call_sid=grant.call_sid,
            from_masked=mask_phone(grant.from_number),
        ),
        session_id,
    )


async def _prefetch_greeting(gw: Gateway, grant: StreamGrant) -> None:
    """Hold the call's audio from now on and ask the agent for the greeting
    (``CallIncoming``), so that it is ready when the stream opens. Best effort: when
    either fails, nothing is held and the greeting is written at the stream's start.

    The call's trace (its root span ``gateway.call``) begins here, so that the greeting
    belongs to it; the stream that claims the prefetch carries the span on to its end."""
    sid = grant.session_id
    span = _call_span(grant)
    try:
        opened = await gw.prefetches.start(sid, grant.call_sid, span)
    except Exception as exc:
        tracing.end_span(span, outcome="prefetch_failed")
        log.warning("greeting prefetch not started", session_id=sid, error=repr(exc))
        return
    if opened is not Opened.STARTED:  # a duplicate (counted) or too many held already
        tracing.end_span(span, outcome=f"prefetch_{opened.value}")
        return
    incoming = CallIncoming(
        session_id=sid,
        call_sid=grant.call_sid,
        from_number=grant.from_number,
        to_number=grant.to_number,
    )
    timeout_s = gw.settings.event_publish_timeout_s
    try:
        with tracing.attached(tracing.context_with(span)):
            # The greeting is a durable job (whichever agent replica is up, now or later,
            # writes it), sent first: the copy on the control subject tells every replica
            # it is on its way, so a stream that missed it waits for it.
            await asyncio.wait_for(
                gw.bus.publish_durable(
                    subjects.agent_job(sid), incoming, msg_id=agent_job_id(incoming)
                ),
                timeout_s,
            )
            await asyncio.wait_for(gw.bus.publish(subjects.control(sid), incoming), timeout_s)
    except Exception as exc:  # TimeoutError included
        # Nothing is held: the stream greets at its start (a greeting the job still
        # writes is dropped there, as on a stream that missed it).
        gw.gm.event_publish_failures.labels("CallIncoming").inc()
        log.warning(
            "call incoming not published; greeting at stream start", session_id=sid, error=repr(exc)
        )
        await gw.prefetches.cancel(sid)


def _call_span(grant: StreamGrant) -> tracing.Span:
    """The root span of a new call's trace (the invalid span when tracing is off)."""
    return tracing.start_span(
        "gateway.call",
        context=tracing.Context(),  # a new trace: the call's root
        kind=tracing.SpanKind.SERVER,
        session_id=grant.session_id,
        call_sid=grant.call_sid,
        caller=mask_phone(grant.from_number),
    )


@router.post("/api/voice/return-to-ai")
async def return_to_ai(request: Request) -> Response:
    gw = gateway_of(request)
    form = await _signed_form(gw, request, "return-to-ai")
    if isinstance(form, Response):
        return form
    session_id = _query_session(request)
    call_sid = _field(form, "CallSid")
    if session_id is None or call_sid is None:
        return PlainTextResponse("session_id and CallSid are required", status_code=400)
    reason = request.query_params.get("reason") or "human_ended"
    grant = StreamGrant(
        session_id,
        call_sid,
        _field(form, "From"),
        _field(form, "To"),
        resumed=True,
        reason=reason,
    )
    token = await gw.tokens.issue(grant)
    # The call is back: a later stop of the new stream is a hang-up, not a hand-off.
    await gw.handoffs.clear(session_id)
    log.info("returning call to the AI", session_id=session_id, reason=reason)
    return _twiml(_stream_twiml(gw.settings, grant, token))


@router.post("/api/voice/escalate")
async def escalate(request: Request) -> Response:
    """The escalation service moves the caller here once a team member accepted: the
    caller joins ``support_<sid>`` and owns it (``endConferenceOnExit``: when they
    leave, the conference ends for the team member too)."""
    gw = gateway_of(request)
    form = await _signed_form(gw, request, "escalate")
    if isinstance(form, Response):
        return form
    session_id = _query_session(request)
    if session_id is None:
        return PlainTextResponse("session_id is required", status_code=400)
    # Before answering: the stop of the caller's media stream that this redirect
    # causes must be read as a hand-off, not a hang-up (handoff.py).
    await gw.handoffs.mark(session_id, _field(form, "CallSid"))
    log.info("customer leg to conference", session_id=session_id)
    return _twiml(_conference_twiml(gw.settings, session_id))
