"""What every tool family shares: the ``(content, ToolEffect)`` result, the standard
refusals, the call's local time, and how a customer, an appointment, free times and the
booking in progress read in a tool's reply."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from dealerline_common.state import AppointmentInfo, CustomerInfo

from ..context import ToolContext
from ..effects import AppointmentAction, ToolEffect
from ..identity import caller_id_matches
from ..parsing import say_date, say_time, say_when

__all__ = [
    "NOT_IDENTIFIED",
    "ON_FILE",
    "SYSTEM_DOWN",
    "VERIFICATION_REQUIRED",
    "Result",
    "already_confirmed",
    "alternatives_text",
    "appointment_line",
    "customer_line",
    "keep_returning",
    "local",
    "moved_effect",
    "verified_customer",
    "progress",
    "recognised",
    "slot_list",
    "today",
    "zone",
]

Result = tuple[str, ToolEffect]

_MAX_LISTED_SLOTS = 8

NOT_IDENTIFIED = (
    "ERROR: the caller is not identified yet. Use lookup_customer (caller ID, phone or "
    "name) or create_customer first."
)
VERIFICATION_REQUIRED = (
    "VERIFICATION_REQUIRED: nothing about this customer's appointments, vehicles or contact "
    "details can be shared or changed until the caller is verified. Ask for the licence "
    "plate, the last 6 characters of the VIN or the service they have booked "
    "(verify_identity), or offer to text a code to the number on file "
    "(send_verification_code). New bookings, prices, hours and questions need no "
    "verification."
)
# How a car on file is named to a caller who is not verified.
ON_FILE = "vehicle on file"
SYSTEM_DOWN = (
    "ERROR: the dealership system is not responding right now. Apologise, and offer to "
    "connect the caller with a team member (request_human_agent) or to take a message."
)


def recognised(ctx: ToolContext) -> bool:
    """The call's own (signed) caller ID is the number on file of the customer: enough to
    book a new appointment for one of their cars by id, not to learn anything."""
    customer = ctx.state.customer
    return customer is not None and caller_id_matches(ctx.state, customer)


def verified_customer(ctx: ToolContext) -> CustomerInfo | str:
    """The customer, for a tool that reads or changes their account; or the refusal:
    not identified, or the caller not verified as that customer."""
    customer = ctx.state.customer
    if customer is None:
        return NOT_IDENTIFIED
    if not ctx.state.verified:
        return VERIFICATION_REQUIRED
    return customer


def zone(ctx: ToolContext) -> ZoneInfo:
    return ZoneInfo(ctx.timezone)


def today(ctx: ToolContext) -> date:
    return ctx.clock().astimezone(zone(ctx)).date()


def local(ctx: ToolContext, day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=zone(ctx))


def slot_list(slots: list[datetime]) -> str:
    shown = ", ".join(say_time(s) for s in slots[:_MAX_LISTED_SLOTS])
    more = len(slots) - _MAX_LISTED_SLOTS
    return f"{shown} (and {more} later)" if more > 0 else shown


def alternatives_text(slots: list[datetime]) -> str:
    if not slots:
        return "No free time in the next three weeks; offer a team member instead."
    days = {s.date() for s in slots}
    if len(days) == 1:
        return f"Nearest free times on {say_date(slots[0])}: {slot_list(slots)}."
    return "Nearest free times: " + ", ".join(say_when(s) for s in slots) + "."


def appointment_line(a: AppointmentInfo) -> str:
    vehicle = f" | {a.vehicle}" if a.vehicle else ""
    return f"appointment_id={a.id} | {a.service} | {say_when(a.start)}{vehicle}"


def customer_line(c: CustomerInfo) -> str:
    vehicles = "; ".join(f"vehicle_id={v.id} {v.describe()}" for v in c.vehicles) or "none"
    email = "on file" if c.email else "none"
    return f"customer_id={c.id} | {c.name} | vehicles: {vehicles} | email: {email}"


def keep_returning(ctx: ToolContext, info: CustomerInfo) -> CustomerInfo:
    """A customer re-read during the call keeps the 'known before this call' flag."""
    current = ctx.state.customer
    if current is not None and current.id == info.id:
        return info.model_copy(update={"returning": current.returning})
    return info


def already_confirmed(ctx: ToolContext, appt: AppointmentInfo) -> bool:
    """The call's state already holds ``appt`` as it is now: an earlier turn booked or
    moved it and this request changed nothing, so there is nothing new to announce. (A
    turn replayed before its state was stored does not see it, and announces again under
    the same event id.)"""
    current = ctx.state.confirmed_appointment
    return current is not None and current.id == appt.id and current.start == appt.start


def moved_effect(ctx: ToolContext, moved: AppointmentInfo) -> ToolEffect:
    """The effect of an appointment moved (by reschedule, or a booking that moves one)."""
    action: AppointmentAction | None = None if already_confirmed(ctx, moved) else "rescheduled"
    return ToolEffect(confirmed_appointment=moved, appointment_action=action)


def progress(ctx: ToolContext, extra: dict[str, Any] | None = None) -> str:
    slots = ctx.state.booking_slots.model_copy(update=extra or {})
    filled = ", ".join(f"{k}={v}" for k, v in slots.filled().items()) or "nothing yet"
    missing = slots.missing()
    need = ", ".join(missing) if missing else "nothing: read it back and book"
    return f"Booking so far: {filled}. Still needed: {need}."
