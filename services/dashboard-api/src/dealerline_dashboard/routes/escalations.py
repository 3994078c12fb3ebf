"""Escalations: the list, and claiming or passing on a ringing one (a NATS request to the
escalation service on the call's staff subject)."""

from typing import Any, Literal

import nats.errors
from fastapi import APIRouter, HTTPException, status
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.logs import get_logger
from dealerline_common.messages import StaffAction, StaffActionReply

from ..dashboard import Dashboard
from ..schemas import ActionOut, EscalationOut, Problem
from .deps import Dash, Principal, Who

log = get_logger(__name__)

router = APIRouter(tags=["escalations"])

_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "no escalation of this call is ringing"}
}


@router.get("/api/escalations", response_model=list[EscalationOut])
async def escalations(who: Who, dash: Dash) -> Any:
    """Running escalations first (oldest first), then today's finished ones."""
    start, _, _ = await dash.store.today_bounds()
    return dash.view.escalation_list(start.timestamp())


async def staff_action(
    dash: Dashboard, session_id: str, action: Literal["claim", "pass"], who: Principal
) -> Any:
    """Ask the escalation service to take ``who``'s claim or pass; its answer."""
    try:
        subject = subjects.staff_action(session_id)
    except ValueError:
        raise HTTPException(404, "no such call") from None
    request = StaffAction(session_id=session_id, action=action, staff=who.contact())
    try:
        msg = await dash.bus.nc.request(
            subject, request.dumps(), timeout=dash.settings.staff_action_timeout_s
        )
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError):
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no escalation of this call is ringing"
        ) from None
    try:
        reply = StaffActionReply.model_validate_json(msg.data)
    except ValidationError:
        log.error("unreadable staff action reply", session_id=session_id)
        raise HTTPException(502, "the escalation service answered something unreadable") from None
    log.info(
        "staff action",
        session_id=session_id,
        action=action,
        staff_id=who.staff.id,
        accepted=reply.accepted,
    )
    return {"accepted": reply.accepted, "detail": reply.detail}


@router.post(
    "/api/escalations/{session_id}/claim", response_model=ActionOut, responses=_ACTION_ERRORS
)
async def claim(session_id: str, who: Who, dash: Dash) -> Any:
    """Take a ringing escalation: the escalation service rings you next."""
    return await staff_action(dash, session_id, "claim", who)


@router.post(
    "/api/escalations/{session_id}/pass", response_model=ActionOut, responses=_ACTION_ERRORS
)
async def pass_(session_id: str, who: Who, dash: Dash) -> Any:
    """Pass on a ringing escalation: you are taken off its hunt list."""
    return await staff_action(dash, session_id, "pass", who)
