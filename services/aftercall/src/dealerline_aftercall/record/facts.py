"""What a call came to, from the facts its record holds: pure functions, no IO.

The record keeper stores each event as it arrives (see :mod:`.repo`); at the end of the
call these functions turn the stored facts into the outcome, the summary request and the
service-desk email.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dealerline_common.db.models import CallOutcome
from dealerline_common.messages import HumanCallStatus

# Outcomes the service desk gets an email for.
DESK_OUTCOMES = frozenset(
    {
        CallOutcome.BOOKED,
        CallOutcome.RESCHEDULED,
        CallOutcome.CANCELLED,
        CallOutcome.ESCALATION_FAILED,
        CallOutcome.CALLBACK_REQUESTED,
    }
)

OUTCOME_LABELS: dict[CallOutcome, str] = {
    CallOutcome.BOOKED: "Appointment booked",
    CallOutcome.RESCHEDULED: "Appointment rescheduled",
    CallOutcome.CANCELLED: "Appointment cancelled",
    CallOutcome.ESCALATED: "Connected to the team",
    CallOutcome.ESCALATION_FAILED: "Nobody could take the call",
    CallOutcome.CALLBACK_REQUESTED: "Callback requested",
    CallOutcome.ANSWERED: "Questions answered",
    CallOutcome.ABANDONED: "Abandoned",
}

_CONNECTED = {HumanCallStatus.IN_CONFERENCE.value, HumanCallStatus.COMPLETED.value}


def end_reason(raw: str) -> str:
    """The gateway's and escalation's end reasons, as the record names them: ``hangup``
    (the caller hung up), ``end_call`` (the agent ended it), ``stream_lost`` (the media
    stream went away without a hang-up), or ``hangup:<why>`` for another requested end."""
    reason = (raw or "").strip()
    if reason in ("stop", "customer_hung_up", "hangup", "caller-hangup"):
        return "hangup"
    if reason.startswith("hangup:"):
        why = reason.split(":", 1)[1]
        return "end_call" if why == "end_call" else f"hangup:{why}"[:50]
    if reason in ("end_call", "stream_lost"):
        return reason
    return "stream_lost"  # disconnect, gateway_shutdown, task_failed:…


@dataclass
class Turn:
    role: str  # "caller", "agent"
    text: str
    at: datetime
    interrupted: bool = False


@dataclass
class CallFacts:
    """Everything the outcome is decided from."""

    turns: list[Turn] = field(default_factory=list)
    appointments: list[dict[str, Any]] = field(default_factory=list)
    escalation: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)


def net_appointments(appointments: Iterable[dict[str, Any]]) -> dict[int, str]:
    """The last action per appointment id (booked then cancelled in one call: cancelled)."""
    last: dict[int, str] = {}
    for entry in sorted(appointments, key=lambda a: a.get("at") or 0.0):
        appointment_id = entry.get("appointment_id")
        if isinstance(appointment_id, int) and entry.get("action"):
            last[appointment_id] = str(entry["action"])
    return last


def decide_outcome(facts: CallFacts) -> CallOutcome:
    """The most significant thing the call did, in :class:`CallOutcome`'s order: an
    appointment booked, moved or cancelled; a person connected; an escalation that failed;
    a callback taken; a question answered (the caller spoke and the agent answered); else
    abandoned."""
    actions = set(net_appointments(facts.appointments).values())
    for action, outcome in (
        ("booked", CallOutcome.BOOKED),
        ("rescheduled", CallOutcome.RESCHEDULED),
        ("cancelled", CallOutcome.CANCELLED),
    ):
        if action in actions:
            return outcome
    statuses = [e for e in facts.escalation if e.get("kind", "human_status") == "human_status"]
    if any(e.get("status") in _CONNECTED for e in statuses):
        return CallOutcome.ESCALATED
    if any(e.get("final") and e.get("status") == HumanCallStatus.FAILED.value for e in statuses):
        return CallOutcome.ESCALATION_FAILED
    if facts.callbacks:
        return CallOutcome.CALLBACK_REQUESTED
    first_caller = next(
        (i for i, t in enumerate(facts.turns) if t.role == "caller" and t.text.strip()), None
    )
    if first_caller is not None and any(
        t.role == "agent" and t.text.strip() for t in facts.turns[first_caller + 1 :]
    ):
        return CallOutcome.ANSWERED
    return CallOutcome.ABANDONED


def count_barge_ins(turns: Iterable[Turn]) -> int:
    return sum(1 for t in turns if t.role == "agent" and t.interrupted)


# --------------------------------------------------------------------------- wording


def local_time(iso: str | None, timezone: str) -> str | None:
    """``2026-12-01T09:00:00-08:00`` → ``Tuesday, December 1 at 9:00 AM`` in ``timezone``."""
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is not None:
        when = when.astimezone(ZoneInfo(timezone))
    hour = when.strftime("%I").lstrip("0") or "12"
    return f"{when.strftime('%A, %B')} {when.day} at {hour}:{when.strftime('%M %p')}"


def describe_appointment(entry: dict[str, Any], timezone: str) -> str:
    parts = [str(entry.get("action", "booked")), str(entry.get("service") or "service visit")]
    when = local_time(entry.get("start"), timezone)
    if when:
        parts.append(f"on {when}")
    if entry.get("vehicle"):
        parts.append(f"for the {entry['vehicle']}")
    return " ".join(parts) + f" (appointment #{entry.get('appointment_id')})"


SUMMARY_SYSTEM = (
    "You write call summaries for the service desk of {dealership}, a car dealership. "
    "Below is one phone call between a caller and the dealership's AI receptionist. "
    "Write two or three plain sentences: who called, what they wanted, what was done "
    "(appointments with day and time, transfers to the team, callback requests) and "
    "anything the team must follow up on. No lists, no greetings."
)


def summary_request(
    *,
    outcome: CallOutcome,
    customer_name: str | None,
    appointments: Sequence[dict[str, Any]],
    callbacks: Sequence[dict[str, Any]],
    turns: Sequence[Turn],
    timezone: str,
) -> str:
    """The user message of the summary request: the call's facts, then its transcript
    (one ``Caller:`` / ``Agent:`` line per turn)."""
    lines = [f"Outcome: {outcome.value}", f"Customer: {customer_name or 'unknown'}"]
    lines += [f"Appointment: {describe_appointment(a, timezone)}" for a in appointments]
    lines += [
        f"Callback requested: {c.get('preferred_window')} ({c.get('reason')})" for c in callbacks
    ]
    lines.append("Transcript:")
    for t in turns:
        who = "Caller" if t.role == "caller" else "Agent" if t.role == "agent" else t.role
        cut = " [interrupted by the caller]" if t.interrupted else ""
        lines.append(f"{who}: {' '.join(t.text.split())}{cut}")
    return "\n".join(lines)


def desk_email(
    *,
    session_id: str,
    dealership: str,
    outcome: CallOutcome,
    summary: str | None,
    customer_name: str | None,
    caller_phone: str | None,
    started_at: datetime,
    duration_s: float | None,
    appointments: Sequence[dict[str, Any]],
    callbacks: Sequence[dict[str, Any]],
    timezone: str,
    dashboard_url: str | None,
) -> tuple[str, str]:
    """Subject and plain-text body of the service desk's email about one call. The desk
    sees the caller's full number: it calls them back."""
    who = customer_name or caller_phone or "unknown caller"
    subject = f"[{dealership}] {OUTCOME_LABELS[outcome]}: {who}"
    caller = ", ".join(p for p in (customer_name, caller_phone) if p) or "unknown"
    body = [
        f"{OUTCOME_LABELS[outcome]} ({outcome.value})",
        "",
        f"Summary: {summary or '(not available yet: the summary could not be written)'}",
        f"Caller: {caller}",
        f"Call: {local_time(started_at.isoformat(), timezone)}"
        + (f", {round(duration_s)} s" if duration_s is not None else ""),
    ]
    for entry in appointments:
        body.append(f"Appointment: {describe_appointment(entry, timezone)}")
    for cb in callbacks:
        body.append(
            f"Callback requested: {cb.get('preferred_window') or 'any time'}"
            f" (reason: {cb.get('reason') or 'not given'})"
        )
    if dashboard_url:
        body += ["", f"Open the call: {dashboard_url.rstrip('/')}/#/calls/{session_id}"]
    return subject, "\n".join(body) + "\n"
