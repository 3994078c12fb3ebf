"""The scheduling rules: which start times a service can be booked at.

``Appointments.book`` and ``reschedule`` check a time with the same rules that offer it
here, so what is offered can be booked:
- opening hours are wall-clock times in the dealership's timezone; each day's slots are
  built on the wall clock and converted with zoneinfo, so a DST change moves nothing,
  and a wall time that does not exist that day (spring forward) is skipped;
- a holiday or a closed weekday has no slots; a job must end by closing time;
- nothing earlier than ``clock() + min_notice``;
- a slot is free when one of the bays that can do the service has room: fewer
  overlapping *booked* jobs at the busiest moment of the slot than its capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from dealerline_common.db.models import Appointment, AppointmentStatus, ServiceBay, ServiceType

from ..views import ServiceInfo
from .catalog import Catalog
from .errors import aware
from .hours import Calendar, hours_on
from .store import Store

__all__ = ["Scheduling", "bays_for"]

_MAX_SEARCH_DAYS = 21

Intervals = dict[int, list[tuple[datetime, datetime]]]  # bay id -> booked (start, end)


@dataclass
class _Window:
    """One open day: the slot starts on the wall clock and the closing time (UTC)."""

    starts: list[datetime]  # aware, UTC
    closes: datetime  # aware, UTC


class Scheduling:
    """Free start times, and why a time is not free."""

    def __init__(
        self,
        store: Store,
        calendar: Calendar,
        catalog: Catalog,
        *,
        slot_minutes: int,
        min_notice: timedelta,
    ) -> None:
        if slot_minutes <= 0 or 60 * 24 % slot_minutes:
            raise ValueError("slot_minutes must divide a day (e.g. 15, 30, 60)")
        self.store = store
        self.calendar = calendar
        self.catalog = catalog
        self.slot = timedelta(minutes=slot_minutes)
        self.min_notice = min_notice

    async def availability(
        self, service: str | ServiceInfo, day: date, after: time | None = None
    ) -> list[datetime]:
        """Free start times for ``service`` on ``day`` (aware, dealership timezone),
        earliest first; ``after`` keeps only starts at or after that local time."""
        svc = await self.catalog.resolve(service)
        tz = await self.calendar.timezone()
        async with self.store.reading() as session:
            starts = await self._free_starts(session, svc, day, tz)
        local = [s.astimezone(tz) for s in starts]
        if after is not None:
            local = [s for s in local if s.time() >= after]
        return local

    async def is_available(self, service: str | ServiceInfo, start: datetime) -> bool:
        return await self.unavailable_reason(service, start) is None

    async def unavailable_reason(self, service: str | ServiceInfo, start: datetime) -> str | None:
        """None when ``service`` can be booked at ``start``; else why not (closed, a
        holiday, too soon, past closing, every capable bay busy)."""
        svc = await self.catalog.resolve(service)
        tz = await self.calendar.timezone()
        start_utc = aware(start).astimezone(UTC)
        async with self.store.reading() as session:
            if await self.bay_for(session, svc, start_utc, tz) is not None:
                return None
            return await self.why_unavailable(session, svc, start_utc, tz)

    async def alternatives(
        self, service: str | ServiceInfo, start: datetime, limit: int = 3
    ) -> list[datetime]:
        """Free starts nearest to ``start``: the closest ones that day, else the first ones
        of the next day with room (searching three weeks)."""
        svc = await self.catalog.resolve(service)
        tz = await self.calendar.timezone()
        wanted = aware(start).astimezone(tz)
        same_day = await self.availability(svc, wanted.date())
        if same_day:
            nearest = sorted(same_day, key=lambda s: (abs(s - wanted), s))[:limit]
            return sorted(nearest)
        return await self.next_available(svc, wanted.date() + timedelta(days=1), limit)

    async def next_available(
        self, service: str | ServiceInfo, from_day: date, limit: int = 3
    ) -> list[datetime]:
        """The first ``limit`` free starts on the first day from ``from_day`` that has any."""
        svc = await self.catalog.resolve(service)
        for offset in range(_MAX_SEARCH_DAYS):
            found = await self.availability(svc, from_day + timedelta(days=offset))
            if found:
                return found[:limit]
        return []

    async def bay_for(
        self,
        session: AsyncSession,
        svc: ServiceInfo,
        start: datetime,
        tz: ZoneInfo,
        *,
        ignore_appointment: int | None = None,
    ) -> ServiceBay | None:
        """The bay to book ``svc`` at ``start`` (UTC) in, or None when it cannot be booked
        then (closed, past, too close to closing, or every capable bay full)."""
        local = start.astimezone(tz)
        window = await self._window(session, local.date(), tz)
        duration = timedelta(minutes=svc.duration_minutes)
        if window is None or not window.starts:
            return None
        if start < window.starts[0] or start + duration > window.closes:
            return None
        if start < self.store.now() + self.min_notice:
            return None
        bays = await bays_for(session, svc.id)
        booked = await _booked(
            session, [b.id for b in bays], start, start + duration, ignore=ignore_appointment
        )
        return _free_bay(bays, booked, start, start + duration)

    async def why_unavailable(
        self, session: AsyncSession, svc: ServiceInfo, start: datetime, tz: ZoneInfo
    ) -> str:
        """Why ``svc`` cannot be booked at ``start`` (UTC), for the caller to hear."""
        local = start.astimezone(tz)
        hours = await hours_on(session, local.date())
        when = f"{local:%A %Y-%m-%d %H:%M}"
        if hours.holiday:
            return f"closed on {when} ({hours.holiday})"
        if hours.closed:
            return f"closed on {local:%A}s"
        if start < self.store.now() + self.min_notice:
            return f"{when} is in the past or too soon to book"
        window = await self._window(session, local.date(), tz)
        duration = timedelta(minutes=svc.duration_minutes)
        if window is None or not window.starts or start < window.starts[0]:
            return f"{when} is before opening time"
        if start + duration > window.closes:
            return (
                f"{svc.name} takes {svc.duration_minutes} minutes and would run past closing time"
            )
        if not await bays_for(session, svc.id):
            return f"no bay is set up for {svc.name}"
        return f"every bay that does {svc.name} is booked at {when}"

    async def _window(self, session: AsyncSession, day: date, tz: ZoneInfo) -> _Window | None:
        hours = await hours_on(session, day)
        if hours.closed or hours.opens is None or hours.closes is None:
            return None
        closes = _local_instant(day, hours.closes, tz)
        if closes is None:  # closing time skipped by DST: the hour after it
            closes = datetime.combine(day, hours.closes, tzinfo=tz).astimezone(UTC)
        starts: list[datetime] = []
        wall = datetime.combine(day, hours.opens)
        end_wall = datetime.combine(day, hours.closes)
        while wall < end_wall:
            instant = _local_instant(day, wall.time(), tz)
            if instant is not None:
                starts.append(instant)
            wall += self.slot
        return _Window(starts=starts, closes=closes)

    async def _free_starts(
        self, session: AsyncSession, svc: ServiceInfo, day: date, tz: ZoneInfo
    ) -> list[datetime]:
        window = await self._window(session, day, tz)
        if window is None or not window.starts:
            return []
        duration = timedelta(minutes=svc.duration_minutes)
        earliest = self.store.now() + self.min_notice
        candidates = [s for s in window.starts if s >= earliest and s + duration <= window.closes]
        if not candidates:
            return []
        bays = await bays_for(session, svc.id)
        booked = await _booked(
            session, [b.id for b in bays], candidates[0], candidates[-1] + duration
        )
        return [s for s in candidates if _free_bay(bays, booked, s, s + duration) is not None]


async def bays_for(
    session: AsyncSession, service_type_id: int, *, lock: bool = False
) -> list[ServiceBay]:
    """The bays that can do the service, in id order; ``lock`` takes their rows for update
    (this serialises bookings of the same bays in PostgreSQL)."""
    query: Select[ServiceBay] = (
        select(ServiceBay)
        .join(ServiceBay.service_types)
        .where(ServiceType.id == service_type_id)
        .order_by(ServiceBay.id)
    )
    if lock:
        query = query.with_for_update(of=ServiceBay)
    return list((await session.execute(query)).scalars())


async def _booked(
    session: AsyncSession,
    bay_ids: list[int],
    start: datetime,
    end: datetime,
    *,
    ignore: int | None = None,
) -> Intervals:
    """Booked intervals per bay that overlap [start, end)."""
    if not bay_ids:
        return {}
    query = select(Appointment.bay_id, Appointment.start_at, Appointment.end_at).where(
        Appointment.bay_id.in_(bay_ids),
        Appointment.status == AppointmentStatus.BOOKED,
        Appointment.start_at < end,
        Appointment.end_at > start,
    )
    if ignore is not None:
        query = query.where(Appointment.id != ignore)
    out: Intervals = {}
    for bay_id, s, e in (await session.execute(query)).all():
        out.setdefault(bay_id, []).append((s, e))
    return out


def _local_instant(day: date, wall: time, tz: ZoneInfo) -> datetime | None:
    """``day`` at wall-clock ``wall`` in ``tz`` as UTC, or None if the clocks skip it."""
    local = datetime.combine(day, wall, tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return instant


def _peak(intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> int:
    """The most intervals running at once anywhere in [start, end)."""
    points = {max(s, start) for s, e in intervals if s < end and e > start}
    return max(
        (sum(1 for s, e in intervals if s <= p < e) for p in points),
        default=0,
    )


def _free_bay(
    bays: list[ServiceBay], booked: Intervals, start: datetime, end: datetime
) -> ServiceBay | None:
    for bay in bays:
        if _peak(booked.get(bay.id, []), start, end) < bay.capacity:
            return bay
    return None
