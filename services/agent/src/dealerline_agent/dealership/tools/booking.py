"""Booking tools: the details of the booking in progress (slots), checking free times,
and booking the appointment once the caller agreed to the read-back."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dealerline_common.state import BookingSlots, CustomerInfo

from ..context import ToolContext
from ..effects import ToolEffect
from ..parsing import parse_date, parse_time, say_date, say_time, say_when
from ..repo import SlotUnavailable
from ..views import ServiceInfo
from .args import BookArgs, CheckAvailabilityArgs, ClearSlotArgs, NoArgs, SetSlotArgs
from .replies import (
    NOT_IDENTIFIED,
    ON_FILE,
    VERIFICATION_REQUIRED,
    Result,
    already_confirmed,
    alternatives_text,
    appointment_line,
    local,
    moved_effect,
    progress,
    recognised,
    slot_list,
    today,
    verified_customer,
)

__all__ = [
    "book_appointment",
    "check_availability",
    "clear_booking_slot",
    "get_booking_progress",
    "set_booking_slot",
]

# A slot's checked value and the slots it fills alongside, or the ERROR reply.
_Checked = tuple[Any, dict[str, Any]] | str


async def set_booking_slot(ctx: ToolContext, args: SetSlotArgs) -> Result:
    value = args.value.strip()
    if not value:
        return ("ERROR: empty value; to remove a slot use clear_booking_slot.", ToolEffect())
    checked = await _slot_value(ctx, args.slot, value)
    if isinstance(checked, str):
        return (checked, ToolEffect())
    clean, extra = checked
    slots = {args.slot: clean, **extra}
    return (f"SET: {args.slot}={clean}. {progress(ctx, slots)}", ToolEffect(booking_slots=slots))


async def _slot_value(ctx: ToolContext, slot: str, value: str) -> _Checked:
    if slot == "service":
        return (await ctx.repo.find_service(value)).name, {}
    if slot == "date":
        return await _date_value(ctx, value)
    if slot == "time":
        try:
            return parse_time(value).strftime("%H:%M"), {}
        except ValueError as exc:
            return f"ERROR: {exc}. Ask the caller what time."
    # The vehicles on file are the customer's: a verified caller picks one of them, and a
    # caller whose own caller ID is on file books one by its id (never told which car).
    if slot == "vehicle_id":
        if ctx.state.verified:
            return _vehicle_id_value(ctx.state.customer, value, describe=True)
        if recognised(ctx):
            return _vehicle_id_value(ctx.state.customer, value, describe=False)
        return verified_customer(ctx)  # the refusal
    if slot == "vehicle":
        return value, _vehicle_on_file(ctx.state.customer if ctx.state.verified else None, value)
    return value, {}


async def _date_value(ctx: ToolContext, value: str) -> _Checked:
    try:
        day = parse_date(value, today(ctx))
    except ValueError as exc:
        return f"ERROR: {exc}. Ask the caller which day."
    if day < today(ctx):
        return f"ERROR: {day.isoformat()} is in the past. Ask for another day."
    hours = await ctx.repo.hours_on(day)
    if hours.closed:
        return f"ERROR: {hours.describe()}. Ask for another day."
    return day.isoformat(), {}


def _vehicle_id_value(customer: CustomerInfo | None, value: str, *, describe: bool) -> _Checked:
    vehicles = customer.vehicles if customer else []
    own = {v.id: v for v in vehicles}
    try:
        vehicle_id = int(value)
    except ValueError:
        vehicle_id = -1
    if vehicle_id not in own:
        listed = ", ".join(f"{v.id} ({v.describe()})" for v in vehicles) or "none"
        if not describe:
            listed = ", ".join(str(v.id) for v in vehicles) or "none"
        return (
            f"ERROR: {value} is not one of the caller's vehicles (on file: {listed}). "
            "Use add_or_update_vehicle for a new one."
        )
    return vehicle_id, {"vehicle": own[vehicle_id].describe() if describe else ON_FILE}


def _vehicle_on_file(customer: CustomerInfo | None, description: str) -> dict[str, Any]:
    """The vehicle_id slot too, when the description names one car on file by model."""
    words = set(description.lower().split())
    matches = [
        v
        for v in (customer.vehicles if customer else [])
        if v.model and set(v.model.lower().split()) <= words
    ]
    return {"vehicle_id": matches[0].id} if len(matches) == 1 else {}


async def clear_booking_slot(ctx: ToolContext, args: ClearSlotArgs) -> Result:
    if args.slot == "all":
        return ("CLEARED: the whole booking in progress.", ToolEffect(clear_booking=True))
    cleared: dict[str, Any] = {args.slot: None}
    if args.slot in ("vehicle", "vehicle_id"):
        cleared = {"vehicle": None, "vehicle_id": None}
    return (f"CLEARED: {args.slot}. {progress(ctx, cleared)}", ToolEffect(booking_slots=cleared))


async def get_booking_progress(ctx: ToolContext, _args: NoArgs) -> Result:
    customer = ctx.state.customer
    who = "not identified"
    if customer is not None:
        known = customer.name if ctx.state.verified else "not verified"
        who = f"{known} (customer_id={customer.id})"
    confirmed = ctx.state.confirmed_appointment
    if confirmed is not None and not ctx.state.verified:
        confirmed = confirmed.model_copy(update={"vehicle": None})
    done = f" Already booked this call: {appointment_line(confirmed)}." if confirmed else ""
    return (f"Caller: {who}. {progress(ctx)}{done}", ToolEffect())


async def check_availability(ctx: ToolContext, args: CheckAvailabilityArgs) -> Result:
    service = await ctx.repo.find_service(args.service)
    try:
        day = parse_date(args.date, today(ctx))
        at = parse_time(args.time) if args.time else None
    except ValueError as exc:
        return (f"ERROR: {exc}.", ToolEffect())
    if day < today(ctx):
        return (f"ERROR: {day.isoformat()} is in the past. Ask for another day.", ToolEffect())
    length = f"{service.name} ({service.duration_minutes} min, {service.price_text()})"
    if at is not None:
        return await _check_one_time(ctx, service, local(ctx, day, at), length)
    free = await ctx.repo.availability(service, day)
    if free:
        return (
            f"FREE TIMES for {length} on {say_date(day)}: {slot_list(free)}.",
            ToolEffect(booking_slots={"service": service.name, "date": day.isoformat()}),
        )
    hours = await ctx.repo.hours_on(day)
    why = hours.describe() if hours.closed else f"nothing free on {say_date(day)}"
    nearby = await ctx.repo.next_available(service, day + timedelta(days=1))
    return (
        f"UNAVAILABLE: {why}. {alternatives_text(nearby)}",
        ToolEffect(booking_slots={"service": service.name}),
    )


async def _check_one_time(
    ctx: ToolContext, service: ServiceInfo, start: datetime, length: str
) -> Result:
    day = start.date().isoformat()
    reason = await ctx.repo.unavailable_reason(service, start)
    if reason is None:
        slots = {"service": service.name, "date": day, "time": start.strftime("%H:%M")}
        return (f"AVAILABLE: {length} on {say_when(start)}.", ToolEffect(booking_slots=slots))
    nearby = await ctx.repo.alternatives(service, start)
    return (
        f"UNAVAILABLE: {reason}. {alternatives_text(nearby)}",
        ToolEffect(booking_slots={"service": service.name, "date": day}),
    )


async def book_appointment(ctx: ToolContext, args: BookArgs) -> Result:
    customer = ctx.state.customer
    if customer is None:
        return (NOT_IDENTIFIED, ToolEffect())
    slots = ctx.state.booking_slots
    missing = slots.missing()
    if missing:
        return (
            f"ERROR: not booked, still missing: {', '.join(missing)}. Ask the caller, then "
            "set_booking_slot.",
            ToolEffect(),
        )
    service = await ctx.repo.find_service(slots.service or "")
    try:
        start = _requested_start(ctx)
    except ValueError as exc:
        return (
            f"ERROR: the booking's date or time is unreadable ({exc}); set it again.",
            ToolEffect(),
        )
    verified = ctx.state.verified
    vehicle = _vehicle_words(customer, slots) if verified else (slots.vehicle or ON_FILE)
    moving = slots.reschedule_appointment_id
    if not verified and (
        moving is not None or (slots.vehicle_id is not None and not recognised(ctx))
    ):
        return (VERIFICATION_REQUIRED, ToolEffect())
    if not args.confirmed:
        verb = "move the appointment to" if moving else "book"
        return (
            f"NOT_BOOKED_YET: read back to the caller that you will {verb} {service.name} on "
            f"{say_when(start)} for the {vehicle}, and call book_appointment with "
            "confirmed=true once they agree.",
            ToolEffect(),
        )
    if moving is not None:
        moved = await ctx.repo.reschedule(customer.id, moving, start)
        return (f"RESCHEDULED: {appointment_line(moved)}", moved_effect(ctx, moved))
    return await _book(ctx, customer, service, start, vehicle)


async def _book(
    ctx: ToolContext, customer: CustomerInfo, service: ServiceInfo, start: datetime, vehicle: str
) -> Result:
    """Book the confirmed slots; a repeated request finds the appointment it made."""
    slots = ctx.state.booking_slots
    key = _booking_key(customer.id, service.name, start, str(slots.vehicle_id or vehicle.lower()))
    try:
        booking = await ctx.repo.book(
            customer.id,
            service,
            start,
            vehicle_id=slots.vehicle_id,
            vehicle_description=None if slots.vehicle_id else slots.vehicle,
            notes=slots.notes,
            idempotency_key=key,
        )
    except SlotUnavailable as exc:
        return (
            f"ERROR: not booked: {exc}. {alternatives_text(exc.alternatives)} Ask the caller "
            "to pick one.",
            ToolEffect(booking_slots={"time": None}),
        )
    appt = booking.appointment
    # "Already booked" would confirm to an unverified caller that the customer has that
    # appointment (the key is the customer, service, time and car, not the call).
    status = "ALREADY_BOOKED" if not booking.created and ctx.state.verified else "BOOKED"
    until = say_time(appt.end)
    new = booking.created or not already_confirmed(ctx, appt)
    # An unverified caller hears the booking, not which car on file it is for.
    told = appt if ctx.state.verified else appt.model_copy(update={"vehicle": None})
    return (
        f"{status}: {appointment_line(told)} until {until} | bay: {appt.bay}",
        ToolEffect(confirmed_appointment=appt, appointment_action="booked" if new else None),
    )


def _requested_start(ctx: ToolContext) -> datetime:
    slots = ctx.state.booking_slots
    if slots.date is None or slots.time is None:
        raise ValueError("date and time are needed")
    return local(ctx, date.fromisoformat(slots.date), parse_time(slots.time))


def _vehicle_words(customer: CustomerInfo, slots: BookingSlots) -> str:
    """How the read-back names the vehicle: the car on file, else the caller's words."""
    if slots.vehicle_id is not None:
        own = next((v for v in customer.vehicles if v.id == slots.vehicle_id), None)
        return own.describe() if own else f"vehicle {slots.vehicle_id}"
    return slots.vehicle or ""


def _booking_key(customer_id: int, service: str, start: datetime, vehicle: str) -> str:
    """The same booking request (retried, or replayed after a barge-in) gets the same key."""
    raw = f"{customer_id}|{service.lower()}|{start.astimezone(UTC).isoformat()}|{vehicle}"
    return "book:" + hashlib.sha256(raw.encode()).hexdigest()[:40]
