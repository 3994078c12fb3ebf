"""What a fact or a staff action asks of an escalation (:class:`Decision`), what one write
did (:class:`Change`), and :func:`apply_decision`, which applies the one to
``state.escalation`` through the state machine (:mod:`.machine`). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dealerline_common.messages import HumanCallStatus, StaffContact
from dealerline_common.state import ConversationState, EscalationInfo

from .machine import FINAL_REASONS, can_start_attempt, escalation_final, transition

S = HumanCallStatus

# Decision.detail when the decision leaves ``EscalationInfo.detail`` as it is.
KEEP: Any = object()


class Unchanged(Exception):
    """Raised inside a state update that has nothing to write: the store then writes
    nothing (a write would bump the version and make the agent's turn retry)."""


@dataclass
class Decision:
    """What a fact or an action does to the escalation (decided inside the locked update).

    ``status`` None keeps the status (a silent update of ``detail``/``human_call_sid``);
    ``new_attempt`` starts ringing the next person (status CALLING).
    """

    status: HumanCallStatus | None = None
    reason: str | None = None
    detail: Any = KEEP
    human_call_sid: str | None = None
    staff_name: str | None = None
    new_attempt: int | None = None
    conference: str | None = None
    # The run's hunt list to keep in the state (see ``EscalationInfo.hunt``); ``ringing``
    # goes with ``new_attempt``.
    hunt: list[StaffContact] | None = None
    ringing: StaffContact | None = None


@dataclass(frozen=True)
class Change:
    """One write to ``state.escalation``; ``changed`` when the status (or finality) moved."""

    session_id: str
    task_id: str
    attempt: int
    previous: HumanCallStatus
    status: HumanCallStatus
    reason: str | None
    final: bool
    changed: bool
    staff_name: str | None
    human_call_sid: str | None
    call_sid: str | None  # the customer's call


def apply_decision(
    state: ConversationState, session_id: str, task_id: str, d: Decision, now: float
) -> Change:
    """Apply ``d`` to ``state.escalation`` (in place). Raises :class:`Unchanged` when there
    is nothing to write, ``IllegalTransition`` when the machine refuses the move."""
    esc = state.escalation
    before, before_final = esc.status, escalation_final(esc.status, esc.detail)
    if d.new_attempt is not None:
        _start_attempt(esc, d, d.new_attempt, before_final)
        changed = True
    elif d.status is None or d.status is esc.status:
        changed = _same_status(esc, d, before_final)
    else:
        if before_final:
            raise Unchanged
        esc.status = transition(esc.status, d.status)  # IllegalTransition: refused
        esc.detail = d.reason if d.reason is not None else (None if d.detail is KEEP else d.detail)
        changed = True
    _carry(esc, d)
    esc.updated_at = now
    final = escalation_final(esc.status, esc.detail)
    if final:
        state.escalation_in_progress = False
    return Change(
        session_id=session_id,
        task_id=task_id,
        attempt=esc.attempts,
        previous=before,
        status=esc.status,
        reason=esc.detail if esc.status in (S.FAILED, S.COMPLETED) else None,
        final=final,
        changed=changed,
        staff_name=esc.staff_name,
        human_call_sid=esc.human_call_sid,
        call_sid=state.call_sid,
    )


def _start_attempt(esc: EscalationInfo, d: Decision, attempt: int, before_final: bool) -> None:
    """The next person is rung: attempt ``attempt`` starts CALLING."""
    if before_final or not can_start_attempt(esc.status, esc.detail):
        raise Unchanged
    if attempt != esc.attempts + 1:
        raise Unchanged
    esc.status = S.CALLING
    esc.attempts = attempt
    esc.human_call_sid = None
    esc.staff_name = d.staff_name
    esc.detail = None
    esc.conference = None
    esc.ringing = d.ringing


def _same_status(esc: EscalationInfo, d: Decision, before_final: bool) -> bool:
    """A decision that keeps the status; True when it still changes the escalation (a
    failed attempt whose reason ends it all)."""
    if before_final:
        raise Unchanged  # a final state is never touched again
    if d.status is S.FAILED and d.reason in FINAL_REASONS:
        esc.detail = d.reason  # a failed attempt becomes the end of it all
        return True
    if d.detail is not KEEP:
        esc.detail = d.detail
    return False


def _carry(esc: EscalationInfo, d: Decision) -> None:
    """The fields a decision fills in whatever it does to the status."""
    if d.human_call_sid is not None and esc.human_call_sid is None:
        esc.human_call_sid = d.human_call_sid
    if d.conference is not None:
        esc.conference = d.conference
    if d.hunt is not None:
        esc.hunt = list(d.hunt)
