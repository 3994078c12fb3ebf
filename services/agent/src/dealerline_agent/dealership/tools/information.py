"""Information tools: FAQ answers, the services offered, and the opening hours."""

from __future__ import annotations

from datetime import date, timedelta

from ..context import ToolContext
from ..effects import ToolEffect
from ..parsing import parse_date, say_date, say_time
from ..views import ServiceInfo
from .args import HoursArgs, NoArgs, SearchFaqArgs
from .replies import Result, today, zone

__all__ = ["get_dealership_hours", "list_services", "search_faq"]

_HOLIDAYS_AHEAD = timedelta(days=90)


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
            day = parse_date(args.date, today(ctx))
        except ValueError as exc:
            return (f"ERROR: {exc}.", ToolEffect())
        return ((await repo.hours_on(day)).describe() + ".", ToolEffect())
    profile = await repo.profile()
    this_day = today(ctx)
    week = "; ".join(h.describe() for h in await repo.weekly_hours())
    holidays = await repo.holidays(this_day, this_day + _HOLIDAYS_AHEAD)
    closed = "; ".join(f"{say_date(d)} ({name})" for d, name in holidays) or "none"
    right_now = await _open_now(ctx, this_day)
    where = f" Address: {profile.address}." if profile.address else ""
    return (
        f"HOURS: {week}. Closed on upcoming holidays: {closed}. Right now: {right_now}.{where}",
        ToolEffect(),
    )


async def _open_now(ctx: ToolContext, this_day: date) -> str:
    now = ctx.clock().astimezone(zone(ctx))
    hours = await ctx.repo.hours_on(this_day)
    if hours.closed or hours.opens is None or hours.closes is None:
        return "closed today"
    if hours.opens <= now.time() < hours.closes:
        return f"open now, until {say_time(hours.closes)}"
    return "closed right now"
