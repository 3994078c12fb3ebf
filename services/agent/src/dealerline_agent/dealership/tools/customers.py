"""Customer tools: finding the caller's record, creating and correcting it, and saving
their vehicles."""

from __future__ import annotations

from dealerline_common.state import CustomerInfo

from ..context import ToolContext
from ..effects import ToolEffect
from .args import CreateCustomerArgs, LookupCustomerArgs, UpdateCustomerArgs, VehicleArgs
from .replies import NOT_IDENTIFIED, Result, appointment_line, customer_line, keep_returning

__all__ = ["add_or_update_vehicle", "create_customer", "lookup_customer", "update_customer"]


async def lookup_customer(ctx: ToolContext, args: LookupCustomerArgs) -> Result:
    if args.name and not args.phone:
        found = await _by_name(ctx, args.name)
    else:
        found = await _by_phone(ctx, args.phone)
    if isinstance(found, str):
        return (found, ToolEffect())
    customer = keep_returning(ctx, found)
    upcoming = await ctx.repo.upcoming_appointments(customer.id)
    booked = "; ".join(appointment_line(a) for a in upcoming) or "none"
    return (
        f"FOUND: {customer_line(customer)} | upcoming appointments: {booked}",
        ToolEffect(customer=customer),
    )


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
        return (
            f"ERROR: the caller is already identified as {current.name} "
            f"(customer_id={current.id}). Use update_customer to change their details.",
            ToolEffect(),
        )
    phone = args.phone or ctx.state.caller_phone
    customer = await ctx.repo.create_customer(args.name, phone, args.email)
    return (f"CREATED: {customer_line(customer)}", ToolEffect(customer=customer))


async def update_customer(ctx: ToolContext, args: UpdateCustomerArgs) -> Result:
    current = ctx.state.customer
    if current is None:
        return (NOT_IDENTIFIED, ToolEffect())
    if args.name is None and args.email is None and args.phone is None:
        return ("ERROR: nothing to change; say which detail (name, email, phone).", ToolEffect())
    updated = await ctx.repo.update_customer(
        current.id, name=args.name, email=args.email, phone=args.phone
    )
    updated = keep_returning(ctx, updated)
    return (f"UPDATED: {customer_line(updated)}", ToolEffect(customer=updated))


async def add_or_update_vehicle(ctx: ToolContext, args: VehicleArgs) -> Result:
    current = ctx.state.customer
    if current is None:
        return (NOT_IDENTIFIED, ToolEffect())
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
