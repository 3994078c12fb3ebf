"""Load dealership data from a YAML file (the demo: ``demo_dealership.yaml``).

Idempotent by design: every row is matched by its natural key (weekday, holiday date,
bay/service name, customer/staff phone, VIN, FAQ question, appointment ``key``), only
differing fields are written, and nothing absent from the file is deleted, so seeding
twice changes nothing and seeding a live database never loses a real booking.

The file is validated as a whole before anything is written (unknown keys, a service
naming a bay that does not exist, an invalid phone number…), and everything is written
in one transaction.
"""

from __future__ import annotations

import calendar
import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from .engine import SQLITE_IMMEDIATE, create_engine_from_url, session_factory
from .models import (
    Appointment,
    AppointmentStatus,
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
from .phone import normalize_phone

__all__ = ["DEMO_FILE", "SeedError", "SeedFile", "SeedReport", "load_seed_file", "reset", "seed"]

DEMO_FILE = Path(__file__).resolve().parent / "demo_dealership.yaml"

WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ROLL_FORWARD_DAYS = 30


class SeedError(ValueError):
    """The seed file is invalid or cannot be applied; the message says where."""


# ---------------------------------------------------------------------- the file's schema


def _wall_time(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 07:30 as the number 450: insist on a quoted "HH:MM".
    if isinstance(value, int | float):
        raise ValueError('write times as quoted "HH:MM" strings')
    return value


WallTime = Annotated[time, BeforeValidator(_wall_time)]


def _e164(value: Any) -> Any:
    return normalize_phone(str(value)) if value is not None else None


Phone = Annotated[str, BeforeValidator(_e164)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DealershipSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    timezone: str
    address: str | None = None
    phone: Phone | None = None
    service_desk_email: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name)") from None
        return value


class OpenHoursSpec(_Spec):
    open: WallTime
    close: WallTime

    @model_validator(mode="after")
    def _order(self) -> OpenHoursSpec:
        if self.open >= self.close:
            raise ValueError("open must be before close")
        return self


class HolidaySpec(_Spec):
    """A fixed date, a yearly date (month + day) or a yearly weekday rule (month +
    weekday + nth, where nth -1 is the last one of the month)."""

    name: str = Field(min_length=1, max_length=200)
    date: _dt.date | None = None  # `date` is also the field's name here
    month: int | None = Field(default=None, ge=1, le=12)
    day: int | None = Field(default=None, ge=1, le=31)
    weekday: Literal[WEEKDAY_NAMES] | None = None  # type: ignore[valid-type]
    nth: int | None = Field(default=None, ge=-1, le=5)

    @model_validator(mode="after")
    def _one_form(self) -> HolidaySpec:
        # dates() relies on these three shapes.
        fixed = self.date is not None and self.month is None
        yearly = self.date is None and self.month is not None and self.day is not None
        rule = (
            self.date is None
            and self.month is not None
            and self.day is None
            and self.weekday is not None
            and self.nth not in (None, 0)
        )
        if not (fixed or yearly or rule):
            raise ValueError(
                "give either date, or month + day, or month + weekday + nth (nth -1 = last)"
            )
        return self

    def dates(self, years: Iterable[int]) -> list[_dt.date]:
        """The holiday's dates in ``years`` (a fixed date: just that date)."""
        if self.date is not None:
            return [self.date]
        month = self.month or 1
        out = []
        for year in years:
            last = calendar.monthrange(year, month)[1]
            if self.day is not None:
                if self.day <= last:
                    out.append(date(year, month, self.day))
                continue
            target = WEEKDAY_NAMES.index(self.weekday or "monday")
            days = [date(year, month, d) for d in range(1, last + 1)]
            matching = [d for d in days if d.weekday() == target]
            nth = self.nth or 1
            index = nth - 1 if nth > 0 else nth
            if -len(matching) <= index < len(matching):
                out.append(matching[index])
        return out


class BaySpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    capacity: int = Field(default=1, ge=1)


class PriceSpec(_Spec):
    min: Decimal = Field(ge=0)
    max: Decimal = Field(ge=0)

    @field_validator("min", "max", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # 49.95 as a YAML float must become exactly 4995 cents.
        return Decimal(str(value)) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _order(self) -> PriceSpec:
        if self.max < self.min:
            raise ValueError("max price is below min price")
        return self

    @staticmethod
    def cents(amount: Decimal) -> int:
        cents = amount * 100
        if cents != cents.to_integral_value():
            raise ValueError(f"price {amount} has fractions of a cent")
        return int(cents)


class ServiceSpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = None
    duration_minutes: int = Field(gt=0, le=24 * 60)
    price: PriceSpec
    bays: list[str] = Field(min_length=1)
    active: bool = True


class StaffSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=50)
    phone: Phone
    email: str | None = None
    hunt_order: int = 100
    on_duty: bool = True


class FaqSpec(_Spec):
    question: str = Field(min_length=1, max_length=500)
    answer: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)


class VehicleSpec(_Spec):
    make: str = Field(min_length=1, max_length=60)
    model: str = Field(min_length=1, max_length=60)
    year: int | None = Field(default=None, ge=1900, le=2100)
    vin: str | None = Field(default=None, min_length=17, max_length=17)
    plate: str | None = None
    mileage: int | None = Field(default=None, ge=0)

    @field_validator("vin", "plate", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return str(value).upper() if value is not None else None


class CustomerSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    phone: Phone
    email: str | None = None
    vehicles: list[VehicleSpec] = Field(default_factory=list)


class AppointmentSpec(_Spec):
    key: str = Field(min_length=1, max_length=100)
    customer_phone: Phone
    vehicle_vin: str | None = None
    service: str
    days_from_today: int = Field(ge=1)
    time: WallTime
    bay: str | None = None  # None: the first bay that can do the service
    notes: str | None = None


class SeedFile(_Spec):
    dealership: DealershipSpec
    hours: dict[Literal[WEEKDAY_NAMES], OpenHoursSpec | Literal["closed"]]  # type: ignore[valid-type]
    holidays: list[HolidaySpec] = Field(default_factory=list)
    bays: list[BaySpec] = Field(default_factory=list)
    service_types: list[ServiceSpec] = Field(default_factory=list)
    staff: list[StaffSpec] = Field(default_factory=list)
    faq: list[FaqSpec] = Field(default_factory=list)
    customers: list[CustomerSpec] = Field(default_factory=list)
    appointments: list[AppointmentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> SeedFile:
        _unique("bays", [b.name for b in self.bays])
        _unique("service_types", [s.name for s in self.service_types])
        _unique("staff phones", [s.phone for s in self.staff])
        _unique("faq questions", [f.question for f in self.faq])
        _unique("customer phones", [c.phone for c in self.customers])
        _unique("appointment keys", [a.key for a in self.appointments])
        vins = [v.vin for c in self.customers for v in c.vehicles if v.vin]
        _unique("VINs", vins)
        bays = {b.name for b in self.bays}
        services = {s.name: s for s in self.service_types}
        for s in self.service_types:
            unknown = sorted(set(s.bays) - bays)
            if unknown:
                raise ValueError(f"service {s.name!r} names unknown bay(s) {unknown}")
        phones = {c.phone: c for c in self.customers}
        for a in self.appointments:
            if a.customer_phone not in phones:
                raise ValueError(f"appointment {a.key!r}: no customer with that phone")
            if a.service not in services:
                raise ValueError(f"appointment {a.key!r}: unknown service {a.service!r}")
            if a.bay is not None and a.bay not in services[a.service].bays:
                raise ValueError(f"appointment {a.key!r}: bay {a.bay!r} cannot do {a.service!r}")
            own = {v.vin for v in phones[a.customer_phone].vehicles if v.vin}
            if a.vehicle_vin is not None and a.vehicle_vin.upper() not in own:
                raise ValueError(
                    f"appointment {a.key!r}: the customer has no vehicle with that VIN"
                )
        return self


def _unique(what: str, values: list[Any]) -> None:
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what}: {dupes}")


def load_seed_file(path: str | Path) -> SeedFile:
    """Parse and validate a seed file, or SeedError naming the file and the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SeedError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SeedError(f"{path.name}: not valid YAML: {exc}") from None
    try:
        return SeedFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise SeedError(f"{path.name}: {problems}") from None


# ---------------------------------------------------------------------- applying it


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def count(self, *, added: bool, changed: bool) -> None:
        if added:
            self.added += 1
        elif changed:
            self.updated += 1
        else:
            self.unchanged += 1


@dataclass
class SeedReport:
    tables: dict[str, Counts] = field(default_factory=dict)

    def __getitem__(self, table: str) -> Counts:
        return self.tables.setdefault(table, Counts())

    @property
    def changed(self) -> int:
        """Rows added or updated (0 when the database already matched the file)."""
        return sum(c.added + c.updated for c in self.tables.values())

    def lines(self) -> list[str]:
        return [
            f"  {name}: {c.added} added, {c.updated} updated, {c.unchanged} unchanged"
            for name, c in self.tables.items()
        ]


def _sync(row: Any, values: dict[str, Any]) -> bool:
    """Set the differing ``values`` on ``row``; True when something changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


async def seed(
    url: str,
    path: str | Path | None = None,
    *,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Load ``path`` (default: the demo file) into the migrated database at ``url``.

    ``today`` (default: today in the dealership's timezone) anchors the relative dates.
    """
    spec = load_seed_file(path or DEMO_FILE)
    say = progress or (lambda _line: None)
    tz = ZoneInfo(spec.dealership.timezone)
    today = today or datetime.now(UTC).astimezone(tz).date()
    report = SeedReport()
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as session:
            await session.connection(execution_options={SQLITE_IMMEDIATE: True})
            try:
                await _apply(session, spec, today, tz, report, say)
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
    finally:
        await engine.dispose()
    return report


async def _apply(
    session: AsyncSession,
    spec: SeedFile,
    today: date,
    tz: ZoneInfo,
    report: SeedReport,
    say: Callable[[str], None],
) -> None:
    await _seed_profile(session, spec.dealership, report)
    say(f"dealership: {spec.dealership.name} ({spec.dealership.timezone})")
    await _seed_hours(session, spec, report)
    await _seed_holidays(session, spec, today, report)
    bays = await _seed_bays(session, spec, report)
    services = await _seed_services(session, spec, bays, report)
    await _seed_staff(session, spec, report)
    await _seed_faq(session, spec, report)
    customers, vehicles = await _seed_customers(session, spec, report)
    await session.flush()
    await _seed_appointments(session, spec, today, tz, customers, vehicles, services, bays, report)
    await session.flush()
    for line in report.lines():
        say(line)


async def _seed_profile(session: AsyncSession, s: DealershipSpec, report: SeedReport) -> None:
    row = (await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))).scalar()
    values = {
        "name": s.name,
        "timezone": s.timezone,
        "address": s.address,
        "phone": s.phone,
        "service_desk_email": s.service_desk_email,
    }
    added = row is None
    if row is None:
        row = DealershipProfile()
        session.add(row)
    report["dealership"].count(added=added, changed=_sync(row, values))


async def _seed_hours(session: AsyncSession, spec: SeedFile, report: SeedReport) -> None:
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
        report["opening_hours"].count(added=added, changed=_sync(row, values))


async def _seed_holidays(
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
            report["holidays"].count(added=added, changed=_sync(row, {"name": h.name}))


async def _seed_bays(
    session: AsyncSession, spec: SeedFile, report: SeedReport
) -> dict[str, ServiceBay]:
    rows = {r.name: r for r in (await session.execute(select(ServiceBay))).scalars()}
    for b in spec.bays:
        row = rows.get(b.name)
        added = row is None
        if row is None:
            row = rows[b.name] = ServiceBay(name=b.name)
            session.add(row)
        report["service_bays"].count(added=added, changed=_sync(row, {"capacity": b.capacity}))
    return rows


async def _seed_services(
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
        changed = _sync(
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


async def _seed_staff(session: AsyncSession, spec: SeedFile, report: SeedReport) -> None:
    rows = {r.phone: r for r in (await session.execute(select(Staff))).scalars()}
    for s in spec.staff:
        row = rows.get(s.phone)
        added = row is None
        if row is None:
            row = Staff(phone=s.phone)
            session.add(row)
        values = {
            "name": s.name,
            "role": s.role,
            "email": s.email,
            "hunt_order": s.hunt_order,
            "on_duty": s.on_duty,
        }
        report["staff"].count(added=added, changed=_sync(row, values))


async def _seed_faq(session: AsyncSession, spec: SeedFile, report: SeedReport) -> None:
    rows = {r.question: r for r in (await session.execute(select(FaqEntry))).scalars()}
    for f in spec.faq:
        row = rows.get(f.question)
        added = row is None
        if row is None:
            row = FaqEntry(question=f.question)
            session.add(row)
        values = {"answer": f.answer, "tags": list(f.tags)}
        report["faq_entries"].count(added=added, changed=_sync(row, values))


async def _seed_customers(
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
            added=added, changed=_sync(row, {"name": c.name, "email": c.email})
        )
        await session.flush()  # the customer's id, for its vehicles
        for v in c.vehicles:
            vehicle = by_vin.get(v.vin) if v.vin else None
            if vehicle is None:
                vehicle = next(
                    (
                        own
                        for own in row.vehicles
                        if own.vin is None
                        and (own.make, own.model, own.year) == (v.make, v.model, v.year)
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
                "customer_id": row.id,
                "make": v.make,
                "model": v.model,
                "year": v.year,
                "vin": v.vin,
                "plate": v.plate,
                "mileage": v.mileage,
            }
            report["vehicles"].count(added=v_added, changed=_sync(vehicle, values))
    return customers, by_vin


async def _seed_appointments(
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
    for a in spec.appointments:
        key = f"seed:{a.key}"
        row = (
            await session.execute(select(Appointment).where(Appointment.idempotency_key == key))
        ).scalar()
        service = services[a.service]
        bay = bays[a.bay] if a.bay else service.bays[0]
        duration = timedelta(minutes=service.duration_minutes)
        start = None
        for offset in range(_ROLL_FORWARD_DAYS):
            day = today + timedelta(days=a.days_from_today + offset)
            candidate = datetime.combine(day, a.time, tzinfo=tz).astimezone(UTC)
            if not _fits(hours.get(day.weekday()), day in holidays, candidate, duration, tz):
                continue
            if await _bay_full(session, bay, candidate, candidate + duration, row):
                continue
            start = candidate
            break
        if start is None:
            raise SeedError(
                f"appointment {a.key!r}: no open day with room in {bay.name!r} within "
                f"{_ROLL_FORWARD_DAYS} days of day +{a.days_from_today} at {a.time:%H:%M}"
            )
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
        report["appointments"].count(added=added, changed=_sync(row, values))
        await session.flush()


def _fits(
    hours: OpeningHours | None,
    holiday: bool,
    start: datetime,
    duration: timedelta,
    tz: ZoneInfo,
) -> bool:
    if holiday or hours is None or hours.closed or not hours.opens_at or not hours.closes_at:
        return False
    local = start.astimezone(tz)
    closes = datetime.combine(local.date(), hours.closes_at, tzinfo=tz)
    return local.time() >= hours.opens_at and start + duration <= closes


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


async def reset(
    url: str,
    path: str | Path | None = None,
    *,
    with_seed: bool = True,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedReport | None:
    """Drop every table the migrations made, migrate up again and (by default) seed."""
    from .migrate import downgrade, upgrade

    say = progress or (lambda _line: None)
    say("dropping all tables")
    await downgrade(url, "base")
    say("migrating to head")
    await upgrade(url)
    if not with_seed:
        return None
    return await seed(url, path, today=today, progress=progress)
