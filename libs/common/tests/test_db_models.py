"""The models on real databases: E.164 phones, aware UTC datetimes that round-trip on
SQLite and PostgreSQL, and constraints (foreign keys are on in SQLite too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from dealerline_common.db import (
    InvalidPhone,
    create_engine_from_url,
    normalize_phone,
    session_factory,
    try_normalize_phone,
)
from dealerline_common.db.models import (
    Appointment,
    AppointmentStatus,
    Call,
    Customer,
    ServiceBay,
    ServiceType,
    Staff,
    Vehicle,
)
from dealerline_common.db.testing import migrated_db_url_fixture  # noqa: F401


@pytest.mark.parametrize(
    "raw",
    ["+14155550123", "(415) 555-0123", "415.555.0123", "+1 415 555 0123", "1-415-555-0123"],
)
def test_phone_numbers_are_normalised_to_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+14155550123"


def test_other_countries_keep_their_code() -> None:
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "no phone number"),
        ("hello", "not a phone number"),
        ("555-0123", "area code is missing"),
        ("+15555550123", "not a valid phone number"),  # 555 is not a US area code
        ("+1 415 555 01234567", "too many digits"),
    ],
)
def test_invalid_phone_numbers_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone, match=reason):
        normalize_phone(raw)
    assert try_normalize_phone(raw) is None


def test_models_refuse_invalid_phones_and_store_e164() -> None:
    assert Customer(name="A", phone="(415) 555-0123").phone == "+14155550123"
    assert Customer(name="A", phone=None).phone is None
    with pytest.raises(InvalidPhone):
        Staff(name="B", role="sales", phone="12")


async def test_datetimes_round_trip_as_aware_utc(migrated_db_url: str) -> None:
    engine = create_engine_from_url(migrated_db_url)
    sessions = session_factory(engine)
    pacific = timezone(timedelta(hours=-8))
    started = datetime(2026, 1, 15, 9, 30, 15, 123456, tzinfo=pacific)
    try:
        async with sessions() as s:
            s.add(Call(session_id="sess-1", started_at=started))
            await s.commit()
        async with sessions() as s:
            call = (await s.execute(select(Call))).scalar_one()
            assert call.started_at == started
            assert call.started_at.tzinfo is not None
            assert call.started_at.utcoffset() == timedelta(0)
            assert call.started_at.hour == 17  # 09:30 at -08:00 is 17:30 UTC
            # created server-side, still aware
            found = await s.execute(
                select(Call.id).where(Call.started_at > started - timedelta(seconds=1))
            )
            assert found.scalar_one() == call.id
    finally:
        await engine.dispose()


async def test_naive_datetimes_are_refused(migrated_db_url: str) -> None:
    engine = create_engine_from_url(migrated_db_url)
    try:
        async with session_factory(engine)() as s:
            s.add(Call(session_id="sess-naive", started_at=datetime(2026, 1, 1, 12, 0)))
            with pytest.raises(StatementError, match="naive datetime"):
                await s.commit()
    finally:
        await engine.dispose()


async def test_constraints_hold_on_both_databases(migrated_db_url: str) -> None:
    engine = create_engine_from_url(migrated_db_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as s:
            s.add(Vehicle(customer_id=999, make="Ford", model="Focus"))
            with pytest.raises(IntegrityError):  # foreign key (SQLite too: PRAGMA on)
                await s.commit()
        async with sessions() as s:
            s.add_all([Customer(name="A", phone="+14155550123")])
            await s.commit()
            s.add(Customer(name="B", phone="415-555-0123"))  # same number, other format
            with pytest.raises(IntegrityError):
                await s.commit()
        async with sessions() as s:
            bay = ServiceBay(name="Bay", capacity=1)
            svc = ServiceType(
                name="Oil", duration_minutes=30, price_min_cents=10, price_max_cents=5, bays=[bay]
            )
            s.add(svc)
            with pytest.raises(IntegrityError):  # max price below min
                await s.commit()
        async with sessions() as s:
            customer = (await s.execute(select(Customer))).scalar_one()
            bay = ServiceBay(name="Bay 1")
            svc = ServiceType(
                name="Oil", duration_minutes=30, price_min_cents=10, price_max_cents=50, bays=[bay]
            )
            s.add(svc)
            await s.flush()
            start = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)
            s.add(
                Appointment(
                    customer_id=customer.id,
                    service_type_id=svc.id,
                    bay_id=bay.id,
                    start_at=start,
                    end_at=start - timedelta(minutes=1),
                )
            )
            with pytest.raises(IntegrityError):  # ends before it starts
                await s.commit()
    finally:
        await engine.dispose()


async def test_appointment_defaults_and_status(migrated_db_url: str) -> None:
    engine = create_engine_from_url(migrated_db_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as s:
            customer = Customer(name="A")
            bay = ServiceBay(name="Bay 1")
            svc = ServiceType(
                name="Oil", duration_minutes=30, price_min_cents=0, price_max_cents=0, bays=[bay]
            )
            s.add_all([customer, svc])
            await s.flush()
            start = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)
            appt = Appointment(
                customer_id=customer.id,
                service_type_id=svc.id,
                bay_id=bay.id,
                start_at=start,
                end_at=start + timedelta(minutes=30),
            )
            s.add(appt)
            await s.commit()
            assert appt.status is AppointmentStatus.BOOKED
            assert appt.created_at.tzinfo is not None
            assert bay.capacity == 1
        async with sessions() as s:
            row = (await s.execute(select(Appointment))).scalar_one()
            assert row.status is AppointmentStatus.BOOKED
            assert row.end_at - row.start_at == timedelta(minutes=30)
    finally:
        await engine.dispose()
