"""The simulated Twilio REST API's Calls resource: ``Calls.json`` create (validated as
Twilio does) and list, ``Calls/{Sid}.json`` fetch, update (end, redirect, status callback)
and delete. A created call is an outbound :class:`~dealerline_sim.legs.CallLeg` that
rings the number's scripted human."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.routing import Route

from dealerline_common.logs import mask_phone
from dealerline_sim.humans import HumanScript
from dealerline_sim.legs import CallLeg, LegContext
from dealerline_sim.phone import new_sid
from dealerline_sim.rest_request import (
    RestError,
    RestForm,
    Serve,
    check_twiml,
    http_method,
    not_found,
    page,
    route,
    valid_endpoint,
    valid_url,
)
from dealerline_sim.twiml import SimulatorError

_CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})


class CallsHost(LegContext, Protocol):
    """What the Calls resource needs from the simulator: the legs it keeps, who answers
    which number, and the numbers the account owns (empty: any ``From``)."""

    calls: dict[str, CallLeg]
    humans: dict[str, HumanScript]
    default_human: HumanScript | None
    owned_numbers: set[str]


@dataclass(frozen=True)
class _Instructions:
    url: str | None
    twiml: str | None
    method: str


@dataclass(frozen=True)
class _StatusCallback:
    url: str | None
    method: str
    events: frozenset[str]


def routes(acct: str, host: CallsHost, serve: Serve) -> list[Route]:
    async def create(request: Request, form: RestForm) -> tuple[int, Any]:
        return create_call(host, form)

    async def list_(request: Request, form: RestForm) -> tuple[int, Any]:
        return 200, list_calls(host, request)

    async def fetch(request: Request, form: RestForm) -> tuple[int, Any]:
        return 200, _leg(host, request).resource()

    async def update(request: Request, form: RestForm) -> tuple[int, Any]:
        return 200, await update_call(_leg(host, request), form)

    async def delete(request: Request, form: RestForm) -> tuple[int, Any]:
        return delete_call(host, _leg(host, request))

    return [
        route(acct + "/Calls.json", serve, {"GET": list_, "POST": create}),
        route(acct + "/Calls/{sid}.json", serve, {"GET": fetch, "POST": update, "DELETE": delete}),
    ]


def _leg(host: CallsHost, request: Request) -> CallLeg:
    leg = host.calls.get(str(request.path_params["sid"]))
    if leg is None:
        raise not_found(request)
    return leg


def create_call(host: CallsHost, form: RestForm) -> tuple[int, Any]:
    to, from_ = _endpoints(form, host.owned_numbers)
    if form.get("ApplicationSid"):
        raise RestError(400, 21218, "ApplicationSid is not supported by the simulator")
    instructions = _instructions(form)
    callback = _status_callback(form)
    timeout = _timeout(form)
    amd = form.get("MachineDetection")
    if amd is not None and amd not in ("Enable", "DetectMessageEnd"):
        raise RestError(400, 20001, "MachineDetection must be Enable or DetectMessageEnd")
    leg = CallLeg(
        host,
        sid=new_sid("CA"),
        direction="outbound-api",
        from_number=from_,
        to_number=to,
        status="queued",
        url=instructions.url,
        method=instructions.method,
        twiml=instructions.twiml,
        status_callback=callback.url,
        status_callback_method=callback.method,
        status_callback_events=callback.events,
        timeout_s=float(timeout),
        machine_detection=amd,
        human=host.humans.get(to, host.default_human),
    )
    host.calls[leg.sid] = leg
    host.timeline.record("status", leg.sid, status="queued", previous=None)
    leg.start_outbound()
    return 201, leg.resource()


def _endpoints(form: RestForm, owned_numbers: set[str]) -> tuple[str, str]:
    """``To`` and ``From``: present, valid, and ``From`` owned when the account says so."""
    to, from_ = form.get("To"), form.get("From")
    if not to:
        raise RestError(400, 21201, "No 'To' number is specified")
    if not from_:
        raise RestError(400, 21213, "No 'From' number is specified")
    if not valid_endpoint(to):
        raise RestError(400, 21211, f"Invalid 'To' Phone Number: {mask_phone(to)}")
    if not valid_endpoint(from_):
        raise RestError(400, 21212, f"Invalid 'From' Phone Number: {mask_phone(from_)}")
    if owned_numbers and from_ not in owned_numbers:
        raise RestError(
            400,
            21210,
            f"The source phone number provided, {mask_phone(from_)}, is not yet verified "
            "for your account. You may only make calls from phone numbers that you've "
            "verified or purchased from Twilio.",
        )
    return to, from_


def _instructions(form: RestForm, required: bool = True) -> _Instructions:
    """``Url`` (Twilio then ignores ``Twiml``) or inline ``Twiml``, and ``Method``; with
    ``required``, one of the two must be there."""
    url, twiml = form.get("Url"), form.get("Twiml")
    if required and not url and not twiml:
        raise RestError(400, 21205, "Url parameter is required.")
    if url and not valid_url(url):
        raise RestError(400, 21205, f"Url is not a valid URL: {url}")
    if url:
        twiml = None
    elif twiml is not None:
        check_twiml(twiml)
    return _Instructions(url, twiml, http_method(form.get("Method"), "Method"))


def _status_callback(form: RestForm) -> _StatusCallback:
    callback = form.get("StatusCallback")
    if callback is not None and not valid_url(callback):
        raise RestError(400, 21609, f"Invalid StatusCallback url: {callback}")
    method = http_method(form.get("StatusCallbackMethod"), "StatusCallbackMethod")
    events: set[str] = set()
    for value in form.getlist("StatusCallbackEvent"):
        events.update(value.replace(",", " ").split())
    unknown = events - _CALL_EVENTS
    if unknown:
        raise RestError(
            400,
            20001,
            f"StatusCallbackEvent must be initiated, ringing, answered or completed, not {sorted(unknown)}",
        )
    return _StatusCallback(callback, method, frozenset(events))


def _timeout(form: RestForm) -> int:
    """``Timeout``: seconds of ringing, 1–600 (default 60)."""
    raw = form.get("Timeout")
    if not raw:
        return 60
    try:
        timeout = int(raw)
    except ValueError as exc:
        raise RestError(400, 20001, f"Timeout must be an integer: {raw}") from exc
    if not 1 <= timeout <= 600:
        raise RestError(400, 20001, "Timeout must be between 1 and 600 seconds")
    return timeout


def list_calls(host: CallsHost, request: Request) -> dict[str, Any]:
    q = request.query_params
    legs = list(host.calls.values())
    for name, attr in (("To", "to_number"), ("From", "from_number")):
        if q.get(name):
            legs = [leg for leg in legs if getattr(leg, attr) == q[name]]
    if q.get("Status"):
        legs = [leg for leg in legs if leg.rest_status == q["Status"]]
    if q.get("ParentCallSid"):
        legs = [leg for leg in legs if leg.parent_call_sid == q["ParentCallSid"]]
    legs.sort(key=lambda leg: leg.created_sim_s, reverse=True)
    return page(request, "calls", [leg.resource() for leg in legs])


async def update_call(leg: CallLeg, form: RestForm) -> dict[str, Any]:
    """A new status callback, then ``Status`` (end the call) or ``Url``/``Twiml``
    (redirect it; 21220 unless it is in progress)."""
    callback = form.get("StatusCallback")
    if callback is not None:
        if not valid_url(callback):
            raise RestError(400, 21609, f"Invalid StatusCallback url: {callback}")
        leg.status_callback = callback
        leg.status_callback_method = http_method(
            form.get("StatusCallbackMethod"), "StatusCallbackMethod"
        )
        if not leg.status_callback_events:
            leg.status_callback_events = frozenset({"completed"})
    status = form.get("Status")
    if status is not None:
        if status not in ("completed", "canceled"):
            raise RestError(400, 20001, f"Status must be completed or canceled, not {status}")
        await leg.end(status)
        return leg.resource()
    if form.get("Url") or form.get("Twiml"):
        await _redirect(leg, form)
    return leg.resource()


async def _redirect(leg: CallLeg, form: RestForm) -> None:
    ins = _instructions(form, required=False)
    try:
        await leg.redirect(url=ins.url, method=ins.method, twiml=ins.twiml)
    except SimulatorError as exc:
        raise RestError(400, 21220, "Call is not in-progress. Cannot redirect.") from exc


def delete_call(host: CallsHost, leg: CallLeg) -> tuple[int, Any]:
    if not leg.is_final:
        raise RestError(400, 20009, "Cannot delete a call that is not completed")
    del host.calls[leg.sid]
    return 204, None
