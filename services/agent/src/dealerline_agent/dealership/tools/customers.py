"""Customer tools: finding the caller's record, creating and correcting it, and saving
their vehicles.

A lookup by a spoken name or number finds the customer to book new things for, and says
nothing else about them (not even the name on file) until the caller is verified
(:mod:`..identity`); a lookup by the call's own caller ID may say the name. Changing the
record needs a verified caller, and a changed phone or email is told to the old one.
"""

from __future__ import annotations

from dealerline_common.db.phone import try_normalize_phone
from dealerline_common.logs import get_logger
from dealerline_common.state import CustomerInfo

from ..context import ToolContext
from ..effects import ToolEffect
from ..identity import caller_id_matches
from ..notices import contact_change_notices
from .args import CreateCustomerArgs, LookupCustomerArgs, UpdateCustomerArgs, VehicleArgs
from .replies import (
    VERIFICATION_REQUIRED,
    Result,
    appointment_line,
    customer_line,
    keep_returning,
    verified_customer,
)

__all__ = ["add_or_update_vehicle", "create_customer", "lookup_customer", "update_customer"]

log = get_logger(__name__)


async def lookup_customer(ctx: ToolContext, args: LookupCustomerArgs) -> Result:
    if args.name and not args.phone:
        found = await _by_name(ctx, args.name)
    else:
        found = await _by_phone(ctx, args.phone)
    if isinstance(found, str):
        return (found, ToolEffect())
    customer = keep_returning(ctx, found)
    if ctx.state.identity.verified_customer_id != customer.id:
        return (_unverified_line(ctx, customer), ToolEffect(customer=customer))
    upcoming = await ctx.repo.upcoming_appointments(customer.id)
    booked = "; ".join(appointment_line(a) for a in upcoming) or "none"
    return (
        f"FOUND: {customer_line(customer)} | upcoming appointments: {booked}",
        ToolEffect(customer=customer),
    )


def _unverified_line(ctx: ToolContext, customer: CustomerInfo) -> str:
    """What a lookup says before verification: the id to book with; the name only when
    the call's own caller ID is the number on file."""
    if caller_id_matches(ctx.state, customer):
        who = f"customer_id={customer.id} | {customer.name} (the caller ID is on file)"
    else:
        who = f"customer_id={customer.id} (a customer on file matches what the caller said)"
    return f"FOUND: {who} | {VERIFICATION_REQUIRED}"


async def _by_name(ctx: ToolContext, name: str) -> CustomerInfo | str:
    """The one customer with that name, or the reply that says why not."""
    found = await ctx.repo.find_customers_by_name(name)
    if not found:
        return (
            "NOT_FOUND: no customer with that name. Ask for the phone number on file, "
            "or create a profile (create_customer)."
        )
    if len(found) > 1:
        return (
            f"MULTIPLE: {len(found)} customers match that name. Ask for the phone number "
            "on file to find the right one."
        )
    return found[0]


async def _by_phone(ctx: ToolContext, given: str | None) -> CustomerInfo | str:
    """The customer with the number given (else the caller ID), or the reply that says
    why not."""
    phone = given or ctx.state.caller_phone
    if not phone:
        return (
            "ERROR: no caller ID on this call. Ask for the phone number on file or the "
            "caller's name."
        )
    match = await ctx.repo.customer_by_phone(phone)
    if match is None:
        which = "that number" if given else "the caller ID"
        return (
            f"NOT_FOUND: no customer with {which}. Ask for their name to look them up "
            "or to create a profile (create_customer)."
        )
    return match


async def create_customer(ctx: ToolContext, args: CreateCustomerArgs) -> Result:
    current = ctx.state.customer
    if current is not None:
        who = current.name if ctx.state.verified else "a customer on file"
        return (
            f"ERROR: the caller is already identified as {who} "
            f"(customer_id={current.id}). Use update_customer to change their details.",
            ToolEffect(),
        )
    phone = args.phone or ctx.state.caller_phone
    customer = await ctx.repo.create_customer(args.name, phone, args.email)
    # Nothing was on file before: the caller who created the record is its customer.
    identity = ctx.state.identity.model_copy(
        update={"verified_customer_id": customer.id, "method": "created_this_call"}
    )
    return (
        f"CREATED: {customer_line(customer)}",
        ToolEffect(customer=customer, identity=identity),
    )


async def update_customer(ctx: ToolContext, args: UpdateCustomerArgs) -> Result:
    current = verified_customer(ctx)
    if isinstance(current, str):
        return (current, ToolEffect())
    if args.name is None and args.email is None and args.phone is None:
        return ("ERROR: nothing to change; say which detail (name, email, phone).", ToolEffect())
    before = await ctx.repo.customer(current.id)
    updated = await ctx.repo.update_customer(
        current.id, name=args.name, email=args.email, phone=args.phone
    )
    updated = keep_returning(ctx, updated)
    note = await _tell_old_contacts(ctx, before, updated)
    return (f"UPDATED: {customer_line(updated)}{note}", ToolEffect(customer=updated))


async def _tell_old_contacts(ctx: ToolContext, before: CustomerInfo, after: CustomerInfo) -> str:
    """A notice to the old phone and email that they were replaced (the real customer
    hears of a change they did not make)."""
    jobs = contact_change_notices(
        ctx.session_id,
        ctx.turn_id,
        ctx.dealership_name,
        old_phone=try_normalize_phone(before.phone) if before.phone else None,
        new_phone=try_normalize_phone(after.phone) if after.phone else None,
        old_email=before.email,
        new_email=after.email,
    )
    if not jobs:
        return ""
    try:
        if ctx.publish_notification is None:
            raise RuntimeError("no notification publisher wired")
        for job in jobs:
            await ctx.publish_notification(job)
    except Exception:
        log.exception("contact change notice not sent", session_id=ctx.session_id)
        return " (The notice to the old contact details could not be sent.)"
    return " A notice was sent to the old contact details."


async def add_or_update_vehicle(ctx: ToolContext, args: VehicleArgs) -> Result:
    current = verified_customer(ctx)
    if isinstance(current, str):
        return (current, ToolEffect())
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
    customer = keep_returning(ctx, await ctx.repo.customer(current.id))
    effect = ToolEffect(customer=customer)
    note = ""
    slots = ctx.state.booking_slots
    if not slots.is_empty() and slots.vehicle_id is None:
        effect.booking_slots = {"vehicle_id": vehicle.id, "vehicle": vehicle.describe()}
        note = " Set as the vehicle of the booking in progress."
    verb = "ADDED" if created else "UPDATED"
    return (f"{verb}: vehicle_id={vehicle.id} {vehicle.describe()}.{note}", effect)
