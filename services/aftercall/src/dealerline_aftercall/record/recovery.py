"""What finalize takes from the conversation state store, for what the bus may lack:
transcript lines whose events were never published (the agent died first), the caller's
number, the customer, the confirmed appointment and the escalation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dealerline_common.conversation import is_only_markers, parse_message_id
from dealerline_common.db.models import Call
from dealerline_common.state import ConversationState

from .entries import appointment_from_state, merge_appointment
from .repo import NewTurn


@dataclass
class Known:
    """A call's caller, customer, appointments and escalation: its record's, completed
    from the state store."""

    customer_name: str | None
    caller_phone: str | None
    customer_id: int | None
    appointments: list[dict[str, Any]]
    escalation: list[dict[str, Any]]


def known_facts(call: Call, state: ConversationState | None) -> Known:
    """The record's facts; the state store's caller number and customer id win, and its
    customer name, confirmed appointment and escalation fill in what the record lacks."""
    known = Known(
        customer_name=call.customer_name,
        caller_phone=call.caller_phone,
        customer_id=None,
        appointments=list(call.appointments or []),
        escalation=list(call.escalation or []),
    )
    if state is None:
        return known
    known.caller_phone = state.caller_phone or known.caller_phone
    if state.customer is not None:
        known.customer_name = known.customer_name or state.customer.name
        known.customer_id = state.customer.id
    if state.confirmed_appointment is not None:
        known.appointments = merge_appointment(
            known.appointments,
            appointment_from_state(
                state.confirmed_appointment.model_dump(mode="json"), state.updated_at
            ),
        )
    if not known.escalation and state.escalation.task_id:
        known.escalation = [escalation_from_state(state)]
    return known


def escalation_from_state(state: ConversationState) -> dict[str, Any]:
    """The state's escalation as a timeline entry (when no status event was kept)."""
    esc = state.escalation
    return {
        "kind": "human_status",
        "at": esc.updated_at,
        "status": esc.status.value,
        "staff_name": esc.staff_name,
        "task_id": esc.task_id,
        "attempt": esc.attempts,
        "final": esc.status.value in ("completed", "failed"),
        "reason": None,
        "detail": esc.detail,
        "source": "state",
    }


def turns_from_state(messages: list[dict[str, Any]], call: Call) -> list[NewTurn]:
    """Transcript lines the state store's history has and the record lacks (their events
    died with the agent), placed in the history's order between the known ones."""
    known = {(t.turn_id, t.role): t.at for t in call.turns}
    cursor = call.started_at
    out: list[NewTurn] = []
    for turn_id, role, text in history_lines(messages):
        if (turn_id, role) in known:
            cursor = max(cursor, known[(turn_id, role)])
            continue
        cursor = cursor + timedelta(milliseconds=1)
        out.append(NewTurn(role=role, text=text, at=cursor, turn_id=turn_id))
    return out


def history_lines(messages: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(turn_id, role, text)`` per line of the history, in its order: what the caller
    said (not the agent's markers) and what the agent said (a turn's LLM steps joined);
    tool results and messages of other writers are skipped."""
    ordered: list[tuple[str, str, str]] = []
    for m in messages:
        data = m.get("data") or {}
        message_id = parse_message_id(str(data.get("id") or ""))
        text = _content(data.get("content")).strip()
        if message_id is None or not text:
            continue
        turn_id, role = message_id.turn_id, message_id.role
        if role == "caller" and m.get("type") == "human":
            if not is_only_markers(text):
                ordered.append((turn_id, role, text))
        elif role == "agent" and m.get("type") == "ai":
            if ordered and ordered[-1][:2] == (turn_id, role):
                ordered[-1] = (turn_id, role, f"{ordered[-1][2]} {text}")
            else:
                ordered.append((turn_id, role, text))
    return ordered


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
