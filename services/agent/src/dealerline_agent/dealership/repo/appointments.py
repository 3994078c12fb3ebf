"""Appointments: booking one, the customer's upcoming ones, rescheduling and cancelling.

``book`` re-checks the scheduling rules (:mod:`.scheduling`) inside a write transaction
that serialises bookings of the same bays (``SELECT … FOR UPDATE`` on the bay rows in
PostgreSQL, ``BEGIN IMMEDIATE`` in SQLite), and an ``idempotency_key`` makes a repeated
request return the appointment it made the first time, even when two copies race (the
unique constraint decides). A customer only ever sees or changes their own appointments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from dealerline_common.db.models import (
    Appointment,
    AppointmentStatus,
    Customer,
    ServiceBay,
    ServiceType,
    Vehicle,
)
from dealerline_common.logs import get_logger
from dealerline_common.state import AppointmentInfo

from ..views import Booking, ServiceInfo
from .catalog import Catalog, service_info
from .customers import customer_row
from .errors import NotAllowed, SlotUnavailable, aware
from .hours import Calendar
from .scheduling import Scheduling, bays_for
from .store import Store

__all__ = ["Appointments"]

log = get_logger(__name__)


@dataclass(frozen=True)
class _BookingRequest:
    customer_id: int
    service: ServiceInfo
    start: datetime  # aware, UTC
    vehicle_id: int | None
    vehicle_description: str | None
    notes: str | None
    idempotency_key: str | None


class Appointments:
    def __init__(
        self, store: Store, calendar: Calendar, catalog: Catalog, scheduling: Scheduling
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.catalog = catalog
        self.scheduling = scheduling

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
        svc = await self.catalog.resolve(service)
        tz = await self.calendar.timezone()
        request = _BookingRequest(
            customer_id,
            svc,
            aware(start).astimezone(UTC),
            vehicle_id,
            vehicle_description,
            notes,
            idempotency_key,
        )
        if idempotency_key:
            existing = await self._by_key(idempotency_key, tz)
            if existing is not None:
                return Booking(existing, created=False)
        try:
            booking = await self._book_once(request, tz)
        except SlotUnavailable as exc:
            # Alternatives are looked up after the write transaction has let go of its locks.
            exc.alternatives = await self.scheduling.alternatives(svc, request.start)
            raise
        except IntegrityError:
            # The same key committed by a concurrent twin between our check and insert.
            if idempotency_key:
                twin = await self._by_key(idempotency_key, tz)
                if twin is not None:
                    return Booking(twin, created=False)
            raise
        if booking.created:
            log.info(
                "appointment booked", appointment_id=booking.appointment.id, customer_id=customer_id
            )
        return booking

    async def _book_once(self, request: _BookingRequest, tz: ZoneInfo) -> Booking:
        """The booking's write transaction: lock the bays, check the time, insert."""
        svc, start, key = request.service, request.start, request.idempotency_key
        async with self.store.writing() as session:
            # Serialise bookings of these bays (PostgreSQL); SQLite's BEGIN IMMEDIATE
            # already did. The key is checked again under the lock: a twin request
            # that committed meanwhile is found here instead of taking a second bay.
            await bays_for(session, svc.id, lock=True)
            if key:
                twin = await self._by_key(key, tz, session)
                if twin is not None:
                    return Booking(twin, created=False)
            customer = await customer_row(session, request.customer_id)
            vehicle = _own_vehicle(customer, request.vehicle_id)
            bay = await self.scheduling.bay_for(session, svc, start, tz)
            if bay is None:
                raise SlotUnavailable(
                    await self.scheduling.why_unavailable(session, svc, start, tz)
                )
            row = _new_appointment(request, customer, vehicle, bay)
            session.add(row)
            await session.flush()
            return Booking(_appointment_info(row, svc.name, bay.name, vehicle, tz), created=True)

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
        async with self.store.reading() as fresh:
            return await find(fresh)

    async def upcoming_appointments(self, customer_id: int) -> list[AppointmentInfo]:
        """The customer's booked appointments that have not started yet, soonest first."""
        tz = await self.calendar.timezone()
        async with self.store.reading() as session:
            rows = (
                await session.execute(
                    _appointment_query()
                    .where(
                        Appointment.customer_id == customer_id,
                        Appointment.status == AppointmentStatus.BOOKED,
                        Appointment.start_at >= self.store.now(),
                    )
                    .order_by(Appointment.start_at, Appointment.id)
                )
            ).scalars()
            return [_row_info(r, tz) for r in rows]

    async def appointment(self, customer_id: int, appointment_id: int) -> AppointmentInfo:
        tz = await self.calendar.timezone()
        async with self.store.reading() as session:
            row = await _own_appointment(session, customer_id, appointment_id)
            return _row_info(row, tz)

    async def reschedule(
        self, customer_id: int, appointment_id: int, new_start: datetime
    ) -> AppointmentInfo:
        """Move the customer's booked, future appointment to ``new_start`` (same service;
        the bay may change). Moving it to the time it already has changes nothing."""
        tz = await self.calendar.timezone()
        start_utc = aware(new_start).astimezone(UTC)
        svc: ServiceInfo | None = None
        try:
            async with self.store.writing() as session:
                current = await _own_appointment(session, customer_id, appointment_id)
                # Same lock order as book(): the bays first, then the appointment row.
                await bays_for(session, current.service_type_id, lock=True)
                row = await _own_appointment(session, customer_id, appointment_id, lock=True)
                _require_changeable(row, self.store.now(), "reschedule")
                if row.start_at == start_utc:
                    return _row_info(row, tz)
                svc = service_info(row.service_type)
                bay = await self.scheduling.bay_for(
                    session, svc, start_utc, tz, ignore_appointment=row.id
                )
                if bay is None:
                    raise SlotUnavailable(
                        await self.scheduling.why_unavailable(session, svc, start_utc, tz)
                    )
                row.start_at = start_utc
                row.end_at = start_utc + timedelta(minutes=svc.duration_minutes)
                row.bay_id = bay.id
                row.bay = bay
                await session.flush()
                info = _row_info(row, tz)
        except SlotUnavailable as exc:
            if svc is not None:
                exc.alternatives = await self.scheduling.alternatives(svc, start_utc)
            raise
        log.info("appointment rescheduled", appointment_id=appointment_id)
        return info

    async def cancel(self, customer_id: int, appointment_id: int) -> AppointmentInfo:
        """Cancel the customer's booked appointment; cancelling it again is a no-op."""
        tz = await self.calendar.timezone()
        async with self.store.writing() as session:
            row = await _own_appointment(session, customer_id, appointment_id, lock=True)
            if row.status == AppointmentStatus.CANCELLED:
                return _row_info(row, tz)
            _require_changeable(row, self.store.now(), "cancel")
            row.status = AppointmentStatus.CANCELLED
            # Give the key up: the same booking may be made again later.
            row.idempotency_key = None
            await session.flush()
            info = _row_info(row, tz)
        log.info("appointment cancelled", appointment_id=appointment_id)
        return info


async def _own_appointment(
    session: AsyncSession, customer_id: int, appointment_id: int, *, lock: bool = False
) -> Appointment:
    query = _appointment_query().where(Appointment.id == appointment_id)
    if lock:
        # populate_existing: a row read earlier in this session is refreshed, not reused.
        query = query.with_for_update(of=Appointment).execution_options(populate_existing=True)
    row = (await session.execute(query)).scalar()
    # The same answer whether it does not exist or is someone else's: the caller
    # learns nothing about other customers' bookings.
    if row is None or row.customer_id != customer_id:
        raise NotAllowed(f"appointment {appointment_id} is not one of this customer's appointments")
    return row


def _new_appointment(
    request: _BookingRequest, customer: Customer, vehicle: Vehicle | None, bay: ServiceBay
) -> Appointment:
    svc, start = request.service, request.start
    return Appointment(
        customer_id=customer.id,
        vehicle_id=vehicle.id if vehicle else None,
        vehicle_description=_vehicle_text(vehicle, request.vehicle_description),
        service_type_id=svc.id,
        bay_id=bay.id,
        status=AppointmentStatus.BOOKED,
        start_at=start,
        end_at=start + timedelta(minutes=svc.duration_minutes),
        notes=(request.notes or "").strip() or None,
        idempotency_key=request.idempotency_key,
    )


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
