"""Handing the caller on: a team member now (an escalation in the background), a
callback later, or the end of the call."""

from __future__ import annotations

import hashlib
import uuid

from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationRequest, HumanCallStatus
from dealerline_common.state import BackgroundTask, ConversationState, TaskStatus

from ..context import ToolContext
from ..effects import CallbackTaken, ToolEffect
from ..identity import caller_id_matches
from .args import CallbackArgs, EndCallArgs, HumanArgs
from .replies import Result

__all__ = ["end_call", "request_callback", "request_human_agent"]

log = get_logger(__name__)

_ACTIVE_ESCALATION = frozenset(
    {
        HumanCallStatus.CALLING,
        HumanCallStatus.RINGING,
        HumanCallStatus.WAITING_CONFIRMATION,
        HumanCallStatus.CONFIRMED,
        HumanCallStatus.IN_CONFERENCE,
    }
)


def _escalating(state: ConversationState) -> bool:
    """A human call is under way. The human-call status is authoritative; the flag alone
    counts only before the escalation service has reported anything. After
    FAILED/COMPLETED a new one may start."""
    status = state.escalation.status
    return status in _ACTIVE_ESCALATION or (
        state.escalation_in_progress and status is HumanCallStatus.NONE
    )


async def request_human_agent(ctx: ToolContext, args: HumanArgs) -> Result:
    state = ctx.state
    if _escalating(state):
        return (
            "ESCALATION_IN_PROGRESS: a team member is already being called. Tell the caller "
            "and keep helping meanwhile; do not start another.",
            ToolEffect(),
        )
    staff = await ctx.repo.on_duty_staff()
    if not staff:
        return (
            "ERROR: nobody is available to take the call right now. Apologise and offer a "
            "callback: ask when suits them and what it is about, then request_callback.",
            ToolEffect(),
        )
    reason = " ".join(args.reason.split()) or "caller asked for a person"
    # From the turn when there is one: a redelivered turn that asks again publishes the same
    # request (msg id ``escalation:<task_id>``), which the stream drops, instead of ringing
    # the staff a second time.
    task_id = (
        uuid.uuid5(uuid.NAMESPACE_URL, f"{ctx.session_id}|{ctx.turn_id}").hex
        if ctx.turn_id
        else uuid.uuid4().hex
    )
    request = EscalationRequest(
        session_id=ctx.session_id,
        call_sid=state.call_sid or "",
        task_id=task_id,
        reason=reason,
        customer_name=_name_for_staff(state),
        staff=staff,
    )
    try:
        await ctx.publish_escalation(request)
    except Exception:
        log.exception("escalation request not published", session_id=ctx.session_id)
        return (
            "ERROR: could not reach the team right now. Apologise and offer a callback: ask "
            "when suits them and what it is about, then request_callback.",
            ToolEffect(),
        )
    task = BackgroundTask(
        task_id=task_id, kind="escalation", status=TaskStatus.PENDING, detail=reason
    )
    log.info("escalation requested", session_id=ctx.session_id, task_id=task_id, staff=len(staff))
    return (
        f"ESCALATION_STARTED:task_id={task_id}|Calling a team member now; keep helping the "
        "caller meanwhile",
        ToolEffect(escalation_started=task),
    )


async def request_callback(ctx: ToolContext, args: CallbackArgs) -> Result:
    state = ctx.state
    customer = state.customer
    phone = state.caller_phone or (customer.phone if customer else None)
    if not phone:
        return (
            "ERROR: no number to call back (no caller ID, caller not identified). Ask for "
            "their name and number and save them (lookup_customer or create_customer), then "
            "request the callback again.",
            ToolEffect(),
        )
    taken = await ctx.repo.request_callback(
        ctx.session_id,
        preferred_window=args.preferred_window,
        reason=args.reason,
        customer_id=customer.id if customer else None,
        name=customer.name if customer else None,
        phone=phone,
        idempotency_key=_callback_key(ctx, args),
    )
    status = "CALLBACK_REQUESTED" if taken.created else "CALLBACK_ALREADY_REQUESTED"
    ending = f" ending in {phone[-4:]}" if len(phone) >= 4 else ""
    if phone != state.caller_phone and not state.verified:
        ending = " on file"  # the customer's number, not told to an unverified caller
    log.info(
        "callback requested",
        session_id=ctx.session_id,
        callback_id=taken.id,
        created=taken.created,
    )
    return (
        f"{status}: callback_id={taken.id} | when: {taken.preferred_window} | about: "
        f"{taken.reason} | number{ending}. Tell the caller a team member will call them "
        "back then; do not promise an exact time.",
        ToolEffect(
            callback_requested=CallbackTaken(
                callback_id=taken.id,
                preferred_window=taken.preferred_window,
                reason=taken.reason,
                customer_name=taken.name,
            )
        ),
    )


def _callback_key(ctx: ToolContext, args: CallbackArgs) -> str:
    """One callback request per turn: a redelivered turn (same turn id) finds the row its
    first run wrote, even if a real model words the request differently the second time.
    Outside a turn the request itself is the key."""
    if ctx.turn_id is not None:
        raw = f"{ctx.session_id}|{ctx.turn_id}"
    else:
        window = " ".join(args.preferred_window.lower().split())
        reason = " ".join(args.reason.lower().split())
        raw = f"{ctx.session_id}|{window}|{reason}"
    return "callback:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


async def end_call(ctx: ToolContext, args: EndCallArgs) -> Result:
    log.info("end of call requested", session_id=ctx.session_id, reason=args.reason)
    return (
        "CALL_ENDING: say a short goodbye; the call ends after it.",
        ToolEffect(end_call=True),
    )


def _name_for_staff(state: ConversationState) -> str | None:
    """The name the team member hears: as on file when the caller proved it or rang from the
    number on file, else only as the caller's claim (staff must not take it as checked)."""
    customer = state.customer
    if customer is None:
        return None
    if state.verified or caller_id_matches(state, customer):
        return customer.name
    return f"A caller who says they are {customer.name}"
