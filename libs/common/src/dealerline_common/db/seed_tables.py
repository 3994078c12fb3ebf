"""Writing a seed file's reference data: the dealership profile, opening hours, holidays,
bays, service types, staff, FAQ, customers and their vehicles. Each row is matched by its
natural key (weekday, holiday date, bay/service name, staff phone or else email,
customer phone, VIN, FAQ question), only differing fields are written, and nothing absent from the file is
deleted."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from .models import (
    Customer,
    DealershipProfile,
    FaqEntry,
    Holiday,
    OpeningHours,
    ServiceBay,
    ServiceType,
    Staff,
    Vehicle,
)
from .seed_file import (
    WEEKDAY_NAMES,
    DealershipSpec,
    OpenHoursSpec,
    PriceSpec,
    SeedFile,
    VehicleSpec,
)
from .seed_report import SeedReport, sync_fields

__all__ = [
    "match_staff",
    "seed_bays",
    "seed_customers",
    "seed_faq",
    "seed_holidays",
    "seed_hours",
    "seed_profile",
    "seed_services",
    "seed_staff",
]


async def seed_profile(session: AsyncSession, s: DealershipSpec, report: SeedReport) -> None:
    row = (await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))).scalar()
    values = {
        "name": s.name,
        "timezone": s.timezone,
        "address": s.address,
        "phone": s.phone,
        "service_desk_email": s.service_desk_email,
        "assistant_name": s.assistant_name,
        "persona": s.persona,
        "voice": s.voice,
    }
    added = row is None
    if row is None:
        row = DealershipProfile()
        session.add(row)
    report["dealership"].count(added=added, changed=sync_fields(row, values))


async def seed_hours(session: AsyncSession, spec: SeedFile, report: SeedReport) -> None:
    rows = {r.weekday: r for r in (await session.execute(select(OpeningHours))).scalars()}
    for weekday, name in enumerate(WEEKDAY_NAMES):
        hours = spec.hours.get(name, "closed")
        if isinstance(hours, OpenHoursSpec):
            values: dict[str, Any] = {
                "opens_at": hours.open,
                "closes_at": hours.close,
                "closed": False,
            }
        else:
            values = {"opens_at": None, "closes_at": None, "closed": True}
        row = rows.get(weekday)
        added = row is None
        if row is None:
            row = OpeningHours(weekday=weekday)
            session.add(row)
        report["opening_hours"].count(added=added, changed=sync_fields(row, values))


async def seed_holidays(
    session: AsyncSession, spec: SeedFile, today: date, report: SeedReport
) -> None:
    rows = {r.date: r for r in (await session.execute(select(Holiday))).scalars()}
    for h in spec.holidays:
        for day in h.dates((today.year, today.year + 1)):
            row = rows.get(day)
            added = row is None
            if row is None:
                row = rows[day] = Holiday(date=day)
                session.add(row)
            report["holidays"].count(added=added, changed=sync_fields(row, {"name": h.name}))


async def seed_bays(
    session: AsyncSession, spec: SeedFile, report: SeedReport
) -> dict[str, ServiceBay]:
    rows = {r.name: r for r in (await session.execute(select(ServiceBay))).scalars()}
    for b in spec.bays:
        row = rows.get(b.name)
        added = row is None
        if row is None:
            row = rows[b.name] = ServiceBay(name=b.name)
            session.add(row)
        report["service_bays"].count(
            added=added, changed=sync_fields(row, {"capacity": b.capacity})
        )
    return rows


async def seed_services(
    session: AsyncSession, spec: SeedFile, bays: dict[str, ServiceBay], report: SeedReport
) -> dict[str, ServiceType]:
    rows = {
        r.name: r
        for r in (
            await session.execute(select(ServiceType).options(selectinload(ServiceType.bays)))
        ).scalars()
    }
    for s in spec.service_types:
        row = rows.get(s.name)
        added = row is None
        if row is None:
            row = rows[s.name] = ServiceType(name=s.name, bays=[])
            session.add(row)
        changed = sync_fields(
            row,
            {
                "description": s.description,
                "duration_minutes": s.duration_minutes,
                "price_min_cents": PriceSpec.cents(s.price.min),
                "price_max_cents": PriceSpec.cents(s.price.max),
                "active": s.active,
            },
        )
        if {b.name for b in row.bays} != set(s.bays):
            row.bays = [bays[name] for name in s.bays]
            changed = True
        report["service_types"].count(added=added, changed=changed)
    return rows


def match_staff(spec: SeedFile, rows: list[Staff]) -> list[Staff | None]:
    """The existing row each of the file's staff is (by phone, else by email; a row is
    matched once at most), None for a new person."""
    by_phone = {r.phone: r for r in rows}
    by_email = {r.email.lower(): r for r in rows if r.email}
    taken: set[int] = set()
    out: list[Staff | None] = []
    for s in spec.staff:
        row = by_phone.get(s.phone)
        if row is None and s.email:
            row = by_email.get(s.email.lower())
        if row is not None and id(row) in taken:
            row = None
        if row is not None:
            taken.add(id(row))
        out.append(row)
    return out


async def seed_staff(session: AsyncSession, spec: SeedFile, report: SeedReport) -> None:
    existing = list((await session.execute(select(Staff).order_by(Staff.id))).scalars())
    for s, row in zip(spec.staff, match_staff(spec, existing), strict=True):
        added = row is None
        if row is None:
            row = Staff(phone=s.phone)
            session.add(row)
        values = {
            "phone": s.phone,
            "name": s.name,
            "role": s.role,
            "email": s.email,
            "hunt_order": s.hunt_order,
            "on_duty": s.on_duty,
        }
        report["staff"].count(added=added, changed=sync_fields(row, values))


async def seed_faq(session: AsyncSession, spec: SeedFile, report: SeedReport) -> None:
    rows = {r.question: r for r in (await session.execute(select(FaqEntry))).scalars()}
    for f in spec.faq:
        row = rows.get(f.question)
        added = row is None
        if row is None:
            row = FaqEntry(question=f.question)
            session.add(row)
        values = {"answer": f.answer, "tags": list(f.tags)}
        report["faq_entries"].count(added=added, changed=sync_fields(row, values))


async def seed_customers(
    session: AsyncSession, spec: SeedFile, report: SeedReport
) -> tuple[dict[str, Customer], dict[str, Vehicle]]:
    customers = {
        r.phone: r
        for r in (
            await session.execute(select(Customer).options(selectinload(Customer.vehicles)))
        ).scalars()
        if r.phone
    }
    by_vin = {
        v.vin: v for v in (await session.execute(select(Vehicle))).scalars() if v.vin is not None
    }
    for c in spec.customers:
        row = customers.get(c.phone)
        added = row is None
        if row is None:
            row = customers[c.phone] = Customer(phone=c.phone, vehicles=[])
            session.add(row)
        report["customers"].count(
            added=added, changed=sync_fields(row, {"name": c.name, "email": c.email})
        )
        await session.flush()  # the customer's id, for its vehicles
        for v in c.vehicles:
            _seed_vehicle(session, row, v, by_vin, report)
    return customers, by_vin


def _seed_vehicle(
    session: AsyncSession,
    owner: Customer,
    v: VehicleSpec,
    by_vin: dict[str, Vehicle],
    report: SeedReport,
) -> None:
    """One of ``owner``'s vehicles: matched by VIN, or else (no VIN) by make, model and
    year among the owner's vehicles without a VIN."""
    vehicle = by_vin.get(v.vin) if v.vin else None
    if vehicle is None:
        vehicle = next(
            (
                own
                for own in owner.vehicles
                if own.vin is None and (own.make, own.model, own.year) == (v.make, v.model, v.year)
            ),
            None,
        )
    v_added = vehicle is None
    if vehicle is None:
        vehicle = Vehicle()
        session.add(vehicle)
        if v.vin:
            by_vin[v.vin] = vehicle
    values = {
        "customer_id": owner.id,
        "make": v.make,
        "model": v.model,
        "year": v.year,
        "vin": v.vin,
        "plate": v.plate,
        "mileage": v.mileage,
    }
    report["vehicles"].count(added=v_added, changed=sync_fields(vehicle, values))
