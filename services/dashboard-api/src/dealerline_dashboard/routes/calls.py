"""The calls: live now, the searchable call log and one call's detail; and today's
appointments."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from dealerline_common import subjects
from dealerline_common.db.models import CallOutcome

from ..call_detail import detail_from_events, detail_from_record
from ..events import read_all
from ..masking import has_digits
from ..schemas import AppointmentOut, CallDetail, CallPage, LiveCallOut, Problem
from ..store import call_summary_json
from .deps import Dash, Who

router = APIRouter()


@router.get("/api/calls/live", response_model=list[LiveCallOut], tags=["calls"])
async def live_calls(who: Who, dash: Dash) -> Any:
    """Calls going on now (and those ended in the last minute, as ``ended``)."""
    return dash.view.live_calls()


@router.get(
    "/api/calls", response_model=CallPage, tags=["calls"], responses={403: {"model": Problem}}
)
async def calls(
    who: Who,
    dash: Dash,
    q: Annotated[str | None, Query(max_length=200)] = None,
    outcome: CallOutcome | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    """The call log, newest first; ``q`` searches caller name, phone digits, summary
    and transcript text. A query with digits (written or spoken) is a search for a phone
    number: only roles that see whole numbers may make it (403 for the others), or the
    matches would reveal the digits a mask hides."""
    if q and not who.viewer.full_numbers and has_digits(q):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "searching by digits needs a role that sees phone numbers; search by name or "
            "words instead",
        )
    rows, total = await dash.store.search_calls(
        q, outcome.value if outcome else None, limit, offset
    )
    return {"items": [call_summary_json(c, who.viewer) for c in rows], "total": total}


@router.get(
    "/api/calls/{session_id}",
    response_model=CallDetail,
    tags=["calls"],
    responses={404: {"model": Problem}},
)
async def call_detail(session_id: str, who: Who, dash: Dash) -> Any:
    """One call: its record and transcript, or (while it is live, or before its record
    is written) what its events say so far."""
    try:
        subject = subjects.events(session_id)
    except ValueError:
        raise HTTPException(404, "no such call") from None
    live = session_id in dash.view.calls and dash.view.calls[session_id].ended_at is None
    row = await dash.store.call(session_id)
    if row is not None:
        return detail_from_record(row, who.viewer, live)
    stored = await read_all(dash.bus.js, subject, dash.settings.events_batch)
    if not stored:
        raise HTTPException(404, "no such call")
    body = detail_from_events(session_id, [s.event for s in stored], live)
    return who.viewer.mask(body)


@router.get("/api/appointments/today", response_model=list[AppointmentOut], tags=["dealership"])
async def appointments_today(who: Who, dash: Dash) -> Any:
    """Every appointment of the dealership's today (its timezone), by start time."""
    return await dash.store.appointments_today()
