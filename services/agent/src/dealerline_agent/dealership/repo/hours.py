"""The dealership's profile and timezone, its weekly opening hours and its holidays."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dealerline_common.db.models import DealershipProfile, Holiday, OpeningHours

from ..views import DayHours, Profile, WeekdayHours
from .store import Store

__all__ = ["Calendar", "hours_on"]


class Calendar:
    """When the dealership is open, in its own timezone."""

    def __init__(
        self, store: Store, default_timezone: str, default_name: str = "the dealership"
    ) -> None:
        self.store = store
        self.default_timezone = default_timezone
        self.default_name = default_name

    async def profile(self) -> Profile:
        """The profile row as it is now (read afresh each time: a manager's change holds
        from the next read on); the defaults when the database has no profile yet."""
        async with self.store.reading() as session:
            row = (
                await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))
            ).scalar()
        if row is None:
            return Profile(name=self.default_name, timezone=self.default_timezone)
        return Profile(
            name=row.name,
            timezone=row.timezone,
            address=row.address,
            phone=row.phone,
            service_desk_email=row.service_desk_email,
            assistant_name=row.assistant_name,
            persona=row.persona,
            voice=row.voice,
        )

    async def timezone(self) -> ZoneInfo:
        name = (await self.profile()).timezone
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise RuntimeError(f"the dealership's timezone {name!r} is not a known zone") from None

    async def today(self) -> date:
        return self.store.now().astimezone(await self.timezone()).date()

    async def weekly_hours(self) -> list[WeekdayHours]:
        """Monday to Sunday; a weekday with no row is closed."""
        async with self.store.reading() as session:
            rows = {r.weekday: r for r in (await session.execute(select(OpeningHours))).scalars()}
        out = []
        for weekday in range(7):
            row = rows.get(weekday)
            if row is None or row.closed:
                out.append(WeekdayHours(weekday, None, None))
            else:
                out.append(WeekdayHours(weekday, row.opens_at, row.closes_at))
        return out

    async def hours_on(self, day: date) -> DayHours:
        async with self.store.reading() as session:
            return await hours_on(session, day)

    async def holidays(self, start: date, end: date) -> list[tuple[date, str]]:
        """Holidays from ``start`` to ``end`` inclusive."""
        async with self.store.reading() as session:
            rows = await session.execute(
                select(Holiday.date, Holiday.name)
                .where(Holiday.date >= start, Holiday.date <= end)
                .order_by(Holiday.date)
            )
            return [(d, n) for d, n in rows.all()]


async def hours_on(session: AsyncSession, day: date) -> DayHours:
    """The hours of ``day`` read in ``session``: a holiday or a closed weekday is closed."""
    holiday = (await session.execute(select(Holiday.name).where(Holiday.date == day))).scalar()
    if holiday is not None:
        return DayHours(day, None, None, holiday=holiday)
    row = (
        await session.execute(select(OpeningHours).where(OpeningHours.weekday == day.weekday()))
    ).scalar()
    if row is None or row.closed:
        return DayHours(day, None, None)
    return DayHours(day, row.opens_at, row.closes_at)
