"""Placing a seed file's appointments: each is booked ``days_from_today`` days ahead at
its wall time, rolled forward day by day (up to :data:`ROLL_FORWARD_DAYS`) past closed
days, holidays and full bays, and matched on its ``key`` so reseeding moves nothing that
still fits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import (
    Appointment,
    AppointmentStatus,
    Customer,
    Holiday,
    OpeningHours,
    ServiceBay,
    ServiceType,
    Vehicle,
)
from .seed_file import AppointmentSpec, SeedError, SeedFile
from .seed_report import SeedReport, sync_fields

__all__ = ["ROLL_FORWARD_DAYS", "seed_appointments"]

ROLL_FORWARD_DAYS = 30


@dataclass(frozen=True)
class _OpenDays:
    """When the dealership is open: its weekly hours, its holiday dates, its timezone."""

    hours: dict[int, OpeningHours]
    holidays: set[date]
    tz: ZoneInfo

    def fits(self, day: date, start: datetime, duration: timedelta) -> bool:
        """Whether ``start`` (on the local ``day``) + ``duration`` lies within opening hours."""
        hours = self.hours.get(day.weekday())
        if day in self.holidays or hours is None or hours.closed:
            return False
        if not hours.opens_at or not hours.closes_at:
            return False
        local = start.astimezone(self.tz)
        closes = datetime.combine(local.date(), hours.closes_at, tzinfo=self.tz)
        return local.time() >= hours.opens_at and start + duration <= closes


async def seed_appointments(
    session: AsyncSession,
    spec: SeedFile,
    today: date,
    tz: ZoneInfo,
    customers: dict[str, Customer],
    vehicles: dict[str, Vehicle],
    services: dict[str, ServiceType],
    bays: dict[str, ServiceBay],
    report: SeedReport,
) -> None:
    hours = {r.weekday: r for r in (await session.execute(select(OpeningHours))).scalars()}
    holidays = set((await session.execute(select(Holiday.date))).scalars())
    open_days = _OpenDays(hours, holidays, tz)
    for a in spec.appointments:
        key = f"seed:{a.key}"
        row = (
            await session.execute(select(Appointment).where(Appointment.idempotency_key == key))
        ).scalar()
        service = services[a.service]
        bay = bays[a.bay] if a.bay else service.bays[0]
        duration = timedelta(minutes=service.duration_minutes)
        start = await _place(session, a, today, open_days, bay, duration, row)
        added = row is None
        if row is None:
            row = Appointment(idempotency_key=key, status=AppointmentStatus.BOOKED)
            session.add(row)
        values = {
            "customer_id": customers[a.customer_phone].id,
            "vehicle_id": vehicles[a.vehicle_vin.upper()].id if a.vehicle_vin else None,
            "service_type_id": service.id,
            "bay_id": bay.id,
            "start_at": start,
            "end_at": start + duration,
            "notes": a.notes,
        }
        report["appointments"].count(added=added, changed=sync_fields(row, values))
        await session.flush()


async def _place(
    session: AsyncSession,
    a: AppointmentSpec,
    today: date,
    open_days: _OpenDays,
    bay: ServiceBay,
    duration: timedelta,
    own: Appointment | None,
) -> datetime:
    """The first open day, from ``days_from_today`` on, with room in ``bay`` at the
    appointment's time (UTC); SeedError if none within :data:`ROLL_FORWARD_DAYS`."""
    for offset in range(ROLL_FORWARD_DAYS):
        day = today + timedelta(days=a.days_from_today + offset)
        candidate = datetime.combine(day, a.time, tzinfo=open_days.tz).astimezone(UTC)
        if not open_days.fits(day, candidate, duration):
            continue
        if await _bay_full(session, bay, candidate, candidate + duration, own):
            continue
        return candidate
    raise SeedError(
        f"appointment {a.key!r}: no open day with room in {bay.name!r} within "
        f"{ROLL_FORWARD_DAYS} days of day +{a.days_from_today} at {a.time:%H:%M}"
    )


async def _bay_full(
    session: AsyncSession,
    bay: ServiceBay,
    start: datetime,
    end: datetime,
    own: Appointment | None,
) -> bool:
    query = select(Appointment.id).where(
        Appointment.bay_id == bay.id,
        Appointment.status == AppointmentStatus.BOOKED,
        Appointment.start_at < end,
        Appointment.end_at > start,
    )
    if own is not None:
        query = query.where(Appointment.id != own.id)
    overlapping = len((await session.execute(query)).all())
    return overlapping >= bay.capacity
