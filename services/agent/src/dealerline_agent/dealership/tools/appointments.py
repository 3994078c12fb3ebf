"""Appointment tools: the caller's upcoming appointments, moving one and cancelling one
(each change only after the caller agreed to the read-back). All three need a caller
verified as the customer (:mod:`..identity`): before that they say nothing about the
customer's appointments."""

from __future__ import annotations

from ..context import ToolContext
from ..effects import ToolEffect
from ..parsing import parse_date, parse_time, say_when
from ..repo import SlotUnavailable
from .args import CancelArgs, NoArgs, RescheduleArgs
from .replies import (
    Result,
    alternatives_text,
    appointment_line,
    local,
    moved_effect,
    today,
    verified_customer,
)

__all__ = ["cancel_appointment", "list_appointments", "reschedule_appointment"]


async def list_appointments(ctx: ToolContext, _args: NoArgs) -> Result:
    customer = verified_customer(ctx)
    if isinstance(customer, str):
        return (customer, ToolEffect())
    upcoming = await ctx.repo.upcoming_appointments(customer.id)
    if not upcoming:
        return ("NONE: no upcoming appointments on file.", ToolEffect())
    lines = "\n".join(appointment_line(a) for a in upcoming)
    return (f"UPCOMING ({len(upcoming)}):\n{lines}", ToolEffect())


async def reschedule_appointment(ctx: ToolContext, args: RescheduleArgs) -> Result:
    customer = verified_customer(ctx)
    if isinstance(customer, str):
        return (customer, ToolEffect())
    try:
        start = local(ctx, parse_date(args.date, today(ctx)), parse_time(args.time))
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
            f"ERROR: not moved: {exc}. {alternatives_text(exc.alternatives)} Ask the caller to "
            "pick one.",
            ToolEffect(),
        )
    return (f"RESCHEDULED: {appointment_line(moved)}", moved_effect(ctx, moved))


async def cancel_appointment(ctx: ToolContext, args: CancelArgs) -> Result:
    customer = verified_customer(ctx)
    if isinstance(customer, str):
        return (customer, ToolEffect())
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
        f"CANCELLED: {appointment_line(cancelled)}",
        ToolEffect(
            cancelled_appointment_id=cancelled.id,
            cancelled_appointment=cancelled,
            appointment_action="cancelled",
        ),
    )
