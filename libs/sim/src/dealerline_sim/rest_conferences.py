"""The simulated Twilio REST API's Conferences resource: ``Conferences.json`` list,
``Conferences/{Sid}.json`` fetch and update (``Status=completed`` ends the room) and
``Conferences/{Sid}/Participants.json`` list, over the rooms ``<Dial><Conference>`` built."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from dealerline_sim.conference import Conference, Conferences
from dealerline_sim.rest_request import RestError, RestForm, Serve, not_found, page, route
from dealerline_sim.timeline import SimClock


def routes(acct: str, conferences: Conferences, clock: SimClock, serve: Serve) -> list[Route]:
    async def list_(request: Request, form: RestForm) -> tuple[int, Any]:
        return 200, list_conferences(conferences, clock, request)

    async def fetch(request: Request, form: RestForm) -> tuple[int, Any]:
        return 200, _conference(conferences, request).resource(clock)

    async def update(request: Request, form: RestForm) -> tuple[int, Any]:
        conf = _conference(conferences, request)
        return 200, update_conference(conferences, conf, form).resource(clock)

    async def participants(request: Request, form: RestForm) -> tuple[int, Any]:
        conf = _conference(conferences, request)
        items = [conf.participant_resource(p, clock) for p in conf.participants.values()]
        return 200, page(request, "participants", items)

    return [
        route(acct + "/Conferences.json", serve, {"GET": list_}),
        route(acct + "/Conferences/{sid}.json", serve, {"GET": fetch, "POST": update}),
        route(acct + "/Conferences/{sid}/Participants.json", serve, {"GET": participants}),
    ]


def _conference(conferences: Conferences, request: Request) -> Conference:
    conf = conferences.by_sid.get(str(request.path_params["sid"]))
    if conf is None:
        raise not_found(request)
    return conf


def list_conferences(conferences: Conferences, clock: SimClock, request: Request) -> dict[str, Any]:
    q = request.query_params
    confs = conferences.all()
    if q.get("FriendlyName"):
        confs = [c for c in confs if c.friendly_name == q["FriendlyName"]]
    if q.get("Status"):
        confs = [c for c in confs if c.status == q["Status"]]
    confs.sort(key=lambda c: c.created_sim_s, reverse=True)
    return page(request, "conferences", [c.resource(clock) for c in confs])


def update_conference(conferences: Conferences, conf: Conference, form: RestForm) -> Conference:
    status = form.get("Status")
    if status is not None:
        if status != "completed":
            raise RestError(400, 20001, f"Status must be completed, not {status}")
        conferences.end(conf, "conference-ended-via-api")
    return conf
