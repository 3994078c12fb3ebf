"""The dealership repository: every read and write the agent's tools make.

All methods are async and open their own short session, so one ``Dealership`` is shared
by every call the agent handles. Errors the caller can do something about are
:class:`DealershipError` subclasses whose message is safe to read to the LLM (it never
names another customer or their details).

Scheduling rules (``availability`` and ``book`` share them, so what is offered can be
booked):
- opening hours are wall-clock times in the dealership's timezone; each day's slots are
  built on the wall clock and converted with zoneinfo, so a DST change moves nothing,
  and a wall time that does not exist that day (spring forward) is skipped;
- a holiday or a closed weekday has no slots; a job must end by closing time;
- nothing earlier than ``clock() + min_notice``;
- a slot is free when one of the bays that can do the service has room: fewer
  overlapping *booked* jobs at the busiest moment of the slot than its capacity.

``book`` re-checks all of that inside a write transaction that serialises bookings of
the same bays (``SELECT … FOR UPDATE`` on the bay rows in PostgreSQL, ``BEGIN IMMEDIATE``
in SQLite), and an ``idempotency_key`` makes a repeated request return the appointment
it made the first time, even when two copies race (the unique constraint decides).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from dealerline_common.db.engine import writing
from dealerline_common.db.models import (
    Appointment,
    AppointmentStatus,
    Call,
    CallbackRequest,
    CallbackStatus,
    Customer,
    DealershipProfile,
    FaqEntry,
    Holiday,
    OpeningHours,
    ServiceBay,
    ServiceType,
    Staff,
    TranscriptTurn,
    Vehicle,
)
from dealerline_common.db.phone import InvalidPhone, normalize_phone
from dealerline_common.logs import get_logger
from dealerline_common.messages import StaffContact
from dealerline_common.state import AppointmentInfo, CustomerInfo, VehicleInfo

from . import faq
from .views import (
    Booking,
    CallbackRequestInfo,
    DayHours,
    FaqHit,
    Profile,
    ServiceInfo,
    TranscriptLine,
    WeekdayHours,
)
from .vin import InvalidVin, validate_vin

__all__ = [
    "Conflict",
    "Dealership",
    "DealershipError",
    "InvalidInput",
    "NotAllowed",
    "NotFound",
    "SlotUnavailable",
    "utc_now",
]

log = get_logger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
_MAX_SEARCH_DAYS = 21


def utc_now() -> datetime:
    return datetime.now(UTC)


class DealershipError(Exception):
    """A request the repository refuses; ``str(error)`` is safe to show the LLM."""


class NotFound(DealershipError):
    pass


class Conflict(DealershipError):
    """The change clashes with data already there (a phone or VIN on file)."""


class NotAllowed(DealershipError):
    """Not this customer's record, or not in a state that allows the change."""


class InvalidInput(DealershipError):
    pass


class SlotUnavailable(DealershipError):
    """The time cannot be booked; ``alternatives`` are the nearest free starts."""

    def __init__(self, message: str, alternatives: Sequence[datetime] = ()) -> None:
        super().__init__(message)
        self.alternatives = list(alternatives)


@dataclass
class _Window:
    """One open day: the slot starts on the wall clock and the closing time (UTC)."""

    starts: list[datetime]  # aware, UTC
    closes: datetime  # aware, UTC


class Dealership:
    """The dealership database, as the agent's tools use it."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
        *,
        slot_minutes: int = 30,
        min_notice: timedelta = timedelta(hours=1),
        default_timezone: str = "America/Los_Angeles",
    ) -> None:
        if slot_minutes <= 0 or 60 * 24 % slot_minutes:
            raise ValueError("slot_minutes must divide a day (e.g. 15, 30, 60)")
        self.session_factory = session_factory
        self.clock = clock
        self.slot = timedelta(minutes=slot_minutes)
        self.min_notice = min_notice
        self.default_timezone = default_timezone

    async def close(self) -> None:
        """Dispose of the engine behind the session factory (closes pooled connections)."""
        bind = self.session_factory.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            await bind.dispose()

    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise RuntimeError("the dealership clock must return an aware datetime")
        return now.astimezone(UTC)

    def _writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a write transaction (``dealerline_common.db.engine.writing``)."""
        return writing(self.session_factory)

    # ------------------------------------------------------------------ profile, calendar

    async def profile(self) -> Profile:
        async with self.session_factory() as session:
            row = (
                await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))
            ).scalar()
        if row is None:
            return Profile(name="", timezone=self.default_timezone)
        return Profile(
            name=row.name,
            timezone=row.timezone,
            address=row.address,
            phone=row.phone,
            service_desk_email=row.service_desk_email,
        )

    async def timezone(self) -> ZoneInfo:
        name = (await self.profile()).timezone
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise RuntimeError(f"the dealership's timezone {name!r} is not a known zone") from None

    async def today(self) -> date:
        return self.now().astimezone(await self.timezone()).date()

    async def weekly_hours(self) -> list[WeekdayHours]:
        """Monday to Sunday; a weekday with no row is closed."""
        async with self.session_factory() as session:
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
        async with self.session_factory() as session:
            return await self._hours_on(session, day)

    async def _hours_on(self, session: AsyncSession, day: date) -> DayHours:
        holiday = (await session.execute(select(Holiday.name).where(Holiday.date == day))).scalar()
        if holiday is not None:
            return DayHours(day, None, None, holiday=holiday)
        row = (
            await session.execute(select(OpeningHours).where(OpeningHours.weekday == day.weekday()))
        ).scalar()
        if row is None or row.closed:
            return DayHours(day, None, None)
        return DayHours(day, row.opens_at, row.closes_at)

    async def holidays(self, start: date, end: date) -> list[tuple[date, str]]:
        """Holidays from ``start`` to ``end`` inclusive."""
        async with self.session_factory() as session:
            rows = await session.execute(
                select(Holiday.date, Holiday.name)
                .where(Holiday.date >= start, Holiday.date <= end)
                .order_by(Holiday.date)
            )
            return [(d, n) for d, n in rows.all()]

    # ------------------------------------------------------------------ services

    async def services(self) -> list[ServiceInfo]:
        """Active services, by name."""
        async with self.session_factory() as session:
            rows = (
                await session.execute(
                    select(ServiceType)
                    .where(ServiceType.active)
                    .options(selectinload(ServiceType.bays))
                    .order_by(ServiceType.name)
                )
            ).scalars()
            return [_service_info(r) for r in rows]

    async def find_service(self, name: str) -> ServiceInfo:
        """The active service called ``name``: exact (any case), else the one service whose
        name contains it or that it closely resembles; NotFound names the choices."""
        wanted = " ".join((name or "").lower().split())
        if not wanted:
            raise InvalidInput("no service named; ask which service the caller needs")
        services = await self.services()
        by_name = {s.name.lower(): s for s in services}
        if wanted in by_name:
            return by_name[wanted]
        partial = [s for s in services if wanted in s.name.lower() or s.name.lower() in wanted]
        if len(partial) == 1:
            return partial[0]
        wanted_words = set(faq.tokens(wanted))
        overlapping = [s for s in services if wanted_words & set(faq.tokens(s.name))]
        close = difflib.get_close_matches(wanted, list(by_name), n=3, cutoff=0.75)
        if len(close) == 1 and not partial:
            return by_name[close[0]]
        if len(overlapping) == 1 and not partial:
            return overlapping[0]
        choices = partial or overlapping or [by_name[c] for c in close]
        if choices:
            names = ", ".join(s.name for s in choices)
            raise NotFound(f"'{name}' could mean several services: {names}; ask which one")
        names = ", ".join(s.name for s in services)
        raise NotFound(f"no service called '{name}'; the services are: {names}")

    # ------------------------------------------------------------------ customers

    async def customer(self, customer_id: int) -> CustomerInfo:
        async with self.session_factory() as session:
            row = await self._customer_row(session, customer_id)
            return _customer_info(row, returning=True)

    async def _customer_row(self, session: AsyncSession, customer_id: int) -> Customer:
        row = (
            await session.execute(
                select(Customer)
                .where(Customer.id == customer_id)
                .options(selectinload(Customer.vehicles))
            )
        ).scalar()
        if row is None:
            raise NotFound(f"no customer with id {customer_id}")
        return row

    async def customer_by_phone(self, phone: str) -> CustomerInfo | None:
        """The customer with this number (any format; it is normalised first)."""
        try:
            normalized = normalize_phone(phone)
        except InvalidPhone as exc:
            raise InvalidInput(f"that phone number is not valid ({exc})") from None
        async with self.session_factory() as session:
            row = (
                await session.execute(
                    select(Customer)
                    .where(Customer.phone == normalized)
                    .options(selectinload(Customer.vehicles))
                )
            ).scalar()
            return None if row is None else _customer_info(row, returning=True)

    async def find_customers_by_name(self, name: str, limit: int = 5) -> list[CustomerInfo]:
        """Customers whose name contains ``name`` (any case; spaces collapsed)."""
        wanted = " ".join((name or "").split()).lower()
        if len(wanted) < 2:
            raise InvalidInput("give at least two letters of the name")
        async with self.session_factory() as session:
            rows = (
                await session.execute(
                    select(Customer)
                    .where(func.lower(Customer.name).contains(wanted, autoescape=True))
                    .options(selectinload(Customer.vehicles))
                    .order_by(Customer.name, Customer.id)
                    .limit(limit)
                )
            ).scalars()
            return [_customer_info(r, returning=True) for r in rows]

    async def create_customer(
        self, name: str, phone: str | None = None, email: str | None = None
    ) -> CustomerInfo:
        clean_name = _clean_name(name)
        clean_phone = _clean_phone(phone)
        clean_email = _clean_email(email)
        try:
            async with self._writing() as session:
                if clean_phone and await self._phone_taken(session, clean_phone):
                    raise Conflict("a customer with this phone number is already on file")
                row = Customer(name=clean_name, phone=clean_phone, email=clean_email)
                session.add(row)
                await session.flush()
                info = _customer_info(row, returning=False, vehicles=[])
        except IntegrityError:
            raise Conflict("a customer with this phone number is already on file") from None
        log.info("customer created", customer_id=info.id)
        return info

    async def update_customer(
        self,
        customer_id: int,
        *,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> CustomerInfo:
        """Change the given fields (None: leave as is)."""
        try:
            async with self._writing() as session:
                row = await self._customer_row(session, customer_id)
                if name is not None:
                    row.name = _clean_name(name)
                if phone is not None:
                    clean_phone = _clean_phone(phone)
                    if clean_phone != row.phone:
                        if clean_phone and await self._phone_taken(session, clean_phone):
                            raise Conflict("another customer already has this phone number")
                        row.phone = clean_phone
                if email is not None:
                    row.email = _clean_email(email)
                await session.flush()
                info = _customer_info(row, returning=True)
        except IntegrityError:
            raise Conflict("another customer already has this phone number") from None
        return info

    async def _phone_taken(self, session: AsyncSession, phone: str) -> bool:
        found = await session.execute(select(Customer.id).where(Customer.phone == phone))
        return found.scalar() is not None

    # ------------------------------------------------------------------ vehicles

    async def add_or_update_vehicle(
        self,
        customer_id: int,
        *,
        make: str | None = None,
        model: str | None = None,
        year: int | None = None,
        vin: str | None = None,
        plate: str | None = None,
        mileage: int | None = None,
        vehicle_id: int | None = None,
    ) -> tuple[VehicleInfo, bool]:
        """Save a vehicle of the customer; returns it and whether it was created.

        Updates instead of adding a duplicate when ``vehicle_id`` names one of the
        customer's vehicles, when the VIN is already on one of them, or when one of them
        has the same make, model and year and no VIN yet (the caller is adding detail
        to a car already on file).
        """
        fields = _vehicle_fields(make, model, year, vin, plate, mileage)
        try:
            async with self._writing() as session:
                customer = await self._customer_row(session, customer_id)
                target = await self._matching_vehicle(session, customer, fields, vehicle_id)
                created = target is None
                if target is None:
                    if not fields.get("make") or not fields.get("model"):
                        raise InvalidInput("a new vehicle needs at least its make and model")
                    target = Vehicle(customer_id=customer.id)
                    session.add(target)
                for key, value in fields.items():
                    setattr(target, key, value)
                await session.flush()
                info = _vehicle_info(target)
        except IntegrityError:
            raise Conflict("this VIN is already registered to another vehicle") from None
        log.info("vehicle saved", customer_id=customer_id, vehicle_id=info.id, created=created)
        return info, created

    async def _matching_vehicle(
        self,
        session: AsyncSession,
        customer: Customer,
        fields: dict[str, object],
        vehicle_id: int | None,
    ) -> Vehicle | None:
        own = {v.id: v for v in customer.vehicles}
        if vehicle_id is not None:
            if vehicle_id not in own:
                raise NotAllowed(f"vehicle {vehicle_id} is not one of this customer's vehicles")
            target: Vehicle | None = own[vehicle_id]
        else:
            target = None
        vin = fields.get("vin")
        if vin:
            holder = (await session.execute(select(Vehicle).where(Vehicle.vin == vin))).scalar()
            if holder is not None and holder.customer_id != customer.id:
                raise Conflict("this VIN is registered to a different customer's vehicle")
            if holder is not None:
                if target is not None and holder.id != target.id:
                    raise Conflict(f"this VIN is already on vehicle {holder.id}")
                return holder
        if target is not None:
            return target
        for v in customer.vehicles:
            same = (
                (v.make or "").lower() == str(fields.get("make") or "").lower()
                and (v.model or "").lower() == str(fields.get("model") or "").lower()
                and (fields.get("year") is None or v.year in (None, fields.get("year")))
            )
            if same and not v.vin:
                return v
        return None

    # ------------------------------------------------------------------ availability

    async def availability(
        self, service: str | ServiceInfo, day: date, after: time | None = None
    ) -> list[datetime]:
        """Free start times for ``service`` on ``day`` (aware, dealership timezone),
        earliest first; ``after`` keeps only starts at or after that local time."""
        svc = service if isinstance(service, ServiceInfo) else await self.find_service(service)
        tz = await self.timezone()
        async with self.session_factory() as session:
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
        svc = service if isinstance(service, ServiceInfo) else await self.find_service(service)
        tz = await self.timezone()
        start_utc = _aware(start).astimezone(UTC)
        async with self.session_factory() as session:
            if await self._bay_for(session, svc, start_utc, tz) is not None:
                return None
            return await self._unavailable_reason(session, svc, start_utc, tz)

    async def alternatives(
        self, service: str | ServiceInfo, start: datetime, limit: int = 3
    ) -> list[datetime]:
        """Free starts nearest to ``start``: the closest ones that day, else the first ones
        of the next day with room (searching three weeks)."""
        svc = service if isinstance(service, ServiceInfo) else await self.find_service(service)
        tz = await self.timezone()
        wanted = _aware(start).astimezone(tz)
        same_day = await self.availability(svc, wanted.date())
        if same_day:
            nearest = sorted(same_day, key=lambda s: (abs(s - wanted), s))[:limit]
            return sorted(nearest)
        return await self.next_available(svc, wanted.date() + timedelta(days=1), limit)

    async def next_available(
        self, service: str | ServiceInfo, from_day: date, limit: int = 3
    ) -> list[datetime]:
        """The first ``limit`` free starts on the first day from ``from_day`` that has any."""
        svc = service if isinstance(service, ServiceInfo) else await self.find_service(service)
        for offset in range(_MAX_SEARCH_DAYS):
            found = await self.availability(svc, from_day + timedelta(days=offset))
            if found:
                return found[:limit]
        return []

    async def _window(self, session: AsyncSession, day: date, tz: ZoneInfo) -> _Window | None:
        hours = await self._hours_on(session, day)
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
        earliest = self.now() + self.min_notice
        candidates = [s for s in window.starts if s >= earliest and s + duration <= window.closes]
        if not candidates:
            return []
        bays = await self._bays_for(session, svc.id)
        booked = await self._booked(
            session, [b.id for b in bays], candidates[0], candidates[-1] + duration
        )
        return [s for s in candidates if _free_bay(bays, booked, s, s + duration) is not None]

    async def _bay_for(
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
        if start < self.now() + self.min_notice:
            return None
        bays = await self._bays_for(session, svc.id)
        booked = await self._booked(
            session, [b.id for b in bays], start, start + duration, ignore=ignore_appointment
        )
        return _free_bay(bays, booked, start, start + duration)

    async def _bays_for(
        self, session: AsyncSession, service_type_id: int, *, lock: bool = False
    ) -> list[ServiceBay]:
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
        self,
        session: AsyncSession,
        bay_ids: list[int],
        start: datetime,
        end: datetime,
        *,
        ignore: int | None = None,
    ) -> dict[int, list[tuple[datetime, datetime]]]:
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
        out: dict[int, list[tuple[datetime, datetime]]] = {}
        for bay_id, s, e in (await session.execute(query)).all():
            out.setdefault(bay_id, []).append((s, e))
        return out

    # ------------------------------------------------------------------ appointments

    async def book(
        self,
        customer_id: int,
        service: str | ServiceInfo,
        start: datetime,
        *,
        vehicle_id: int | None = None,
        vehicle_description: str | None = None,
        notes: str | None = None,
        idempotency_key: str | None = None,
    ) -> Booking:
        """Book ``service`` at ``start`` for the customer, in the first bay with room.

        Raises SlotUnavailable (with alternatives) when the time cannot be booked,
        NotAllowed when the vehicle is not the customer's. With ``idempotency_key``, a
        repeated request returns the appointment the first one made (``created=False``).
        """
        svc = service if isinstance(service, ServiceInfo) else await self.find_service(service)
        tz = await self.timezone()
        start_utc = _aware(start).astimezone(UTC)
        if idempotency_key:
            existing = await self._by_key(idempotency_key, tz)
            if existing is not None:
                return Booking(existing, created=False)
        try:
            async with self._writing() as session:
                # Serialise bookings of these bays (PostgreSQL); SQLite's BEGIN IMMEDIATE
                # already did. The key is checked again under the lock: a twin request
                # that committed meanwhile is found here instead of taking a second bay.
                await self._bays_for(session, svc.id, lock=True)
                if idempotency_key:
                    twin = await self._by_key(idempotency_key, tz, session)
                    if twin is not None:
                        return Booking(twin, created=False)
                customer = await self._customer_row(session, customer_id)
                vehicle = _own_vehicle(customer, vehicle_id)
                bay = await self._bay_for(session, svc, start_utc, tz)
                if bay is None:
                    raise SlotUnavailable(
                        await self._unavailable_reason(session, svc, start_utc, tz)
                    )
                row = Appointment(
                    customer_id=customer.id,
                    vehicle_id=vehicle.id if vehicle else None,
                    vehicle_description=_vehicle_text(vehicle, vehicle_description),
                    service_type_id=svc.id,
                    bay_id=bay.id,
                    status=AppointmentStatus.BOOKED,
                    start_at=start_utc,
                    end_at=start_utc + timedelta(minutes=svc.duration_minutes),
                    notes=(notes or "").strip() or None,
                    idempotency_key=idempotency_key,
                )
                session.add(row)
                await session.flush()
                info = _appointment_info(row, svc.name, bay.name, vehicle, tz)
        except SlotUnavailable as exc:
            # Alternatives are looked up after the write transaction has let go of its locks.
            exc.alternatives = await self.alternatives(svc, start_utc)
            raise
        except IntegrityError:
            # The same key committed by a concurrent twin between our check and insert.
            if idempotency_key:
                twin = await self._by_key(idempotency_key, tz)
                if twin is not None:
                    return Booking(twin, created=False)
            raise
        log.info("appointment booked", appointment_id=info.id, customer_id=customer_id)
        return Booking(info, created=True)

    async def _unavailable_reason(
        self, session: AsyncSession, svc: ServiceInfo, start: datetime, tz: ZoneInfo
    ) -> str:
        local = start.astimezone(tz)
        hours = await self._hours_on(session, local.date())
        when = f"{local:%A %Y-%m-%d %H:%M}"
        if hours.holiday:
            return f"closed on {when} ({hours.holiday})"
        if hours.closed:
            return f"closed on {local:%A}s"
        if start < self.now() + self.min_notice:
            return f"{when} is in the past or too soon to book"
        window = await self._window(session, local.date(), tz)
        duration = timedelta(minutes=svc.duration_minutes)
        if window is None or not window.starts or start < window.starts[0]:
            return f"{when} is before opening time"
        if start + duration > window.closes:
            return (
                f"{svc.name} takes {svc.duration_minutes} minutes and would run past closing time"
            )
        if not await self._bays_for(session, svc.id):
            return f"no bay is set up for {svc.name}"
        return f"every bay that does {svc.name} is booked at {when}"

    async def _by_key(
        self, key: str, tz: ZoneInfo, session: AsyncSession | None = None
    ) -> AppointmentInfo | None:
        async def find(s: AsyncSession) -> AppointmentInfo | None:
            row = (
                await s.execute(_appointment_query().where(Appointment.idempotency_key == key))
            ).scalar()
            return None if row is None else _row_info(row, tz)

        if session is not None:
            return await find(session)
        async with self.session_factory() as fresh:
            return await find(fresh)

    async def upcoming_appointments(self, customer_id: int) -> list[AppointmentInfo]:
        """The customer's booked appointments that have not started yet, soonest first."""
        tz = await self.timezone()
        async with self.session_factory() as session:
            rows = (
                await session.execute(
                    _appointment_query()
                    .where(
                        Appointment.customer_id == customer_id,
                        Appointment.status == AppointmentStatus.BOOKED,
                        Appointment.start_at >= self.now(),
                    )
                    .order_by(Appointment.start_at, Appointment.id)
                )
            ).scalars()
            return [_row_info(r, tz) for r in rows]

    async def appointment(self, customer_id: int, appointment_id: int) -> AppointmentInfo:
        tz = await self.timezone()
        async with self.session_factory() as session:
            row = await self._own_appointment(session, customer_id, appointment_id)
            return _row_info(row, tz)

    async def _own_appointment(
        self, session: AsyncSession, customer_id: int, appointment_id: int, *, lock: bool = False
    ) -> Appointment:
        query = _appointment_query().where(Appointment.id == appointment_id)
        if lock:
            # populate_existing: a row read earlier in this session is refreshed, not reused.
            query = query.with_for_update(of=Appointment).execution_options(populate_existing=True)
        row = (await session.execute(query)).scalar()
        # The same answer whether it does not exist or is someone else's: the caller
        # learns nothing about other customers' bookings.
        if row is None or row.customer_id != customer_id:
            raise NotAllowed(
                f"appointment {appointment_id} is not one of this customer's appointments"
            )
        return row

    async def reschedule(
        self, customer_id: int, appointment_id: int, new_start: datetime
    ) -> AppointmentInfo:
        """Move the customer's booked, future appointment to ``new_start`` (same service;
        the bay may change). Moving it to the time it already has changes nothing."""
        tz = await self.timezone()
        start_utc = _aware(new_start).astimezone(UTC)
        svc: ServiceInfo | None = None
        try:
            async with self._writing() as session:
                current = await self._own_appointment(session, customer_id, appointment_id)
                # Same lock order as book(): the bays first, then the appointment row.
                await self._bays_for(session, current.service_type_id, lock=True)
                row = await self._own_appointment(session, customer_id, appointment_id, lock=True)
                _require_changeable(row, self.now(), "reschedule")
                if row.start_at == start_utc:
                    return _row_info(row, tz)
                svc = _service_info(row.service_type)
                bay = await self._bay_for(session, svc, start_utc, tz, ignore_appointment=row.id)
                if bay is None:
                    raise SlotUnavailable(
                        await self._unavailable_reason(session, svc, start_utc, tz)
                    )
                row.start_at = start_utc
                row.end_at = start_utc + timedelta(minutes=svc.duration_minutes)
                row.bay_id = bay.id
                row.bay = bay
                await session.flush()
                info = _row_info(row, tz)
        except SlotUnavailable as exc:
            if svc is not None:
                exc.alternatives = await self.alternatives(svc, start_utc)
            raise
        log.info("appointment rescheduled", appointment_id=appointment_id)
        return info

    async def cancel(self, customer_id: int, appointment_id: int) -> AppointmentInfo:
        """Cancel the customer's booked appointment; cancelling it again is a no-op."""
        tz = await self.timezone()
        async with self._writing() as session:
            row = await self._own_appointment(session, customer_id, appointment_id, lock=True)
            if row.status == AppointmentStatus.CANCELLED:
                return _row_info(row, tz)
            _require_changeable(row, self.now(), "cancel")
            row.status = AppointmentStatus.CANCELLED
            # Give the key up: the same booking may be made again later.
            row.idempotency_key = None
            await session.flush()
            info = _row_info(row, tz)
        log.info("appointment cancelled", appointment_id=appointment_id)
        return info

    # ------------------------------------------------------------------ FAQ, staff

    async def search_faq(self, query: str, limit: int = 3) -> list[FaqHit]:
        """The best ``limit`` FAQ entries for ``query``, best first (may be empty)."""
        async with self.session_factory() as session:
            rows = (await session.execute(select(FaqEntry).order_by(FaqEntry.id))).scalars()
            docs = [faq.FaqDocument(r.id, r.question, r.answer, tuple(r.tags or ())) for r in rows]
        return [
            FaqHit(d.id, d.question, d.answer, score) for d, score in faq.rank(query, docs, limit)
        ]

    async def on_duty_staff(self) -> list[StaffContact]:
        """Who to ring for a human hand-off, in hunt order."""
        async with self.session_factory() as session:
            rows = (
                await session.execute(
                    select(Staff).where(Staff.on_duty).order_by(Staff.hunt_order, Staff.id)
                )
            ).scalars()
            return [
                StaffContact(name=r.name, phone=r.phone, role=r.role, staff_id=r.id) for r in rows
            ]

    # ------------------------------------------------------------------ callbacks

    async def request_callback(
        self,
        session_id: str,
        *,
        preferred_window: str,
        reason: str,
        customer_id: int | None = None,
        name: str | None = None,
        phone: str | None = None,
        idempotency_key: str | None = None,
    ) -> CallbackRequestInfo:
        """Write an open callback request for the sales team.

        ``preferred_window`` is when the caller wants the call, in their words ("tomorrow
        morning"). With ``idempotency_key``, a repeated request (a replayed turn) returns
        the row the first one wrote (``created=False``), even when two copies race (the
        unique constraint decides).
        """
        window = " ".join((preferred_window or "").split())
        if not window:
            raise InvalidInput("when to call back is missing; ask the caller when suits them")
        if len(window) > 200:
            raise InvalidInput("that callback time is too long; ask for a shorter one")
        about = " ".join((reason or "").split())
        if not about:
            raise InvalidInput("what the callback is about is missing; ask the caller")
        who = " ".join((name or "").split())[:200] or None
        number = _clean_phone(phone)
        if idempotency_key:
            existing = await self._callback_by_key(idempotency_key)
            if existing is not None:
                return existing
        try:
            async with self._writing() as session:
                row = CallbackRequest(
                    session_id=session_id,
                    customer_id=customer_id,
                    name=who,
                    phone=number,
                    preferred_window=window,
                    reason=about,
                    status=CallbackStatus.OPEN.value,
                    idempotency_key=idempotency_key,
                )
                session.add(row)
                await session.flush()
                info = _callback_info(row, created=True)
        except IntegrityError:
            if idempotency_key:
                twin = await self._callback_by_key(idempotency_key)
                if twin is not None:
                    return twin
            raise
        log.info("callback requested", callback_id=info.id, session_id=session_id)
        return info

    async def _callback_by_key(self, key: str) -> CallbackRequestInfo | None:
        async with self.session_factory() as session:
            row = (
                await session.execute(
                    select(CallbackRequest).where(CallbackRequest.idempotency_key == key)
                )
            ).scalar()
            return None if row is None else _callback_info(row, created=False)

    # ------------------------------------------------------------------ call log

    async def record_call_start(
        self,
        session_id: str,
        *,
        call_sid: str | None = None,
        caller_phone: str | None = None,
        customer_id: int | None = None,
        started_at: datetime | None = None,
    ) -> int:
        """Create (or complete) the call row of a session; returns its id. Idempotent."""

        async def upsert() -> int:
            async with self._writing() as session:
                row = await self._call_row(session, session_id, started_at)
                row.call_sid = call_sid or row.call_sid
                row.caller_phone = caller_phone or row.caller_phone
                row.customer_id = customer_id or row.customer_id
                await session.flush()
                return row.id

        try:
            return await upsert()
        except IntegrityError:
            # A concurrent first write of the same session won; update its row instead.
            return await upsert()

    async def record_turn(
        self,
        session_id: str,
        role: str,
        text: str,
        *,
        at: datetime | None = None,
        turn_id: str | None = None,
        interrupted: bool = False,
    ) -> bool:
        """Append one line to the call's transcript; False when ``(turn_id, role)`` was
        recorded already (a redelivered turn)."""
        when = _aware(at).astimezone(UTC) if at else self.now()
        try:
            async with self._writing() as session:
                call = await self._call_row(session, session_id, when)
                if turn_id is not None:
                    seen = await session.execute(
                        select(TranscriptTurn.id).where(
                            TranscriptTurn.call_id == call.id,
                            TranscriptTurn.turn_id == turn_id,
                            TranscriptTurn.role == role,
                        )
                    )
                    if seen.scalar() is not None:
                        return False
                session.add(
                    TranscriptTurn(
                        call_id=call.id,
                        role=role,
                        text=text,
                        at=when,
                        turn_id=turn_id,
                        interrupted=interrupted,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def record_call_end(
        self,
        session_id: str,
        *,
        outcome: str | None = None,
        summary: str | None = None,
        ended_at: datetime | None = None,
        customer_id: int | None = None,
    ) -> None:
        async with self._writing() as session:
            row = await self._call_row(session, session_id, ended_at)
            row.ended_at = _aware(ended_at).astimezone(UTC) if ended_at else self.now()
            row.outcome = outcome or row.outcome
            row.summary = summary or row.summary
            row.customer_id = customer_id or row.customer_id

    async def transcript(self, session_id: str) -> list[TranscriptLine]:
        async with self.session_factory() as session:
            rows = (
                await session.execute(
                    select(TranscriptTurn)
                    .join(Call)
                    .where(Call.session_id == session_id)
                    .order_by(TranscriptTurn.at, TranscriptTurn.id)
                )
            ).scalars()
            return [TranscriptLine(r.role, r.text, r.at, r.turn_id, r.interrupted) for r in rows]

    async def _call_row(
        self, session: AsyncSession, session_id: str, started_at: datetime | None
    ) -> Call:
        row = (await session.execute(select(Call).where(Call.session_id == session_id))).scalar()
        if row is None:
            when = _aware(started_at).astimezone(UTC) if started_at else self.now()
            row = Call(session_id=session_id, started_at=when)
            session.add(row)
            await session.flush()
        return row


# ---------------------------------------------------------------------- helpers


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"time {value.isoformat()} has no timezone")
    return value


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
    bays: list[ServiceBay],
    booked: dict[int, list[tuple[datetime, datetime]]],
    start: datetime,
    end: datetime,
) -> ServiceBay | None:
    for bay in bays:
        if _peak(booked.get(bay.id, []), start, end) < bay.capacity:
            return bay
    return None


def _require_changeable(row: Appointment, now: datetime, action: str) -> None:
    if row.status != AppointmentStatus.BOOKED:
        raise NotAllowed(f"appointment {row.id} is {row.status.value} and cannot be changed")
    if row.start_at <= now:
        raise NotAllowed(f"appointment {row.id} has already started; cannot {action} it now")


def _appointment_query() -> Select[Appointment]:
    return select(Appointment).options(
        selectinload(Appointment.service_type).selectinload(ServiceType.bays),
        selectinload(Appointment.bay),
        selectinload(Appointment.vehicle),
    )


def _row_info(row: Appointment, tz: ZoneInfo) -> AppointmentInfo:
    return _appointment_info(row, row.service_type.name, row.bay.name, row.vehicle, tz)


def _appointment_info(
    row: Appointment, service: str, bay: str, vehicle: Vehicle | None, tz: ZoneInfo
) -> AppointmentInfo:
    return AppointmentInfo(
        id=row.id,
        service=service,
        start=row.start_at.astimezone(tz),
        end=row.end_at.astimezone(tz),
        status=row.status.value,
        vehicle=_vehicle_text(vehicle, row.vehicle_description),
        bay=bay,
    )


def _callback_info(row: CallbackRequest, *, created: bool) -> CallbackRequestInfo:
    return CallbackRequestInfo(
        id=row.id,
        session_id=row.session_id,
        preferred_window=row.preferred_window,
        reason=row.reason,
        name=row.name,
        phone=row.phone,
        created=created,
    )


def _vehicle_text(vehicle: Vehicle | None, description: str | None) -> str | None:
    if vehicle is not None:
        return vehicle.describe()
    return (description or "").strip() or None


def _own_vehicle(customer: Customer, vehicle_id: int | None) -> Vehicle | None:
    if vehicle_id is None:
        return None
    for v in customer.vehicles:
        if v.id == vehicle_id:
            return v
    raise NotAllowed(f"vehicle {vehicle_id} is not one of this customer's vehicles")


def _service_info(row: ServiceType) -> ServiceInfo:
    return ServiceInfo(
        id=row.id,
        name=row.name,
        description=row.description,
        duration_minutes=row.duration_minutes,
        price_min_cents=row.price_min_cents,
        price_max_cents=row.price_max_cents,
        bays=tuple(b.name for b in row.bays),
    )


def _vehicle_info(row: Vehicle) -> VehicleInfo:
    return VehicleInfo(
        id=row.id,
        make=row.make,
        model=row.model,
        year=row.year,
        vin=row.vin,
        plate=row.plate,
        mileage=row.mileage,
    )


def _customer_info(
    row: Customer, *, returning: bool, vehicles: list[Vehicle] | None = None
) -> CustomerInfo:
    return CustomerInfo(
        id=row.id,
        name=row.name,
        phone=row.phone,
        email=row.email,
        returning=returning,
        vehicles=[_vehicle_info(v) for v in (row.vehicles if vehicles is None else vehicles)],
    )


def _clean_name(name: str) -> str:
    clean = " ".join((name or "").split())
    if not clean:
        raise InvalidInput("the customer's name is missing; ask for it")
    if len(clean) > 200:
        raise InvalidInput("that name is too long")
    return clean


def _clean_phone(phone: str | None) -> str | None:
    if phone is None or not phone.strip():
        return None
    try:
        return normalize_phone(phone)
    except InvalidPhone as exc:
        raise InvalidInput(f"that phone number is not valid ({exc}); ask for it again") from None


def _clean_email(email: str | None) -> str | None:
    if email is None or not email.strip():
        return None
    clean = "".join(email.split()).lower()
    if not _EMAIL.match(clean) or len(clean) > 320:
        raise InvalidInput("that email address is not valid; ask the caller to spell it")
    return clean


def _vehicle_fields(
    make: str | None,
    model: str | None,
    year: int | None,
    vin: str | None,
    plate: str | None,
    mileage: int | None,
) -> dict[str, object]:
    """The given (non-None) vehicle fields, validated and normalised."""
    fields: dict[str, object] = {}
    for key, value in (("make", make), ("model", model)):
        if value is not None and value.strip():
            clean = " ".join(value.split())
            if len(clean) > 60:
                raise InvalidInput(f"that {key} is too long")
            fields[key] = clean
    if year is not None:
        latest = datetime.now(UTC).year + 2
        if not 1900 <= year <= latest:
            raise InvalidInput(f"model year {year} is not plausible (1900-{latest})")
        fields["year"] = year
    if vin is not None and vin.strip():
        try:
            fields["vin"] = validate_vin(vin)
        except InvalidVin as exc:
            raise InvalidInput(f"invalid VIN: {exc}") from None
    if plate is not None and plate.strip():
        clean_plate = "".join(plate.split()).upper()
        if len(clean_plate) > 20:
            raise InvalidInput("that plate number is too long")
        fields["plate"] = clean_plate
    if mileage is not None:
        if not 0 <= mileage <= 2_000_000:
            raise InvalidInput(f"mileage {mileage} is not plausible")
        fields["mileage"] = mileage
    return fields
