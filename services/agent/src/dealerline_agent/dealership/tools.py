"""The agent's tools: what the LLM can look up and do at the dealership.

Every tool
- takes a pydantic argument schema (what the LLM sees) plus the RunnableConfig that
  LangChain injects (never part of the schema), whose ``configurable["tool_context"]``
  is the turn's :class:`~.context.ToolContext`;
- returns ``(content, artifact)``: ``content`` is short plain text with facts only (the
  LLM writes every word the caller hears); failures start with ``ERROR:`` and say what to
  ask the caller; ``artifact`` is a :class:`~.effects.ToolEffect` as JSON, which the graph
  applies to the conversation state (tools only read ``ctx.state``);
- turns the repository's refusals into ``ERROR:`` content, and a database outage into an
  ``ERROR:`` that tells the LLM to offer a person or a callback instead of failing the turn.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common import tracing
from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationRequest, HumanCallStatus
from dealerline_common.state import AppointmentInfo, BackgroundTask, CustomerInfo, TaskStatus

from .context import ToolContext, tool_context
from .effects import AppointmentAction, CallbackTaken, ToolEffect
from .parsing import parse_date, parse_time, say_date, say_time, say_when
from .repo import DealershipError, SlotUnavailable
from .views import ServiceInfo

__all__ = ["build_tools", "tool_names"]

log = get_logger(__name__)

Result = tuple[str, ToolEffect]
A = TypeVar("A", bound=BaseModel)

_MAX_LISTED_SLOTS = 8
_HOLIDAYS_AHEAD = timedelta(days=90)
_ACTIVE_ESCALATION = frozenset(
    {
        HumanCallStatus.CALLING,
        HumanCallStatus.RINGING,
        HumanCallStatus.WAITING_CONFIRMATION,
        HumanCallStatus.CONFIRMED,
        HumanCallStatus.IN_CONFERENCE,
    }
)
_NOT_IDENTIFIED = (
    "ERROR: the caller is not identified yet. Use lookup_customer (caller ID, phone or "
    "name) or create_customer first."
)
_SYSTEM_DOWN = (
    "ERROR: the dealership system is not responding right now. Apologise, and offer to "
    "connect the caller with a team member (request_human_agent) or to take a message."
)


# ---------------------------------------------------------------------- argument schemas


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class LookupCustomerArgs(_Args):
    phone: str | None = Field(default=None, description="Phone number the caller gave, any format.")
    name: str | None = Field(default=None, description="Full or partial name.")


class CreateCustomerArgs(_Args):
    name: str = Field(description="The caller's full name.")
    phone: str | None = Field(
        default=None, description="Phone number; leave empty to use the caller ID."
    )
    email: str | None = Field(default=None, description="Email address, if given.")


class UpdateCustomerArgs(_Args):
    name: str | None = Field(default=None, description="Corrected full name.")
    email: str | None = Field(default=None, description="New email address.")
    phone: str | None = Field(default=None, description="New phone number.")


class VehicleArgs(_Args):
    make: str | None = Field(default=None, description="e.g. Toyota (needed for a new car).")
    model: str | None = Field(default=None, description="e.g. Camry (needed for a new car).")
    year: int | None = Field(default=None, description="Model year, e.g. 2019.")
    vin: str | None = Field(default=None, description="17-character VIN, if the caller has it.")
    plate: str | None = Field(default=None, description="License plate.")
    mileage: int | None = Field(default=None, description="Odometer miles.")
    vehicle_id: int | None = Field(
        default=None, description="Id of a vehicle on file, to update that one."
    )


SlotName = Literal["service", "date", "time", "vehicle_id", "vehicle", "notes"]


class SetSlotArgs(_Args):
    slot: SlotName = Field(description="Which part of the booking.")
    value: str = Field(
        description="service: a service name; date: YYYY-MM-DD; time: HH:MM (24 h); "
        "vehicle_id: id of a vehicle on file; vehicle: the caller's description; notes: text."
    )


class ClearSlotArgs(_Args):
    slot: SlotName | Literal["all"] = Field(description='A slot name, or "all".')


class CheckAvailabilityArgs(_Args):
    service: str = Field(description="Service name, e.g. Synthetic Oil Change.")
    date: str = Field(description="YYYY-MM-DD.")
    time: str | None = Field(default=None, description="HH:MM (24 h), to check one time.")


class BookArgs(_Args):
    confirmed: bool = Field(
        description="True only after you read back service, day, time and vehicle and the "
        "caller said yes."
    )


class RescheduleArgs(_Args):
    appointment_id: int = Field(description="From list_appointments.")
    date: str = Field(description="New date, YYYY-MM-DD.")
    time: str = Field(description="New time, HH:MM (24 h).")
    confirmed: bool = Field(description="True only after the caller agreed to the read-back.")


class CancelArgs(_Args):
    appointment_id: int = Field(description="From list_appointments.")
    confirmed: bool = Field(description="True only after the caller confirmed the cancellation.")


class SearchFaqArgs(_Args):
    query: str = Field(description="The caller's question, in their words.")


class HoursArgs(_Args):
    date: str | None = Field(default=None, description="YYYY-MM-DD, for one day's hours.")


class HumanArgs(_Args):
    reason: str = Field(description="Why the caller wants a person, in a few words.")


class CallbackArgs(_Args):
    preferred_window: str = Field(
        description='When the caller wants to be called back, in their words, e.g. "tomorrow '
        'morning" or "after 5 pm today".'
    )
    reason: str = Field(description="What the callback is about, in a few words.")


class EndCallArgs(_Args):
    reason: str | None = Field(default=None, description="Why the call is ending.")


# ---------------------------------------------------------------------- shared helpers


def _zone(ctx: ToolContext) -> ZoneInfo:
    return ZoneInfo(ctx.timezone)


def _today(ctx: ToolContext) -> date:
    return ctx.clock().astimezone(_zone(ctx)).date()


def _local(ctx: ToolContext, day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=_zone(ctx))


def _slot_list(slots: list[datetime]) -> str:
    shown = ", ".join(say_time(s) for s in slots[:_MAX_LISTED_SLOTS])
    more = len(slots) - _MAX_LISTED_SLOTS
    return f"{shown} (and {more} later)" if more > 0 else shown


def _alternatives(slots: list[datetime]) -> str:
    if not slots:
        return "No free time in the next three weeks; offer a team member instead."
    days = {s.date() for s in slots}
    if len(days) == 1:
        return f"Nearest free times on {say_date(slots[0])}: {_slot_list(slots)}."
    return "Nearest free times: " + ", ".join(say_when(s) for s in slots) + "."


def _appointment_line(a: AppointmentInfo) -> str:
    vehicle = f" | {a.vehicle}" if a.vehicle else ""
    return f"appointment_id={a.id} | {a.service} | {say_when(a.start)}{vehicle}"


def _customer_line(c: CustomerInfo) -> str:
    vehicles = "; ".join(f"vehicle_id={v.id} {v.describe()}" for v in c.vehicles) or "none"
    email = "on file" if c.email else "none"
    return f"customer_id={c.id} | {c.name} | vehicles: {vehicles} | email: {email}"


def _keep_returning(ctx: ToolContext, info: CustomerInfo) -> CustomerInfo:
    """A customer re-read during the call keeps the 'known before this call' flag."""
    current = ctx.state.customer
    if current is not None and current.id == info.id:
        return info.model_copy(update={"returning": current.returning})
    return info


def _booking_key(customer_id: int, service: str, start: datetime, vehicle: str) -> str:
    """The same booking request (retried, or replayed after a barge-in) gets the same key."""
    raw = f"{customer_id}|{service.lower()}|{start.astimezone(UTC).isoformat()}|{vehicle}"
    return "book:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


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


def _already_confirmed(ctx: ToolContext, appt: AppointmentInfo) -> bool:
    """The call's state already holds ``appt`` as it is now: an earlier turn booked or
    moved it and this request changed nothing, so there is nothing new to announce. (A
    turn replayed before its state was stored does not see it, and announces again under
    the same event id.)"""
    current = ctx.state.confirmed_appointment
    return current is not None and current.id == appt.id and current.start == appt.start


def _progress(ctx: ToolContext, extra: dict[str, Any] | None = None) -> str:
    slots = ctx.state.booking_slots.model_copy(update=extra or {})
    filled = ", ".join(f"{k}={v}" for k, v in slots.filled().items()) or "nothing yet"
    missing = slots.missing()
    need = ", ".join(missing) if missing else "nothing: read it back and book"
    return f"Booking so far: {filled}. Still needed: {need}."


# ---------------------------------------------------------------------- customers


async def lookup_customer(ctx: ToolContext, args: LookupCustomerArgs) -> Result:
    repo = ctx.repo
    if args.name and not args.phone:
        found = await repo.find_customers_by_name(args.name)
        if not found:
            return (
                "NOT_FOUND: no customer with that name. Ask for the phone number on file, "
                "or create a profile (create_customer).",
                ToolEffect(),
            )
        if len(found) > 1:
            return (
                f"MULTIPLE: {len(found)} customers match that name. Ask for the phone number "
                "on file to find the right one.",
                ToolEffect(),
            )
        customer = found[0]
    else:
        phone = args.phone or ctx.state.caller_phone
        if not phone:
            return (
                "ERROR: no caller ID on this call. Ask for the phone number on file or the "
                "caller's name.",
                ToolEffect(),
            )
        match = await repo.customer_by_phone(phone)
        if match is None:
            which = "that number" if args.phone else "the caller ID"
            return (
                f"NOT_FOUND: no customer with {which}. Ask for their name to look them up "
                "or to create a profile (create_customer).",
                ToolEffect(),
            )
        customer = match
    customer = _keep_returning(ctx, customer)
    upcoming = await repo.upcoming_appointments(customer.id)
    booked = "; ".join(_appointment_line(a) for a in upcoming) or "none"
    return (
        f"FOUND: {_customer_line(customer)} | upcoming appointments: {booked}",
        ToolEffect(customer=customer),
    )


async def create_customer(ctx: ToolContext, args: CreateCustomerArgs) -> Result:
    current = ctx.state.customer
    if current is not None:
        return (
            f"ERROR: the caller is already identified as {current.name} "
            f"(customer_id={current.id}). Use update_customer to change their details.",
            ToolEffect(),
        )
    phone = args.phone or ctx.state.caller_phone
    customer = await ctx.repo.create_customer(args.name, phone, args.email)
    return (f"CREATED: {_customer_line(customer)}", ToolEffect(customer=customer))


async def update_customer(ctx: ToolContext, args: UpdateCustomerArgs) -> Result:
    current = ctx.state.customer
    if current is None:
        return (_NOT_IDENTIFIED, ToolEffect())
    if args.name is None and args.email is None and args.phone is None:
        return ("ERROR: nothing to change; say which detail (name, email, phone).", ToolEffect())
    updated = await ctx.repo.update_customer(
        current.id, name=args.name, email=args.email, phone=args.phone
    )
    updated = _keep_returning(ctx, updated)
    return (f"UPDATED: {_customer_line(updated)}", ToolEffect(customer=updated))


async def add_or_update_vehicle(ctx: ToolContext, args: VehicleArgs) -> Result:
    current = ctx.state.customer
    if current is None:
        return (_NOT_IDENTIFIED, ToolEffect())
    vehicle, created = await ctx.repo.add_or_update_vehicle(
        current.id,
        make=args.make,
        model=args.model,
        year=args.year,
        vin=args.vin,
        plate=args.plate,
        mileage=args.mileage,
        vehicle_id=args.vehicle_id,
    )
    customer = _keep_returning(ctx, await ctx.repo.customer(current.id))
    effect = ToolEffect(customer=customer)
    note = ""
    slots = ctx.state.booking_slots
    if not slots.is_empty() and slots.vehicle_id is None:
        effect.booking_slots = {"vehicle_id": vehicle.id, "vehicle": vehicle.describe()}
        note = " Set as the vehicle of the booking in progress."
    verb = "ADDED" if created else "UPDATED"
    return (f"{verb}: vehicle_id={vehicle.id} {vehicle.describe()}.{note}", effect)


# ---------------------------------------------------------------------- booking slots


async def set_booking_slot(ctx: ToolContext, args: SetSlotArgs) -> Result:
    value: Any = args.value.strip()
    extra: dict[str, Any] = {}
    if not value:
        return ("ERROR: empty value; to remove a slot use clear_booking_slot.", ToolEffect())
    if args.slot == "service":
        value = (await ctx.repo.find_service(value)).name
    elif args.slot == "date":
        try:
            day = parse_date(value, _today(ctx))
        except ValueError as exc:
            return (f"ERROR: {exc}. Ask the caller which day.", ToolEffect())
        if day < _today(ctx):
            return (f"ERROR: {day.isoformat()} is in the past. Ask for another day.", ToolEffect())
        hours = await ctx.repo.hours_on(day)
        if hours.closed:
            return (f"ERROR: {hours.describe()}. Ask for another day.", ToolEffect())
        value = day.isoformat()
    elif args.slot == "time":
        try:
            value = parse_time(value).strftime("%H:%M")
        except ValueError as exc:
            return (f"ERROR: {exc}. Ask the caller what time.", ToolEffect())
    elif args.slot == "vehicle_id":
        customer = ctx.state.customer
        if customer is None:
            return (_NOT_IDENTIFIED, ToolEffect())
        own = {v.id: v for v in customer.vehicles}
        try:
            vehicle_id = int(value)
        except ValueError:
            vehicle_id = -1
        if vehicle_id not in own:
            listed = ", ".join(f"{v.id} ({v.describe()})" for v in customer.vehicles) or "none"
            return (
                f"ERROR: {value} is not one of the caller's vehicles (on file: {listed}). "
                "Use add_or_update_vehicle for a new one.",
                ToolEffect(),
            )
        value = vehicle_id
        extra["vehicle"] = own[vehicle_id].describe()
    elif args.slot == "vehicle":
        customer = ctx.state.customer
        words = set(value.lower().split())
        matches = [
            v
            for v in (customer.vehicles if customer else [])
            if v.model and set(v.model.lower().split()) <= words
        ]
        if len(matches) == 1:
            extra["vehicle_id"] = matches[0].id
    slots = {args.slot: value, **extra}
    return (f"SET: {args.slot}={value}. {_progress(ctx, slots)}", ToolEffect(booking_slots=slots))


async def clear_booking_slot(ctx: ToolContext, args: ClearSlotArgs) -> Result:
    if args.slot == "all":
        return ("CLEARED: the whole booking in progress.", ToolEffect(clear_booking=True))
    cleared: dict[str, Any] = {args.slot: None}
    if args.slot in ("vehicle", "vehicle_id"):
        cleared = {"vehicle": None, "vehicle_id": None}
    return (f"CLEARED: {args.slot}. {_progress(ctx, cleared)}", ToolEffect(booking_slots=cleared))


async def get_booking_progress(ctx: ToolContext, _args: NoArgs) -> Result:
    customer = ctx.state.customer
    who = f"{customer.name} (customer_id={customer.id})" if customer else "not identified"
    confirmed = ctx.state.confirmed_appointment
    done = f" Already booked this call: {_appointment_line(confirmed)}." if confirmed else ""
    return (f"Caller: {who}. {_progress(ctx)}{done}", ToolEffect())


# ---------------------------------------------------------------------- scheduling


async def check_availability(ctx: ToolContext, args: CheckAvailabilityArgs) -> Result:
    service = await ctx.repo.find_service(args.service)
    try:
        day = parse_date(args.date, _today(ctx))
        at = parse_time(args.time) if args.time else None
    except ValueError as exc:
        return (f"ERROR: {exc}.", ToolEffect())
    if day < _today(ctx):
        return (f"ERROR: {day.isoformat()} is in the past. Ask for another day.", ToolEffect())
    length = f"{service.name} ({service.duration_minutes} min, {service.price_text()})"
    if at is not None:
        start = _local(ctx, day, at)
        reason = await ctx.repo.unavailable_reason(service, start)
        if reason is None:
            slots = {"service": service.name, "date": day.isoformat(), "time": at.strftime("%H:%M")}
            return (
                f"AVAILABLE: {length} on {say_when(start)}.",
                ToolEffect(booking_slots=slots),
            )
        nearby = await ctx.repo.alternatives(service, start)
        return (
            f"UNAVAILABLE: {reason}. {_alternatives(nearby)}",
            ToolEffect(booking_slots={"service": service.name, "date": day.isoformat()}),
        )
    free = await ctx.repo.availability(service, day)
    if free:
        return (
            f"FREE TIMES for {length} on {say_date(day)}: {_slot_list(free)}.",
            ToolEffect(booking_slots={"service": service.name, "date": day.isoformat()}),
        )
    hours = await ctx.repo.hours_on(day)
    why = hours.describe() if hours.closed else f"nothing free on {say_date(day)}"
    nearby = await ctx.repo.next_available(service, day + timedelta(days=1))
    return (
        f"UNAVAILABLE: {why}. {_alternatives(nearby)}",
        ToolEffect(booking_slots={"service": service.name}),
    )


def _requested_start(ctx: ToolContext) -> datetime:
    slots = ctx.state.booking_slots
    if slots.date is None or slots.time is None:
        raise ValueError("date and time are needed")
    return _local(ctx, date.fromisoformat(slots.date), parse_time(slots.time))


async def book_appointment(ctx: ToolContext, args: BookArgs) -> Result:
    customer = ctx.state.customer
    if customer is None:
        return (_NOT_IDENTIFIED, ToolEffect())
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
    vehicle = slots.vehicle or ""
    if slots.vehicle_id is not None:
        own = next((v for v in customer.vehicles if v.id == slots.vehicle_id), None)
        vehicle = own.describe() if own else f"vehicle {slots.vehicle_id}"
    moving = slots.reschedule_appointment_id
    summary = f"{service.name} on {say_when(start)} for the {vehicle}"
    if not args.confirmed:
        verb = "move the appointment to" if moving else "book"
        return (
            f"NOT_BOOKED_YET: read back to the caller that you will {verb} {summary}, and "
            "call book_appointment with confirmed=true once they agree.",
            ToolEffect(),
        )
    if moving is not None:
        moved = await ctx.repo.reschedule(customer.id, moving, start)
        return (f"RESCHEDULED: {_appointment_line(moved)}", _moved_effect(ctx, moved))
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
            f"ERROR: not booked: {exc}. {_alternatives(exc.alternatives)} Ask the caller to "
            "pick one.",
            ToolEffect(booking_slots={"time": None}),
        )
    appt = booking.appointment
    status = "BOOKED" if booking.created else "ALREADY_BOOKED"
    until = say_time(appt.end)
    new = booking.created or not _already_confirmed(ctx, appt)
    return (
        f"{status}: {_appointment_line(appt)} until {until} | bay: {appt.bay}",
        ToolEffect(confirmed_appointment=appt, appointment_action="booked" if new else None),
    )


def _moved_effect(ctx: ToolContext, moved: AppointmentInfo) -> ToolEffect:
    action: AppointmentAction | None = None if _already_confirmed(ctx, moved) else "rescheduled"
    return ToolEffect(confirmed_appointment=moved, appointment_action=action)


async def list_appointments(ctx: ToolContext, _args: NoArgs) -> Result:
    customer = ctx.state.customer
    if customer is None:
        return (_NOT_IDENTIFIED, ToolEffect())
    upcoming = await ctx.repo.upcoming_appointments(customer.id)
    if not upcoming:
        return ("NONE: no upcoming appointments on file.", ToolEffect())
    lines = "\n".join(_appointment_line(a) for a in upcoming)
    return (f"UPCOMING ({len(upcoming)}):\n{lines}", ToolEffect())


async def reschedule_appointment(ctx: ToolContext, args: RescheduleArgs) -> Result:
    customer = ctx.state.customer
    if customer is None:
        return (_NOT_IDENTIFIED, ToolEffect())
    try:
        start = _local(ctx, parse_date(args.date, _today(ctx)), parse_time(args.time))
    except ValueError as exc:
        return (f"ERROR: {exc}.", ToolEffect())
    current = await ctx.repo.appointment(customer.id, args.appointment_id)
    if not args.confirmed:
        return (
            f"NOT_RESCHEDULED_YET: read back that the {current.service} on "
            f"{say_when(current.start)} moves to {say_when(start)}, and call again with "
            "confirmed=true once the caller agrees.",
            ToolEffect(),
        )
    try:
        moved = await ctx.repo.reschedule(customer.id, args.appointment_id, start)
    except SlotUnavailable as exc:
        return (
            f"ERROR: not moved: {exc}. {_alternatives(exc.alternatives)} Ask the caller to "
            "pick one.",
            ToolEffect(),
        )
    return (f"RESCHEDULED: {_appointment_line(moved)}", _moved_effect(ctx, moved))


async def cancel_appointment(ctx: ToolContext, args: CancelArgs) -> Result:
    customer = ctx.state.customer
    if customer is None:
        return (_NOT_IDENTIFIED, ToolEffect())
    current = await ctx.repo.appointment(customer.id, args.appointment_id)
    if not args.confirmed:
        return (
            f"NOT_CANCELLED_YET: confirm with the caller that they want to cancel the "
            f"{current.service} on {say_when(current.start)}, then call again with "
            "confirmed=true.",
            ToolEffect(),
        )
    cancelled = await ctx.repo.cancel(customer.id, args.appointment_id)
    return (
        f"CANCELLED: {_appointment_line(cancelled)}",
        ToolEffect(
            cancelled_appointment_id=cancelled.id,
            cancelled_appointment=cancelled,
            appointment_action="cancelled",
        ),
    )


# ---------------------------------------------------------------------- information


async def search_faq(ctx: ToolContext, args: SearchFaqArgs) -> Result:
    hits = await ctx.repo.search_faq(args.query)
    if not hits:
        return (
            "NO_MATCH: nothing in the FAQ about that. Do not guess; offer to connect the caller "
            "with a team member (request_human_agent).",
            ToolEffect(),
        )
    lines = "\n".join(
        f"{i}. (score {h.score:.1f}) Q: {h.question} A: {h.answer}" for i, h in enumerate(hits, 1)
    )
    return (f"FAQ results, best first:\n{lines}", ToolEffect())


def _service_line(s: ServiceInfo) -> str:
    price = "free" if s.price_max_cents == 0 else s.price_text()
    return f"{s.name}: {s.duration_minutes} min, {price}"


async def list_services(ctx: ToolContext, _args: NoArgs) -> Result:
    services = await ctx.repo.services()
    if not services:
        return ("ERROR: no services are set up. Offer a team member.", ToolEffect())
    return ("SERVICES:\n" + "\n".join(_service_line(s) for s in services), ToolEffect())


async def get_dealership_hours(ctx: ToolContext, args: HoursArgs) -> Result:
    repo = ctx.repo
    if args.date:
        try:
            day = parse_date(args.date, _today(ctx))
        except ValueError as exc:
            return (f"ERROR: {exc}.", ToolEffect())
        return ((await repo.hours_on(day)).describe() + ".", ToolEffect())
    profile = await repo.profile()
    today = _today(ctx)
    week = "; ".join(h.describe() for h in await repo.weekly_hours())
    holidays = await repo.holidays(today, today + _HOLIDAYS_AHEAD)
    closed = "; ".join(f"{say_date(d)} ({name})" for d, name in holidays) or "none"
    now = ctx.clock().astimezone(_zone(ctx))
    hours = await repo.hours_on(today)
    if hours.closed or hours.opens is None or hours.closes is None:
        right_now = "closed today"
    elif hours.opens <= now.time() < hours.closes:
        right_now = f"open now, until {say_time(hours.closes)}"
    else:
        right_now = "closed right now"
    where = f" Address: {profile.address}." if profile.address else ""
    return (
        f"HOURS: {week}. Closed on upcoming holidays: {closed}. Right now: {right_now}.{where}",
        ToolEffect(),
    )


# ---------------------------------------------------------------------- the call


async def request_human_agent(ctx: ToolContext, args: HumanArgs) -> Result:
    state = ctx.state
    status = state.escalation.status
    # The human-call status is authoritative; the flag alone counts only before the
    # escalation service has reported anything. After FAILED/COMPLETED a new one may start.
    if status in _ACTIVE_ESCALATION or (
        state.escalation_in_progress and status is HumanCallStatus.NONE
    ):
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
    task_id = uuid.uuid4().hex
    request = EscalationRequest(
        session_id=ctx.session_id,
        call_sid=state.call_sid or "",
        task_id=task_id,
        reason=reason,
        customer_name=state.customer.name if state.customer else None,
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


async def end_call(ctx: ToolContext, args: EndCallArgs) -> Result:
    log.info("end of call requested", session_id=ctx.session_id, reason=args.reason)
    return (
        "CALL_ENDING: say a short goodbye; the call ends after it.",
        ToolEffect(end_call=True),
    )


# ---------------------------------------------------------------------- the tool objects


def _make_tool(
    name: str,
    description: str,
    schema: type[A],
    impl: Callable[[ToolContext, A], Awaitable[Result]],
) -> BaseTool:
    async def run(config: RunnableConfig, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        ctx = tool_context(config)
        args = schema.model_validate(kwargs)
        try:
            with tracing.span(f"agent.tool {name}", session_id=ctx.session_id):
                content, effect = await impl(ctx, args)
        except DealershipError as exc:
            content, effect = f"ERROR: {exc}.", ToolEffect()
        except (SQLAlchemyError, OSError):
            log.exception("dealership database failed", tool=name, session_id=ctx.session_id)
            content, effect = _SYSTEM_DOWN, ToolEffect()
        log.info(
            "tool ran", tool=name, session_id=ctx.session_id, ok=not content.startswith("ERROR")
        )
        return content, effect.model_dump(mode="json")

    run.__name__ = name
    return StructuredTool.from_function(
        coroutine=run,
        name=name,
        description=description,
        args_schema=schema,
        response_format="content_and_artifact",
    )


_TOOLS: list[tuple[str, str, type[BaseModel], Callable[[ToolContext, Any], Awaitable[Result]]]] = [
    (
        "lookup_customer",
        "Find the caller's customer record. With no arguments it uses the caller ID; or pass "
        "the phone number they give, or their name. Do this before booking or changing "
        "appointments.",
        LookupCustomerArgs,
        lookup_customer,
    ),
    (
        "create_customer",
        "Create a customer record for a new caller once you have their name (the caller ID "
        "is used as phone unless they give another). Only after lookup_customer found nothing.",
        CreateCustomerArgs,
        create_customer,
    ),
    (
        "update_customer",
        "Change the identified caller's name, email or phone on file.",
        UpdateCustomerArgs,
        update_customer,
    ),
    (
        "add_or_update_vehicle",
        "Save the caller's vehicle: make, model and year for a new one; VIN, plate or "
        "mileage to complete one; vehicle_id to update a specific one. Needs an identified "
        "caller.",
        VehicleArgs,
        add_or_update_vehicle,
    ),
    (
        "set_booking_slot",
        "Record one detail of the service booking as soon as the caller gives it: service, "
        "date, time, vehicle_id (a car on file), vehicle (their description) or notes.",
        SetSlotArgs,
        set_booking_slot,
    ),
    (
        "clear_booking_slot",
        'Forget one booking detail the caller takes back, or "all" to drop the booking.',
        ClearSlotArgs,
        clear_booking_slot,
    ),
    (
        "get_booking_progress",
        "What the booking in progress has and still needs.",
        NoArgs,
        get_booking_progress,
    ),
    (
        "check_availability",
        "Check free appointment times for a service on a date, or whether one time is free "
        "(offers the nearest free times when it is not). Use before proposing a time.",
        CheckAvailabilityArgs,
        check_availability,
    ),
    (
        "book_appointment",
        "Book the appointment from the booking slots (service, date, time, vehicle). First "
        "call it with confirmed=false to get the read-back; confirmed=true only after the "
        "caller agreed to it.",
        BookArgs,
        book_appointment,
    ),
    (
        "list_appointments",
        "The identified caller's upcoming appointments with their ids.",
        NoArgs,
        list_appointments,
    ),
    (
        "reschedule_appointment",
        "Move one of the caller's appointments (id from list_appointments) to a new date and "
        "time; confirmed=true only after the caller agreed to the read-back.",
        RescheduleArgs,
        reschedule_appointment,
    ),
    (
        "cancel_appointment",
        "Cancel one of the caller's appointments (id from list_appointments); "
        "confirmed=true only after the caller confirmed.",
        CancelArgs,
        cancel_appointment,
    ),
    (
        "search_faq",
        "Answers to general questions (payment, loaners, warranty, directions, policies). "
        "Use it instead of guessing.",
        SearchFaqArgs,
        search_faq,
    ),
    (
        "list_services",
        "The services offered, with duration and price range.",
        NoArgs,
        list_services,
    ),
    (
        "get_dealership_hours",
        "Opening hours: the whole week with upcoming holidays and the address, or one date's "
        "hours.",
        HoursArgs,
        get_dealership_hours,
    ),
    (
        "request_human_agent",
        "Connect the caller with a team member when they ask for a person or you cannot "
        "help. The call to staff starts in the background; keep talking with the caller.",
        HumanArgs,
        request_human_agent,
    ),
    (
        "request_callback",
        "Take a callback request when nobody on the team could be reached, or when the "
        "caller asks to be called back: when they want the call (their words) and what it "
        "is about. Uses the caller ID (or the number on file) as the number to call.",
        CallbackArgs,
        request_callback,
    ),
    (
        "end_call",
        "End the call after the caller says goodbye or has nothing else.",
        EndCallArgs,
        end_call,
    ),
]


def build_tools() -> list[BaseTool]:
    """Fresh tool objects for one agent (they hold no state; context comes per call)."""
    return [_make_tool(name, desc, schema, impl) for name, desc, schema, impl in _TOOLS]


def tool_names() -> list[str]:
    return [name for name, *_ in _TOOLS]
