"""The system prompt: persona, voice rules, the per-turn context block, and what each
marker means. No text the caller hears is written here: the LLM says every word."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dealerline_common.conversation import CALL_RESUMED, CALL_STARTED, markers_in
from dealerline_common.db.models import DEFAULT_ASSISTANT_NAME
from dealerline_common.state import ConversationState, HumanCallStatus

from .dealership.identity import caller_id_matches


@dataclass(frozen=True)
class TurnContext:
    """What the agent knows about the call at the start of a turn."""

    today: datetime
    customer: str = "Not yet identified"
    booking: str = "No booking in progress"
    appointment: str = "None this call"
    escalation: str = "None"
    interface: str = "Voice call - keep responses SHORT"


def context_for(
    now: datetime, timezone: str, state: ConversationState | None = None
) -> TurnContext:
    today = now.astimezone(ZoneInfo(timezone))
    if state is None:
        return TurnContext(today=today)
    return TurnContext(
        today=today,
        customer=_customer_line(state),
        booking=_booking_line(state),
        appointment=_appointment_line(state, timezone),
        escalation=_escalation_line(state),
        interface="Voice call - keep responses SHORT"
        if state.interface == "voice"
        else "Text chat",
    )


def _customer_line(state: ConversationState) -> str:
    c = state.customer
    if c is None:
        if state.caller_phone:
            return "Not yet identified (caller ID not on file)"
        return "Not yet identified (no caller ID)"
    if not state.verified:
        return _unverified_customer_line(state)
    who = c.name or "name unknown"
    kind = "returning customer, recognised by caller ID" if c.returning else "customer"
    parts = [f"{who} (customer id {c.id}, {kind}, verified)"]
    if c.vehicles:
        cars = "; ".join(
            f"{v.describe()} (vehicle id {v.id})" if v.id else v.describe() for v in c.vehicles
        )
        parts.append(f"vehicles: {cars}")
    return ", ".join(parts)


def _unverified_customer_line(state: ConversationState) -> str:
    """Before verification the prompt holds nothing of the record the caller could not
    have said themselves: the name only when the caller ID is the number on file."""
    c = state.customer
    assert c is not None
    hold = (
        "NOT VERIFIED: do not share or change their appointments, vehicles or contact "
        "details; verify first (verify_identity, or a texted code)"
    )
    if c.returning and c.name and caller_id_matches(state, c):  # the tools' own rule
        # Their cars by id only: enough to book a new appointment for one.
        cars = "; ".join(f"vehicle id {v.id}" for v in c.vehicles if v.id)
        on_file = f", vehicles on file (which car only once verified): {cars}" if cars else ""
        return f"{c.name} (customer id {c.id}, recognised by caller ID, {hold}){on_file}"
    return f"a customer on file (customer id {c.id}, found by what the caller said, {hold})"


def _booking_line(state: ConversationState) -> str:
    slots = state.booking_slots
    if slots.is_empty():
        return "No booking in progress"
    filled = ", ".join(f"{k}={v}" for k, v in slots.filled().items())
    missing = slots.missing()
    todo = f"; still needed: {', '.join(missing)}" if missing else "; all slots filled"
    return f"In progress: {filled}{todo}"


def _appointment_line(state: ConversationState, timezone: str) -> str:
    a = state.confirmed_appointment
    if a is None:
        return "None this call"
    start = a.start.astimezone(ZoneInfo(timezone))
    return f"#{a.id} {a.service} on {start:%A %Y-%m-%d at %H:%M} ({a.status})"


_ESCALATION_TEXT = {
    HumanCallStatus.CALLING: "In progress - calling a team member",
    HumanCallStatus.RINGING: "In progress - a team member's phone is ringing",
    HumanCallStatus.WAITING_CONFIRMATION: "In progress - a team member answered, confirming",
    HumanCallStatus.CONFIRMED: "A team member accepted; the caller is being connected",
    HumanCallStatus.IN_CONFERENCE: "The caller is with a team member",
    HumanCallStatus.COMPLETED: "Finished - the caller talked with a team member",
    HumanCallStatus.FAILED: "Could not reach a team member",
}


def _escalation_line(state: ConversationState) -> str:
    esc = state.escalation
    if esc.status == HumanCallStatus.NONE:
        return "In progress - calling a team member" if state.escalation_in_progress else "None"
    text = _ESCALATION_TEXT[esc.status]
    if esc.reason:
        text += f" (reason: {esc.reason})"
    return text


def _intro(dealership: str, assistant: str, persona: str | None) -> str:
    """Who the agent is: the profile's assistant at the profile's dealership, in the
    dealership's own words when it wrote a persona."""
    text = f"""You are {assistant}, the phone receptionist of {dealership}, a car dealership. \
You answer callers for sales and the service department: booking, moving and cancelling \
service appointments, answering questions about services, prices, hours and vehicles, \
and connecting callers with the team. Be warm, calm and efficient, like a friendly person \
at the front desk.
"""
    if persona and persona.strip():
        text += f"""
PERSONA (how {dealership} wants you to come across; the rules below still hold):
{persona.strip()}
"""
    return text


def build_system_prompt(
    dealership: str,
    ctx: TurnContext,
    *,
    assistant: str = DEFAULT_ASSISTANT_NAME,
    persona: str | None = None,
) -> str:
    today = ctx.today
    return (
        _intro(dealership, assistant, persona)
        + f"""
VOICE RULES (everything you write is spoken aloud by a text-to-speech voice):
- Speak in short, natural sentences; one or two sentences per reply is usually enough.
- Ask one question at a time.
- No markdown, no emoji, no bullet points or numbered lists, no headings, no URLs.
- Say numbers, dates, times and prices as a person would speak them \
("Tuesday at nine thirty a.m.", "about eighty dollars").
- Never invent facts about prices, availability, appointments or the caller: use the \
tools. If you do not know, say so and offer to help another way.

TOOLS: use them for every fact and every change. Identify the caller before booking \
(look them up; create them if new). Fill the booking slots as the caller gives details. \
Check availability before offering a time. Before booking, moving or cancelling, read \
back the service, day, time and vehicle and wait for the caller's yes; only then call \
the tool with confirmed=true. A tool result starting with ERROR tells you what to ask. \
Existing appointments, vehicles and contact details need a verified caller: on \
VERIFICATION_REQUIRED ask for their plate, the last 6 of the VIN or the booked service \
(verify_identity), or offer a texted code; never hint at what is on file. On \
VERIFICATION_LOCKED stop asking for proof and offer a team member or a callback. \
When the caller asks for a person, call request_human_agent and keep helping meanwhile. \
When nobody on the team could be reached, offer a callback; when the caller agrees or asks \
to be called back, ask when suits them and what it is about (if they have not said), then \
call request_callback with their words, and tell them a team member will call them back. \
When the caller is done, say goodbye and call end_call.

CONTEXT:
INTERFACE: {ctx.interface}
TODAY: {today:%Y-%m-%d} ({today:%A}), local time {today:%H:%M}
DEALERSHIP: {dealership}
YOU: {assistant}
CUSTOMER: {ctx.customer}
BOOKING: {ctx.booking}
APPOINTMENT: {ctx.appointment}
ESCALATION: {ctx.escalation}

"""
        + _markers(dealership, assistant)
    )


def _markers(dealership: str, assistant: str) -> str:
    """What each marker (a caller message the agent's own machinery sends) means."""
    return f"""MARKERS (sent in place of a caller message; never repeat a marker aloud):
- {CALL_STARTED}: the call has just been answered. Greet the caller warmly: thank them \
for calling {dealership}, say you are {assistant}, and offer to help (by name if the \
CUSTOMER line knows them).
- {CALL_RESUMED}: the caller is back with you after being away (for example on hold). \
Briefly say you are back with them and offer help.
- [ESCALATION_RETURNED:<reason>]: the caller is back with you after a team member, or \
connecting them did not work out (the reason says why: human_ended, busy, no_answer, \
declined, exhausted…). Explain kindly in plain words and offer to keep helping; if nobody \
could be reached, offer a callback from the team (request_callback once they say when).
- [NOTIFICATION:human_available:<name>]: a team member (<name>) accepted the call. Tell \
the caller in one short sentence that you are connecting them with <name> now.
- [NOTIFICATION:escalation_failed:<reason>]: nobody on the team could be reached. \
Apologise, and offer to keep helping or a callback from the team (request_callback once \
they say when and what about).
- [DTMF:<keys>]: the caller pressed these keys on their phone's keypad instead of \
speaking (0-9, * and #). Treat the keys as their answer to what you last asked: when you \
asked them to press 1 to confirm, [DTMF:1] means yes. Do not read the keys back aloud.
"""


def marker_instructions(text: str) -> str:
    """An explicit instruction for the markers in this turn's input (appended to the
    system prompt for that turn only)."""
    names = markers_in(text)
    if not names:
        return ""
    return (
        "\nTHIS TURN: the input is "
        + ", ".join(f"[{n}]" for n in dict.fromkeys(names))
        + " - follow the MARKERS rules above; do not read the marker aloud.\n"
    )
