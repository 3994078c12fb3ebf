"""The dealership repository on real SQLite and PostgreSQL, with a fixed clock.

The data is built here (not the demo file) so every expectation can be read off it:
- Los Angeles; Mon-Fri 08:00-17:00, Sat 09:00-13:00, Sun closed; holiday Tue 2026-03-10;
- bays in id order: Quick Lane (2 jobs at once), Bay A, Bay B;
- Oil Change 30 min (Quick Lane, Bay A), Brake Job 120 min (Bay A), Alignment 60 min (Bay B);
- now = Monday 2026-03-02 08:00 in Los Angeles; bookings need an hour's notice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from dealerline_agent.dealership.repo import (
    Conflict,
    Dealership,
    InvalidInput,
    NotAllowed,
    NotFound,
    SlotUnavailable,
)
from dealerline_common.db import create_engine_from_url, session_factory
from dealerline_common.db.models import (
    Appointment,
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
)
from dealerline_common.db.testing import migrated_db_url_fixture  # noqa: F401

LA = ZoneInfo("America/Los_Angeles")
MONDAY = date(2026, 3, 2)
TUESDAY = date(2026, 3, 3)
SATURDAY = date(2026, 3, 7)
SUNDAY = date(2026, 3, 8)  # also the day the clocks spring forward
HOLIDAY = date(2026, 3, 10)
FALL_BACK = date(2026, 11, 1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set_local(self, day: date, at: time) -> None:
        self.now = datetime.combine(day, at, tzinfo=LA).astimezone(UTC)


@dataclass
class World:
    dealer: Dealership
    clock: Clock
    url: str
    john: int
    jane: int


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=LA)


def hhmm(slots: list[datetime]) -> list[str]:
    return [s.strftime("%H:%M") for s in slots]


async def _build(url: str) -> tuple[int, int]:
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            s.add(DealershipProfile(name="Test Motors", timezone="America/Los_Angeles"))
            for weekday in range(5):
                s.add(OpeningHours(weekday=weekday, opens_at=time(8), closes_at=time(17)))
            s.add(OpeningHours(weekday=5, opens_at=time(9), closes_at=time(13)))
            s.add(OpeningHours(weekday=6, closed=True))
            s.add(Holiday(date=HOLIDAY, name="Founders Day"))
            quick = ServiceBay(name="Quick Lane", capacity=2)
            bay_a = ServiceBay(name="Bay A")
            bay_b = ServiceBay(name="Bay B")
            s.add_all([quick, bay_a, bay_b])
            await s.flush()
            s.add_all(
                [
                    ServiceType(
                        name="Oil Change",
                        duration_minutes=30,
                        price_min_cents=3995,
                        price_max_cents=5995,
                        bays=[quick, bay_a],
                    ),
                    ServiceType(
                        name="Brake Job",
                        duration_minutes=120,
                        price_min_cents=18900,
                        price_max_cents=34900,
                        bays=[bay_a],
                    ),
                    ServiceType(
                        name="Alignment",
                        duration_minutes=60,
                        price_min_cents=9995,
                        price_max_cents=9995,
                        bays=[bay_b],
                    ),
                    ServiceType(
                        name="Retired Service",
                        duration_minutes=30,
                        price_min_cents=0,
                        price_max_cents=0,
                        active=False,
                        bays=[bay_a],
                    ),
                ]
            )
            john = Customer(name="John Carter", phone="+14155550123", email="john@example.com")
            jane = Customer(name="Jane Doe", phone="+14155550124")
            s.add_all([john, jane])
            s.add_all(
                [
                    Staff(name="Second", phone="+14155550112", role="service", hunt_order=2),
                    Staff(name="First", phone="+14155550111", role="sales", hunt_order=1),
                    Staff(
                        name="Off", phone="+14155550113", role="sales", hunt_order=0, on_duty=False
                    ),
                ]
            )
            s.add_all(
                [
                    FaqEntry(
                        question="What forms of payment do you accept?",
                        answer="Cash, credit cards, Apple Pay and Google Pay.",
                        tags=["payment", "apple pay", "credit card"],
                    ),
                    FaqEntry(
                        question="Do you provide loaner cars?",
                        answer="Loaner cars are free for repairs longer than four hours.",
                        tags=["loaner", "courtesy car", "rental"],
                    ),
                    FaqEntry(
                        question="What are your opening hours?",
                        answer="Monday to Friday 8 to 5, Saturday 9 to 1.",
                        tags=["hours", "open", "saturday"],
                    ),
                    FaqEntry(
                        question="How long does an oil change take?",
                        answer="About 30 minutes; the car is ready while you wait.",
                        tags=["oil change", "duration"],
                    ),
                ]
            )
            await s.commit()
            return john.id, jane.id
    finally:
        await engine.dispose()


@pytest.fixture
async def world(migrated_db_url: str) -> AsyncIterator[World]:
    john, jane = await _build(migrated_db_url)
    clock = Clock(at(MONDAY, 8).astimezone(UTC))
    dealer = Dealership(session_factory(create_engine_from_url(migrated_db_url)), clock)
    yield World(dealer, clock, migrated_db_url, john, jane)
    await dealer.close()


async def _appointment_rows(url: str) -> int:
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(Appointment))).scalar_one()
            )
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------- availability


async def test_slots_run_from_opening_until_the_job_fits_before_closing(world: World) -> None:
    slots = await world.dealer.availability("Alignment", TUESDAY)
    assert hhmm(slots)[0] == "08:00"
    assert hhmm(slots)[-1] == "16:00"  # 60 min: 16:30 would end after 17:00
    assert len(slots) == 17
    assert all(s.tzinfo is not None and s.utcoffset() == timedelta(hours=-8) for s in slots)
    brake = await world.dealer.availability("Brake Job", SATURDAY)
    assert hhmm(brake) == ["09:00", "09:30", "10:00", "10:30", "11:00"]


async def test_closed_days_and_holidays_have_no_slots(world: World) -> None:
    assert await world.dealer.availability("Oil Change", SUNDAY) == []
    assert await world.dealer.availability("Oil Change", HOLIDAY) == []
    hours = await world.dealer.hours_on(HOLIDAY)
    assert hours.closed
    assert hours.holiday == "Founders Day"
    assert "closed (Founders Day)" in hours.describe()
    with pytest.raises(SlotUnavailable, match="Founders Day") as refused:
        await world.dealer.book(world.john, "Oil Change", at(HOLIDAY, 9))
    assert refused.value.alternatives
    assert all(a.date() == HOLIDAY + timedelta(days=1) for a in refused.value.alternatives)


async def test_no_slots_in_the_past_or_without_notice(world: World) -> None:
    today = await world.dealer.availability("Oil Change", MONDAY)
    assert hhmm(today)[0] == "09:00"  # now 08:00 + an hour's notice
    world.clock.set_local(MONDAY, time(16, 45))
    assert await world.dealer.availability("Oil Change", MONDAY) == []
    assert await world.dealer.availability("Oil Change", MONDAY - timedelta(days=7)) == []
    with pytest.raises(SlotUnavailable, match="too soon"):
        await world.dealer.book(world.john, "Oil Change", at(MONDAY, 16, 30))


async def test_after_filters_by_local_time(world: World) -> None:
    slots = await world.dealer.availability("Alignment", TUESDAY, after=time(15))
    assert hhmm(slots) == ["15:00", "15:30", "16:00"]


async def test_bay_capacity_counts_overlapping_bookings(world: World) -> None:
    # Bay B (capacity 1) is the only bay for Alignment.
    await world.dealer.book(world.john, "Alignment", at(TUESDAY, 10))
    slots = hhmm(await world.dealer.availability("Alignment", TUESDAY))
    assert "09:00" in slots
    assert "11:00" in slots
    assert not {"09:30", "10:00", "10:30"} & set(slots)


async def test_only_bays_that_can_do_the_service_are_used(world: World) -> None:
    # Oil Change: Quick Lane takes two at once, then Bay A; the fourth has no room.
    bays = [
        (await world.dealer.book(c, "Oil Change", at(TUESDAY, 9))).appointment.bay
        for c in (world.john, world.jane, world.john)
    ]
    assert bays == ["Quick Lane", "Quick Lane", "Bay A"]
    assert "09:00" not in hhmm(await world.dealer.availability("Oil Change", TUESDAY))
    with pytest.raises(SlotUnavailable, match="every bay that does Oil Change") as refused:
        await world.dealer.book(world.jane, "Oil Change", at(TUESDAY, 9))
    assert hhmm(refused.value.alternatives) == ["08:00", "08:30", "09:30"]
    # Brake Job is Bay A only, now busy 09:00-09:30; Alignment (Bay B) is untouched.
    brake = hhmm(await world.dealer.availability("Brake Job", TUESDAY))
    assert "09:00" not in brake
    assert "08:30" not in brake  # 08:30-10:30 overlaps too
    assert "09:30" in brake
    assert "09:00" in hhmm(await world.dealer.availability("Alignment", TUESDAY))


async def test_capacity_two_means_two_at_the_same_moment(world: World) -> None:
    """Quick Lane holds two jobs at once: 09:00 and 09:30 bookings overlap a 09:15 job at
    different moments, so a third fits there even though two bookings touch the slot."""
    quick = [(await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9))).appointment]
    quick.append(
        (await world.dealer.book(world.jane, "Oil Change", at(TUESDAY, 9, 30))).appointment
    )
    assert {a.bay for a in quick} == {"Quick Lane"}
    third = await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9, 15))
    assert third.appointment.bay == "Quick Lane"


async def test_dst_spring_forward_skips_the_missing_hour(world: World) -> None:
    engine = create_engine_from_url(world.url)
    try:
        async with session_factory(engine)() as s:
            sunday = (
                await s.execute(select(OpeningHours).where(OpeningHours.weekday == 6))
            ).scalar_one()
            sunday.closed, sunday.opens_at, sunday.closes_at = False, time(1), time(5)
            await s.commit()
    finally:
        await engine.dispose()
    spring = await world.dealer.availability("Alignment", SUNDAY)
    assert hhmm(spring) == ["01:00", "01:30", "03:00", "03:30", "04:00"]
    assert spring[0].utcoffset() == timedelta(hours=-8)
    assert spring[2].utcoffset() == timedelta(hours=-7)
    # 01:30 PST + 60 min is 03:30 PDT: one real hour, the job fits before 05:00.
    booked = await world.dealer.book(world.john, "Alignment", spring[1])
    assert booked.appointment.end.strftime("%H:%M") == "03:30"
    # (Aware datetimes in one zone subtract by wall clock in Python: compare in UTC.)
    elapsed = booked.appointment.end.astimezone(UTC) - booked.appointment.start.astimezone(UTC)
    assert elapsed == timedelta(hours=1)

    fall = await world.dealer.availability("Alignment", FALL_BACK)
    assert hhmm(fall) == ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30", "04:00"]
    assert fall[0].utcoffset() == timedelta(hours=-7)  # the first 01:00 (PDT)
    assert fall[-1].utcoffset() == timedelta(hours=-8)

    # A weekday after the change: 08:00 is 15:00 UTC (PDT), the week before 16:00 UTC.
    after = await world.dealer.availability("Alignment", date(2026, 3, 9))
    before = await world.dealer.availability("Alignment", TUESDAY)
    assert after[0].astimezone(UTC).hour == 15
    assert before[0].astimezone(UTC).hour == 16


async def test_unknown_and_ambiguous_services_are_explained(world: World) -> None:
    assert (await world.dealer.find_service("oil change")).name == "Oil Change"
    assert (await world.dealer.find_service("  ALIGNMENT ")).name == "Alignment"
    assert (await world.dealer.find_service("brake")).name == "Brake Job"
    assert (await world.dealer.find_service("alignmnet")).name == "Alignment"  # misheard
    with pytest.raises(NotFound, match="the services are: Alignment, Brake Job, Oil Change"):
        await world.dealer.find_service("teleportation")
    with pytest.raises(NotFound):
        await world.dealer.find_service("Retired Service")  # inactive
    names = [s.name for s in await world.dealer.services()]
    assert names == ["Alignment", "Brake Job", "Oil Change"]
    oil = await world.dealer.find_service("Oil Change")
    assert oil.price_text() == "$39.95-$59.95"
    assert oil.bays == ("Quick Lane", "Bay A")


# ---------------------------------------------------------------------- booking


async def test_booking_returns_times_in_the_dealership_timezone(world: World) -> None:
    booking = await world.dealer.book(
        world.john, "Brake Job", at(TUESDAY, 13), vehicle_description="blue Civic", notes=" hi "
    )
    appt = booking.appointment
    assert booking.created
    assert appt.start == at(TUESDAY, 13)
    assert appt.start.utcoffset() == timedelta(hours=-8)
    assert appt.end == at(TUESDAY, 15)
    assert (appt.service, appt.bay, appt.vehicle, appt.status) == (
        "Brake Job",
        "Bay A",
        "blue Civic",
        "booked",
    )
    assert await world.dealer.upcoming_appointments(world.john) == [appt]


async def test_same_idempotency_key_books_once(world: World) -> None:
    first = await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9), idempotency_key="k1")
    again = await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9), idempotency_key="k1")
    assert first.created
    assert not again.created
    assert again.appointment == first.appointment
    assert await _appointment_rows(world.url) == 1


async def test_concurrent_twins_book_once(world: World) -> None:
    results = await asyncio.gather(
        *[
            world.dealer.book(world.john, "Alignment", at(TUESDAY, 11), idempotency_key="twin")
            for _ in range(5)
        ]
    )
    assert len({r.appointment.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert await _appointment_rows(world.url) == 1


async def test_concurrent_bookings_never_overfill_a_bay(world: World) -> None:
    """Four different callers race for the one Bay B slot at 14:00: exactly one wins."""
    results = await asyncio.gather(
        *[
            world.dealer.book(
                world.john if i % 2 else world.jane,
                "Alignment",
                at(TUESDAY, 14),
                idempotency_key=f"caller-{i}",
            )
            for i in range(4)
        ],
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, SlotUnavailable)]
    assert len(won) == 1
    assert len(lost) == 3
    assert await _appointment_rows(world.url) == 1


async def test_vehicle_must_be_the_customers(world: World) -> None:
    janes_car, _ = await world.dealer.add_or_update_vehicle(
        world.jane, make="Honda", model="Civic", year=2018
    )
    assert janes_car.id is not None
    with pytest.raises(NotAllowed, match="not one of this customer's vehicles"):
        await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9), vehicle_id=janes_car.id)
    booked = await world.dealer.book(
        world.jane, "Oil Change", at(TUESDAY, 9), vehicle_id=janes_car.id
    )
    assert booked.appointment.vehicle == "2018 Honda Civic"


# ---------------------------------------------------------------------- reschedule / cancel


async def test_reschedule_and_cancel_only_the_customers_own(world: World) -> None:
    appt = (await world.dealer.book(world.john, "Alignment", at(TUESDAY, 9))).appointment
    with pytest.raises(NotAllowed, match="not one of this customer's appointments"):
        await world.dealer.reschedule(world.jane, appt.id, at(TUESDAY, 11))
    with pytest.raises(NotAllowed, match="not one of this customer's appointments"):
        await world.dealer.cancel(world.jane, appt.id)
    with pytest.raises(NotAllowed, match="not one of this customer's appointments"):
        await world.dealer.cancel(world.jane, 999_999)  # same answer: nothing leaks
    assert (await world.dealer.appointment(world.john, appt.id)).status == "booked"

    moved = await world.dealer.reschedule(world.john, appt.id, at(TUESDAY, 11))
    assert moved.id == appt.id
    assert moved.start == at(TUESDAY, 11)
    assert moved.end == at(TUESDAY, 12)
    slots = hhmm(await world.dealer.availability("Alignment", TUESDAY))
    assert "09:00" in slots  # the old time is free again
    assert "11:00" not in slots
    same = await world.dealer.reschedule(world.john, appt.id, at(TUESDAY, 11))
    assert same == moved

    cancelled = await world.dealer.cancel(world.john, appt.id)
    assert cancelled.status == "cancelled"
    assert (await world.dealer.cancel(world.john, appt.id)).status == "cancelled"  # no-op
    assert "11:00" in hhmm(await world.dealer.availability("Alignment", TUESDAY))
    assert await world.dealer.upcoming_appointments(world.john) == []
    with pytest.raises(NotAllowed, match="cancelled"):
        await world.dealer.reschedule(world.john, appt.id, at(TUESDAY, 13))


async def test_reschedule_into_a_full_slot_offers_alternatives(world: World) -> None:
    await world.dealer.book(world.jane, "Alignment", at(TUESDAY, 14))
    mine = (await world.dealer.book(world.john, "Alignment", at(TUESDAY, 9))).appointment
    with pytest.raises(SlotUnavailable) as refused:
        await world.dealer.reschedule(world.john, mine.id, at(TUESDAY, 14))
    assert hhmm(refused.value.alternatives) == ["12:30", "13:00", "15:00"]
    # Moving within its own time (overlapping itself) is fine.
    moved = await world.dealer.reschedule(world.john, mine.id, at(TUESDAY, 9, 30))
    assert moved.start == at(TUESDAY, 9, 30)


async def test_past_appointments_cannot_be_changed(world: World) -> None:
    appt = (await world.dealer.book(world.john, "Alignment", at(TUESDAY, 9))).appointment
    world.clock.set_local(TUESDAY, time(9, 15))
    with pytest.raises(NotAllowed, match="already started"):
        await world.dealer.cancel(world.john, appt.id)
    assert await world.dealer.upcoming_appointments(world.john) == []


async def test_a_cancelled_booking_can_be_made_again(world: World) -> None:
    first = await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9), idempotency_key="k")
    await world.dealer.cancel(world.john, first.appointment.id)
    again = await world.dealer.book(world.john, "Oil Change", at(TUESDAY, 9), idempotency_key="k")
    assert again.created
    assert again.appointment.id != first.appointment.id


# ---------------------------------------------------------------------- customers, vehicles


async def test_customer_lookup_by_phone_and_name(world: World) -> None:
    john = await world.dealer.customer_by_phone("(415) 555-0123")
    assert john is not None
    assert (john.id, john.name, john.returning) == (world.john, "John Carter", True)
    assert await world.dealer.customer_by_phone("+14155550100") is None
    with pytest.raises(InvalidInput, match="not valid"):
        await world.dealer.customer_by_phone("12")
    assert [c.name for c in await world.dealer.find_customers_by_name("CART")] == ["John Carter"]
    assert [c.name for c in await world.dealer.find_customers_by_name(" do")] == ["Jane Doe"]
    assert await world.dealer.find_customers_by_name("Nobody") == []


async def test_name_search_is_partial_case_insensitive_and_literal(world: World) -> None:
    found = await world.dealer.find_customers_by_name("jane  DOE")
    assert [c.id for c in found] == [world.jane]
    assert await world.dealer.find_customers_by_name("j%") == []  # % is not a wildcard
    with pytest.raises(InvalidInput):
        await world.dealer.find_customers_by_name("j")


async def test_create_and_update_customers(world: World) -> None:
    new = await world.dealer.create_customer("  Ann   Lee ", "415 555 0199", " Ann@Example.COM ")
    assert (new.name, new.phone, new.email, new.returning) == (
        "Ann Lee",
        "+14155550199",
        "ann@example.com",
        False,
    )
    with pytest.raises(Conflict, match="already on file"):
        await world.dealer.create_customer("Someone", "+1 (415) 555-0199")
    with pytest.raises(InvalidInput, match="phone number is not valid"):
        await world.dealer.create_customer("Bob", "555")
    with pytest.raises(InvalidInput, match="email"):
        await world.dealer.create_customer("Bob", email="bob at example")
    with pytest.raises(InvalidInput, match="name is missing"):
        await world.dealer.create_customer("   ")
    updated = await world.dealer.update_customer(new.id, email="ann.lee@example.com")
    assert (updated.name, updated.email) == ("Ann Lee", "ann.lee@example.com")
    with pytest.raises(Conflict, match="another customer"):
        await world.dealer.update_customer(new.id, phone="+14155550123")
    with pytest.raises(NotFound):
        await world.dealer.update_customer(999_999, name="X")


async def test_vehicles_are_added_updated_and_deduplicated(world: World) -> None:
    car, created = await world.dealer.add_or_update_vehicle(
        world.john, make="Toyota", model="Camry", year=2019
    )
    assert created
    # The VIN for the same car later: the existing row is completed, not duplicated.
    same, created = await world.dealer.add_or_update_vehicle(
        world.john, make="toyota", model="camry", vin="1hgcm8-2633a004352", mileage=42000
    )
    assert not created
    assert same.id == car.id
    assert (same.vin, same.mileage, same.year) == ("1HGCM82633A004352", 42000, 2019)
    # by id
    plate, created = await world.dealer.add_or_update_vehicle(
        world.john, vehicle_id=car.id, plate="8 abc 123"
    )
    assert not created
    assert plate.plate == "8ABC123"
    customer = await world.dealer.customer(world.john)
    assert [v.id for v in customer.vehicles] == [car.id]

    with pytest.raises(Conflict, match="different customer"):
        await world.dealer.add_or_update_vehicle(
            world.jane, make="Honda", model="Accord", vin="1HGCM82633A004352"
        )
    with pytest.raises(InvalidInput, match="check digit"):
        await world.dealer.add_or_update_vehicle(
            world.jane, make="Honda", model="Accord", vin="1HGCM82634A004352"
        )
    with pytest.raises(InvalidInput, match="make and model"):
        await world.dealer.add_or_update_vehicle(world.jane, year=2020)
    with pytest.raises(InvalidInput, match="not plausible"):
        await world.dealer.add_or_update_vehicle(world.jane, make="Ford", model="T", year=1850)
    with pytest.raises(NotAllowed):
        await world.dealer.add_or_update_vehicle(world.jane, vehicle_id=car.id, mileage=1)


# ---------------------------------------------------------------------- FAQ, staff, calls


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("do you guys take apple pay", "What forms of payment do you accept?"),
        ("can I pay with a credit card", "What forms of payment do you accept?"),
        ("I need a loaner while my car is being repaired", "Do you provide loaner cars?"),
        ("are you open on saturdays", "What are your opening hours?"),
        ("how long do oil changes take", "How long does an oil change take?"),
    ],
)
async def test_faq_ranks_the_right_entry_first(world: World, query: str, best: str) -> None:
    hits = await world.dealer.search_faq(query)
    assert hits[0].question == best
    assert len(hits) <= 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)


async def test_faq_without_a_match_is_empty(world: World) -> None:
    assert await world.dealer.search_faq("xylophone quantum") == []
    assert await world.dealer.search_faq("the and of") == []


async def test_on_duty_staff_in_hunt_order(world: World) -> None:
    staff = await world.dealer.on_duty_staff()
    assert [(s.name, s.phone, s.role) for s in staff] == [
        ("First", "+14155550111", "sales"),
        ("Second", "+14155550112", "service"),
    ]
    assert all(s.staff_id is not None for s in staff)


async def _callback_rows(url: str) -> list[CallbackRequest]:
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            query = select(CallbackRequest).order_by(CallbackRequest.id)
            return list((await s.execute(query)).scalars())
    finally:
        await engine.dispose()


async def test_callback_requests_are_written_once_per_key(world: World) -> None:
    first = await world.dealer.request_callback(
        "sess-1",
        preferred_window="  tomorrow\nmorning ",
        reason="squeaky  brakes",
        customer_id=world.john,
        name="John Carter",
        phone="(415) 555-0123",
        idempotency_key="callback:k1",
    )
    assert first.created
    assert (first.preferred_window, first.reason, first.phone) == (
        "tomorrow morning",
        "squeaky brakes",
        "+14155550123",  # stored in E.164
    )
    again = await world.dealer.request_callback(
        "sess-1", preferred_window="later", reason="other", idempotency_key="callback:k1"
    )
    assert (again.id, again.created, again.reason) == (first.id, False, "squeaky brakes")
    # Two copies racing with one key still make one row.
    twins = await asyncio.gather(
        *(
            world.dealer.request_callback(
                "sess-2", preferred_window="today", reason="a quote", idempotency_key="callback:k2"
            )
            for _ in range(2)
        )
    )
    assert twins[0].id == twins[1].id
    assert sorted(t.created for t in twins) == [False, True]
    # Without a key, every request is a row (an anonymous caller, no customer).
    await world.dealer.request_callback("sess-3", preferred_window="friday", reason="recall")
    rows = await _callback_rows(world.url)
    assert [(r.session_id, r.customer_id, r.name, r.status) for r in rows] == [
        ("sess-1", world.john, "John Carter", CallbackStatus.OPEN.value),
        ("sess-2", None, None, CallbackStatus.OPEN.value),
        ("sess-3", None, None, CallbackStatus.OPEN.value),
    ]
    assert rows[0].idempotency_key == "callback:k1" and rows[2].idempotency_key is None


async def test_callback_requests_refuse_bad_input(world: World) -> None:
    for window, reason, phone, message in [
        (" ", "brakes", None, "when to call back is missing"),
        ("x" * 201, "brakes", None, "callback time is too long"),
        ("today", "\t", None, "what the callback is about is missing"),
        ("today", "brakes", "12", "that phone number is not valid"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            await world.dealer.request_callback(
                "sess-1", preferred_window=window, reason=reason, phone=phone
            )
    assert await _callback_rows(world.url) == []
