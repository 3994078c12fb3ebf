"""Every agent tool through LangChain, on a real repository (SQLite, the demo dealership
seeded for a fixed Monday), with a fake escalation publisher that collects requests.

Each test asserts what the LLM reads (content), what the graph will apply (artifact) and
what the database holds afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from agent_testkit import db_rows, invoke_tool
from sqlalchemy import update

from dealerline_agent.dealership.context import ToolContext
from dealerline_agent.dealership.effects import ToolEffect, apply_effect
from dealerline_agent.dealership.repo import Dealership
from dealerline_agent.dealership.tools import build_tools, tool_names
from dealerline_common.db import create_engine_from_url, seed, session_factory
from dealerline_common.db.models import (
    Appointment,
    AppointmentStatus,
    CallbackRequest,
    CallbackStatus,
    Customer,
    Staff,
    Vehicle,
)
from dealerline_common.db.testing import sqlite_db_url_fixture  # noqa: F401
from dealerline_common.messages import EscalationRequest, HumanCallStatus
from dealerline_common.state import BookingSlots, ConversationState

LA = ZoneInfo("America/Los_Angeles")
MONDAY = date(2026, 3, 2)  # "today"; seeded appointments: Wed 4 10:30 alignment (Emily),
# Thu 5 09:00 synthetic oil (John), Fri 6 13:00 brake pads (Sarah), Sat 7 14:00 tires
NOW = datetime.combine(MONDAY, time(8, 0), tzinfo=LA).astimezone(UTC)
JOHN_PHONE = "+14155550123"

EXPECTED_TOOLS = {
    "lookup_customer",
    "verify_identity",
    "send_verification_code",
    "check_verification_code",
    "create_customer",
    "update_customer",
    "add_or_update_vehicle",
    "set_booking_slot",
    "clear_booking_slot",
    "get_booking_progress",
    "check_availability",
    "book_appointment",
    "list_appointments",
    "reschedule_appointment",
    "cancel_appointment",
    "search_faq",
    "list_services",
    "get_dealership_hours",
    "request_human_agent",
    "request_callback",
    "end_call",
}


@dataclass
class Harness:
    """One call's tool context plus a way to run a tool the way the graph does."""

    url: str
    repo: Dealership
    state: ConversationState
    published: list[EscalationRequest] = field(default_factory=list)
    publish_error: Exception | None = None
    calls: int = 0
    turn_id: str | None = None

    async def publish(self, request: EscalationRequest) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(request)

    def context(self) -> ToolContext:
        return ToolContext(
            session_id=self.state.session_id,
            state=self.state,
            repo=self.repo,
            clock=lambda: NOW,
            timezone="America/Los_Angeles",
            publish_escalation=self.publish,
            turn_id=self.turn_id,
        )

    async def run(self, name: str, /, apply: bool = True, **args: Any) -> tuple[str, ToolEffect]:
        """Invoke tool ``name`` as a model tool call; apply its effect to the state (as the
        graph's postprocess does) unless ``apply`` is False."""
        self.calls += 1
        content, effect = await invoke_tool(name, f"call-{self.calls}", self.context(), args)
        if apply:
            apply_effect(self.state, effect)
        return content, effect

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        return await db_rows(self.url, model, *where)

    async def execute(self, statement: Any) -> None:
        engine = create_engine_from_url(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(statement)
        finally:
            await engine.dispose()


@pytest.fixture
async def h(sqlite_db_url: str) -> AsyncIterator[Harness]:
    await seed(sqlite_db_url, today=MONDAY)
    repo = Dealership(session_factory(create_engine_from_url(sqlite_db_url)), lambda: NOW)
    state = ConversationState(session_id="sess-1", call_sid="CA123", caller_phone=JOHN_PHONE)
    yield Harness(sqlite_db_url, repo, state)
    await repo.close()


async def identify_john(h: Harness) -> int:
    """John, found by his caller ID and verified with his plate."""
    content, effect = await h.run("lookup_customer")
    assert content.startswith("FOUND")
    assert effect.customer is not None
    content, _ = await h.run("verify_identity", fact="8ABC 123")
    assert content.startswith("VERIFIED"), content
    return effect.customer.id


# ---------------------------------------------------------------------- the tool set


def test_tool_set_and_schemas() -> None:
    tools = build_tools()
    assert set(tool_names()) == EXPECTED_TOOLS
    assert [t.name for t in tools] == tool_names()
    for tool in tools:
        schema = tool.tool_call_schema.model_json_schema()  # what the LLM is sent
        assert "config" not in schema.get("properties", {}), tool.name
        assert "tool_context" not in str(schema), tool.name
        assert len(tool.description) > 30, tool.name
        assert tool.response_format == "content_and_artifact"
    book = next(t for t in tools if t.name == "book_appointment")
    assert book.tool_call_schema.model_json_schema()["required"] == ["confirmed"]


async def test_a_tool_without_context_is_a_wiring_error() -> None:
    tool = build_tools()[0]
    with pytest.raises(RuntimeError, match="tool_context"):
        await tool.ainvoke(
            {"type": "tool_call", "id": "c", "name": tool.name, "args": {}},
            config={"configurable": {}},
        )


# ---------------------------------------------------------------------- customers


async def test_lookup_by_caller_id_phone_and_name(h: Harness) -> None:
    # By the call's caller ID: the name, and nothing else until the caller is verified.
    content, effect = await h.run("lookup_customer", apply=False)
    assert content.startswith("FOUND: customer_id=")
    assert "John Carter" in content and "VERIFICATION_REQUIRED" in content
    for secret in ("Camry", "Synthetic Oil Change", "March 5", JOHN_PHONE, "john.carter"):
        assert secret not in content
    assert effect.customer is not None
    assert (effect.customer.name, effect.customer.phone) == ("John Carter", JOHN_PHONE)
    assert effect.customer.returning
    assert [v.model for v in effect.customer.vehicles] == ["Camry"]
    # Verified: the whole record.
    await h.run("lookup_customer")
    await h.run("verify_identity", fact="8ABC123")
    content, _ = await h.run("lookup_customer", apply=False)
    assert "John Carter" in content
    assert "2019 Toyota Camry" in content
    assert "Synthetic Oil Change" in content  # his upcoming appointment
    assert "Thursday, March 5 at 9:00 AM" in content
    assert JOHN_PHONE not in content

    # A spoken number or name finds a record to book for; not even its name is said.
    by_phone = await h.run("lookup_customer", apply=False, phone="(415) 555-0124")
    assert by_phone[0].startswith("FOUND") and "Emily" not in by_phone[0]
    assert "CR-V" not in by_phone[0] and "Wheel Alignment" not in by_phone[0]
    by_name = await h.run("lookup_customer", apply=False, name="nguyen")
    assert "Emily" not in by_name[0] and "VERIFICATION_REQUIRED" in by_name[0]
    assert by_name[1].customer is not None
    assert by_name[1].customer.name == "Emily Nguyen"


async def test_lookup_misses_and_ambiguity(h: Harness) -> None:
    content, effect = await h.run("lookup_customer", phone="415-555-0199")
    assert content.startswith("NOT_FOUND")
    assert effect.is_empty()
    content, effect = await h.run("lookup_customer", name="ar")  # Carter, Ramirez, Sarah
    assert content.startswith("MULTIPLE: 3 customers")
    assert effect.is_empty()
    content, _ = await h.run("lookup_customer", phone="12")
    assert content.startswith("ERROR: that phone number is not valid")
    h.state.caller_phone = None
    content, _ = await h.run("lookup_customer")
    assert content.startswith("ERROR: no caller ID")
    assert h.state.customer is None


async def test_create_customer_uses_the_caller_id(h: Harness) -> None:
    h.state.caller_phone = "+14155550199"
    content, effect = await h.run("create_customer", name="  Ann  Lee ", email="ANN@example.com")
    assert content.startswith("CREATED: customer_id=")
    assert effect.customer is not None
    assert not effect.customer.returning
    [row] = await h.rows(Customer, Customer.phone == "+14155550199")
    assert (row.name, row.email) == ("Ann Lee", "ann@example.com")
    assert h.state.customer is not None
    content, _ = await h.run("create_customer", name="Ann Again")
    assert content.startswith("ERROR: the caller is already identified as Ann Lee")


async def test_create_customer_refuses_a_phone_on_file(h: Harness) -> None:
    content, effect = await h.run("create_customer", name="Imposter", phone="415 555 0123")
    assert content.startswith("ERROR: a customer with this phone number is already on file")
    assert effect.is_empty()
    assert len(await h.rows(Customer, Customer.name == "Imposter")) == 0


async def test_update_customer(h: Harness) -> None:
    content, _ = await h.run("update_customer", email="x@example.com")
    assert content.startswith("ERROR: the caller is not identified")
    john = await identify_john(h)
    content, effect = await h.run("update_customer", email="jc@example.org")
    assert content.startswith("UPDATED")
    assert effect.customer is not None
    assert effect.customer.returning  # still the customer known before the call
    [row] = await h.rows(Customer, Customer.id == john)
    assert row.email == "jc@example.org"
    content, _ = await h.run("update_customer", email="not an email")
    assert content.startswith("ERROR: that email address is not valid")


async def test_add_and_update_vehicles(h: Harness) -> None:
    john = await identify_john(h)
    content, effect = await h.run(
        "add_or_update_vehicle", make="Honda", model="Accord", year=2022, plate="9xyz999"
    )
    assert content.startswith("ADDED: vehicle_id=")
    assert "2022 Honda Accord" in content
    assert effect.customer is not None
    assert [v.model for v in effect.customer.vehicles] == ["Camry", "Accord"]
    accord = effect.customer.vehicles[1]
    assert accord.plate == "9XYZ999"
    content, _ = await h.run("add_or_update_vehicle", vehicle_id=accord.id, mileage=1200)
    assert content.startswith("UPDATED")
    [row] = await h.rows(Vehicle, Vehicle.id == accord.id)
    assert (row.customer_id, row.mileage) == (john, 1200)
    content, effect = await h.run(
        "add_or_update_vehicle", make="Ford", model="Focus", vin="1HGCM82633A004353"
    )
    assert content.startswith("ERROR: invalid VIN: the check digit")
    assert effect.is_empty()


async def test_a_new_vehicle_joins_the_booking_in_progress(h: Harness) -> None:
    await identify_john(h)
    await h.run("set_booking_slot", slot="service", value="tire rotation")
    content, effect = await h.run("add_or_update_vehicle", make="Mazda", model="CX-5", year=2020)
    assert "Set as the vehicle of the booking in progress" in content
    assert effect.booking_slots is not None
    assert h.state.booking_slots.vehicle_id == effect.booking_slots["vehicle_id"]
    assert h.state.booking_slots.vehicle == "2020 Mazda CX-5"


# ---------------------------------------------------------------------- booking slots


async def test_set_booking_slots_validates_and_normalises(h: Harness) -> None:
    await identify_john(h)
    content, effect = await h.run("set_booking_slot", slot="service", value="synthetic oil")
    assert effect.booking_slots == {"service": "Synthetic Oil Change"}
    assert "Still needed: date, time, vehicle" in content
    _, effect = await h.run("set_booking_slot", slot="date", value="thursday")
    assert effect.booking_slots == {"date": "2026-03-05"}
    _, effect = await h.run("set_booking_slot", slot="time", value="10am")
    assert effect.booking_slots == {"time": "10:00"}
    content, effect = await h.run("set_booking_slot", slot="vehicle", value="my camry")
    camry = h.state.customer.vehicles[0].id if h.state.customer else None
    assert effect.booking_slots == {"vehicle": "my camry", "vehicle_id": camry}
    assert "Still needed: nothing" in content
    assert h.state.booking_slots.missing() == []

    for slot, value, error in [
        ("date", "2026-03-08", "closed"),  # a Sunday
        ("date", "2026-03-01", "in the past"),
        ("date", "someday", "cannot read the date"),
        ("time", "teatime", "cannot read the time"),
        ("service", "teleport", "no service called"),
        ("service", "oil change", "could mean several services"),
        ("vehicle_id", "9999", "not one of the caller's vehicles"),
    ]:
        content, effect = await h.run("set_booking_slot", slot=slot, value=value)
        assert content.startswith("ERROR"), (slot, value, content)
        assert error in content, (slot, value, content)
        assert effect.is_empty()
    assert h.state.booking_slots.date == "2026-03-05"  # untouched by the refusals


async def test_clear_slots_and_progress(h: Harness) -> None:
    await h.run("set_booking_slot", slot="service", value="Tire Rotation")
    await h.run("set_booking_slot", slot="time", value="15:00")
    content, _ = await h.run("get_booking_progress")
    assert "Caller: not identified" in content
    assert "service=Tire Rotation" in content
    assert "Still needed: date, vehicle" in content
    _, effect = await h.run("clear_booking_slot", slot="time")
    assert effect.booking_slots == {"time": None}
    assert h.state.booking_slots.time is None
    assert h.state.booking_slots.service == "Tire Rotation"
    _, effect = await h.run("clear_booking_slot", slot="all")
    assert effect.clear_booking
    assert h.state.booking_slots.is_empty()


# ---------------------------------------------------------------------- availability


async def test_check_a_free_time(h: Harness) -> None:
    content, effect = await h.run(
        "check_availability", service="wheel alignment", date="2026-03-04", time="14:00"
    )
    assert content == (
        "AVAILABLE: Wheel Alignment (60 min, $99.95-$149.95) on Wednesday, March 4 at 2:00 PM."
    )
    assert effect.booking_slots == {
        "service": "Wheel Alignment",
        "date": "2026-03-04",
        "time": "14:00",
    }


async def test_check_a_taken_time_offers_the_nearest(h: Harness) -> None:
    # Emily's alignment holds the only alignment bay on Wednesday 10:30-11:30.
    content, effect = await h.run(
        "check_availability", service="Wheel Alignment", date="2026-03-04", time="10:30"
    )
    assert content.startswith("UNAVAILABLE: every bay that does Wheel Alignment is booked")
    assert "Nearest free times on Wednesday, March 4: 9:00 AM, 9:30 AM, 11:30 AM." in content
    assert effect.booking_slots == {"service": "Wheel Alignment", "date": "2026-03-04"}


async def test_check_a_whole_day_and_a_closed_day(h: Harness) -> None:
    content, _ = await h.run("check_availability", service="Smog Check", date="2026-03-07")
    # Saturday 8:00-16:00, 45 minutes: starts 8:00 … 15:00, eight shown then "later".
    assert content.startswith("FREE TIMES for Smog Check (45 min, $49.95-$69.95) on Saturday")
    assert "8:00 AM, 8:30 AM" in content
    assert "(and 7 later)" in content
    content, effect = await h.run("check_availability", service="Smog Check", date="2026-03-08")
    assert content.startswith("UNAVAILABLE: Sunday 2026-03-08: closed.")
    assert "Nearest free times on Monday, March 9: 7:30 AM, 8:00 AM, 8:30 AM." in content
    assert effect.booking_slots == {"service": "Smog Check"}
    content, _ = await h.run("check_availability", service="Smog Check", date="2026-05-25")
    assert "closed (Memorial Day)" in content
    content, effect = await h.run("check_availability", service="Smog Check", date="2026-02-27")
    assert content == "ERROR: 2026-02-27 is in the past. Ask for another day."
    assert effect.is_empty()


# ---------------------------------------------------------------------- booking


async def _fill_booking(h: Harness) -> None:
    await identify_john(h)
    for slot, value in [
        ("service", "Tire Rotation"),
        ("date", "2026-03-03"),
        ("time", "09:00"),
        ("vehicle", "Camry"),
    ]:
        content, _ = await h.run("set_booking_slot", slot=slot, value=value)
        assert content.startswith("SET"), content


async def test_booking_needs_an_identified_caller_and_all_slots(h: Harness) -> None:
    content, _ = await h.run("book_appointment", confirmed=True)
    assert content.startswith("ERROR: the caller is not identified")
    await identify_john(h)
    await h.run("set_booking_slot", slot="service", value="Tire Rotation")
    content, effect = await h.run("book_appointment", confirmed=True)
    assert content.startswith("ERROR: not booked, still missing: date, time, vehicle")
    assert effect.is_empty()


async def test_booking_reads_back_before_it_books(h: Harness) -> None:
    await _fill_booking(h)
    content, effect = await h.run("book_appointment", confirmed=False)
    assert content.startswith("NOT_BOOKED_YET: read back")
    assert "Tire Rotation on Tuesday, March 3 at 9:00 AM for the 2019 Toyota Camry" in content
    assert effect.is_empty()
    assert await h.rows(Appointment, Appointment.start_at == _utc(2026, 3, 3, 9)) == []


def _utc(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=LA).astimezone(UTC)


async def test_booking_books_once_even_when_repeated(h: Harness) -> None:
    await _fill_booking(h)
    slots_before = h.state.booking_slots.model_copy()
    content, effect = await h.run("book_appointment", apply=False, confirmed=True)
    assert content.startswith("BOOKED: appointment_id=")
    assert (
        "Tire Rotation | Tuesday, March 3 at 9:00 AM | 2019 Toyota Camry until 9:30 AM" in content
    )
    appt = effect.confirmed_appointment
    assert appt is not None
    assert appt.start == datetime(2026, 3, 3, 9, 0, tzinfo=LA)
    assert effect.appointment_action == "booked"
    # The same call again (a retry, a turn replayed after barge-in): no second booking.
    # Its state was never stored (apply=False above), so it still announces the booking.
    again, effect2 = await h.run("book_appointment", confirmed=True)
    assert again.startswith(f"ALREADY_BOOKED: appointment_id={appt.id}")
    assert effect2.confirmed_appointment == appt
    assert effect2.appointment_action == "booked"
    # Once the call's state holds the booking, asking again changes nothing new.
    h.state.booking_slots = slots_before
    _, effect3 = await h.run("book_appointment", apply=False, confirmed=True)
    assert effect3.confirmed_appointment == appt and effect3.appointment_change() is None
    h.state.booking_slots = BookingSlots()
    rows = await h.rows(Appointment, Appointment.start_at == _utc(2026, 3, 3, 9))
    assert [(r.id, r.status, r.vehicle_id is not None) for r in rows] == [
        (appt.id, AppointmentStatus.BOOKED, True)
    ]
    # applied: the booking is confirmed and the slots are cleared
    assert h.state.confirmed_appointment == appt
    assert h.state.booking_slots == BookingSlots()
    assert slots_before.service == "Tire Rotation"


async def test_booking_a_time_taken_meanwhile_clears_the_time(h: Harness) -> None:
    await identify_john(h)
    h.state.booking_slots = BookingSlots(
        service="Wheel Alignment", date="2026-03-04", time="10:30", vehicle="Camry"
    )
    content, effect = await h.run("book_appointment", confirmed=True)
    assert content.startswith("ERROR: not booked: every bay that does Wheel Alignment")
    assert "9:30 AM" in content
    assert effect.booking_slots == {"time": None}
    assert h.state.booking_slots.time is None


async def test_book_with_a_reschedule_slot_moves_the_appointment(h: Harness) -> None:
    await identify_john(h)
    [oil] = await h.rows(
        Appointment, Appointment.idempotency_key == "seed:john-carter-synthetic-oil"
    )
    h.state.booking_slots = BookingSlots(
        service="Synthetic Oil Change",
        date="2026-03-06",
        time="11:00",
        vehicle_id=h.state.customer.vehicles[0].id if h.state.customer else None,
        reschedule_appointment_id=oil.id,
    )
    content, _ = await h.run("book_appointment", confirmed=False)
    assert "move the appointment to Synthetic Oil Change on Friday, March 6 at 11:00 AM" in content
    content, effect = await h.run("book_appointment", confirmed=True)
    assert content.startswith(f"RESCHEDULED: appointment_id={oil.id}")
    [row] = await h.rows(Appointment, Appointment.id == oil.id)
    assert row.start_at == _utc(2026, 3, 6, 11)
    assert effect.confirmed_appointment is not None
    assert effect.appointment_action == "rescheduled"


# ---------------------------------------------------------------------- appointments


async def test_list_reschedule_and_cancel(h: Harness) -> None:
    content, _ = await h.run("list_appointments")
    assert content.startswith("ERROR: the caller is not identified")
    await identify_john(h)
    content, _ = await h.run("list_appointments")
    assert content.startswith("UPCOMING (1):")
    [oil] = await h.rows(
        Appointment, Appointment.idempotency_key == "seed:john-carter-synthetic-oil"
    )
    assert (
        f"appointment_id={oil.id} | Synthetic Oil Change | Thursday, March 5 at 9:00 AM" in content
    )

    content, effect = await h.run(
        "reschedule_appointment",
        appointment_id=oil.id,
        date="2026-03-05",
        time="14:00",
        confirmed=False,
    )
    assert content.startswith("NOT_RESCHEDULED_YET")
    assert "moves to Thursday, March 5 at 2:00 PM" in content
    assert effect.is_empty()
    content, effect = await h.run(
        "reschedule_appointment",
        appointment_id=oil.id,
        date="2026-03-05",
        time="14:00",
        confirmed=True,
    )
    assert content.startswith(f"RESCHEDULED: appointment_id={oil.id}")
    assert effect.confirmed_appointment is not None
    change = effect.appointment_change()
    assert change is not None and (change.action, change.appointment_id) == ("rescheduled", oil.id)
    [row] = await h.rows(Appointment, Appointment.id == oil.id)
    assert row.start_at == _utc(2026, 3, 5, 14)
    # The same move again, now that the state holds it: nothing new to announce.
    _, again = await h.run(
        "reschedule_appointment",
        appointment_id=oil.id,
        date="2026-03-05",
        time="14:00",
        confirmed=True,
    )
    assert again.confirmed_appointment is not None and again.appointment_change() is None

    content, _ = await h.run("cancel_appointment", appointment_id=oil.id, confirmed=False)
    assert content.startswith("NOT_CANCELLED_YET")
    [row] = await h.rows(Appointment, Appointment.id == oil.id)
    assert row.status is AppointmentStatus.BOOKED
    content, effect = await h.run("cancel_appointment", appointment_id=oil.id, confirmed=True)
    assert content.startswith(f"CANCELLED: appointment_id={oil.id}")
    assert effect.cancelled_appointment_id == oil.id
    change = effect.appointment_change()
    assert change is not None and change.appointment is not None
    assert (change.action, change.appointment_id) == ("cancelled", oil.id)
    assert change.appointment.service == "Synthetic Oil Change"
    assert change.appointment.start == datetime(2026, 3, 5, 14, 0, tzinfo=LA)
    assert h.state.confirmed_appointment is None  # it was the rescheduled one
    [row] = await h.rows(Appointment, Appointment.id == oil.id)
    assert row.status is AppointmentStatus.CANCELLED
    content, _ = await h.run("list_appointments")
    assert content.startswith("NONE")


async def test_someone_elses_appointment_is_refused(h: Harness) -> None:
    await identify_john(h)
    [emilys] = await h.rows(
        Appointment, Appointment.idempotency_key == "seed:emily-nguyen-alignment"
    )
    for name, args in [
        ("cancel_appointment", {"appointment_id": emilys.id, "confirmed": True}),
        (
            "reschedule_appointment",
            {"appointment_id": emilys.id, "date": "2026-03-05", "time": "09:00", "confirmed": True},
        ),
    ]:
        content, effect = await h.run(name, **args)
        assert content == (
            f"ERROR: appointment {emilys.id} is not one of this customer's appointments."
        )
        assert effect.is_empty()
    [row] = await h.rows(Appointment, Appointment.id == emilys.id)
    assert row.status is AppointmentStatus.BOOKED
    assert row.start_at == _utc(2026, 3, 4, 10, 30)


# ---------------------------------------------------------------------- information


async def test_search_faq(h: Harness) -> None:
    content, effect = await h.run("search_faq", query="do you guys take apple pay?")
    assert content.startswith("FAQ results, best first:\n1. (score ")
    first = content.splitlines()[1]
    assert "What forms of payment do you accept?" in first
    assert "Apple Pay" in first
    assert len(content.splitlines()) <= 4
    assert effect.is_empty()
    content, _ = await h.run("search_faq", query="xylophone lessons")
    assert content.startswith("NO_MATCH")


async def test_list_services(h: Harness) -> None:
    content, _ = await h.run("list_services")
    lines = content.splitlines()
    assert lines[0] == "SERVICES:"
    assert len(lines) == 14
    assert "Synthetic Oil Change: 45 min, $69.95-$99.95" in lines
    assert "Multi-Point Inspection: 45 min, free" in lines
    assert "Brake Pad Replacement: 120 min, $189-$349" in lines


async def test_dealership_hours(h: Harness) -> None:
    content, _ = await h.run("get_dealership_hours")
    assert "Monday: 7:30 AM to 6:00 PM" in content
    assert "Saturday: 8:00 AM to 4:00 PM" in content
    assert "Sunday: closed" in content
    assert "Monday, May 25 (Memorial Day)" in content  # within the next 90 days
    assert "Right now: open now, until 6:00 PM" in content
    assert "1200 Sunrise Boulevard" in content
    content, _ = await h.run("get_dealership_hours", date="2026-05-25")
    assert content == "Monday 2026-05-25: closed (Memorial Day)."
    content, _ = await h.run("get_dealership_hours", date="tomorrow")
    assert content == "Tuesday 2026-03-03: open 7:30 AM to 6:00 PM."


# ---------------------------------------------------------------------- the call


async def test_request_human_agent_publishes_the_hunt_list(h: Harness) -> None:
    await identify_john(h)
    content, effect = await h.run("request_human_agent", reason="wants to  talk about a trade-in")
    assert content.startswith("ESCALATION_STARTED:task_id=")
    task_id = content.split("task_id=")[1].split("|")[0]
    assert content.endswith("|Calling a team member now; keep helping the caller meanwhile")
    [request] = h.published
    assert request.task_id == task_id
    assert (request.session_id, request.call_sid) == ("sess-1", "CA123")
    assert request.reason == "wants to talk about a trade-in"
    assert request.customer_name == "John Carter"
    assert [s.name for s in request.staff] == ["Maria Lopez", "David Kim", "Priya Shah"]
    assert all(s.phone.startswith("+1415555") for s in request.staff)
    task = effect.escalation_started
    assert task is not None
    assert (task.task_id, task.kind, task.detail) == (
        task_id,
        "escalation",
        "wants to talk about a trade-in",
    )
    assert h.state.escalation_in_progress
    assert h.state.escalation.status is HumanCallStatus.CALLING
    assert h.state.escalation.task_id == task_id

    content, effect = await h.run("request_human_agent", reason="again")
    assert content.startswith("ESCALATION_IN_PROGRESS")
    assert effect.is_empty()
    assert len(h.published) == 1


async def test_a_turn_run_again_asks_for_the_same_escalation(h: Harness) -> None:
    """An agent that takes over a redelivered turn (its first owner died after asking) asks
    with the same task id, so the request's msg id makes the stream drop the second one and
    nobody is rung twice; another turn gets its own."""
    h.turn_id = "turn-7"
    first = await h.run("request_human_agent", apply=False, reason="wants a person")
    again = await h.run("request_human_agent", apply=False, reason="wants a person")
    h.turn_id = "turn-8"
    later = await h.run("request_human_agent", apply=False, reason="wants a person")
    ids = [r.task_id for r in h.published]
    assert ids[0] == ids[1] != ids[2]
    assert first[0] == again[0] != later[0]


async def test_a_new_escalation_after_a_failed_one(h: Harness) -> None:
    await h.run("request_human_agent", reason="first try")
    h.state.escalation.status = HumanCallStatus.FAILED  # nobody answered
    content, effect = await h.run("request_human_agent", reason="second try")
    assert content.startswith("ESCALATION_STARTED")
    assert effect.escalation_started is not None
    assert [r.reason for r in h.published] == ["first try", "second try"]
    assert h.state.escalation.status is HumanCallStatus.CALLING
    assert h.state.escalation.task_id == effect.escalation_started.task_id


async def test_request_human_agent_with_nobody_on_duty(h: Harness) -> None:
    await h.execute(update(Staff).values(on_duty=False))
    content, effect = await h.run("request_human_agent", reason="complaint")
    assert content.startswith("ERROR: nobody is available")
    assert "callback" in content
    assert effect.is_empty()
    assert h.published == []
    assert not h.state.escalation_in_progress


async def test_request_human_agent_when_the_bus_fails(h: Harness) -> None:
    h.publish_error = ConnectionError("nats down")
    content, effect = await h.run("request_human_agent", reason="complaint")
    assert content.startswith("ERROR: could not reach the team")
    assert effect.is_empty()
    assert not h.state.escalation_in_progress


async def test_request_callback_writes_one_row_per_turn(h: Harness) -> None:
    customer_id = await identify_john(h)
    h.turn_id = "turn-utt-1"
    content, effect = await h.run(
        "request_callback", preferred_window=" tomorrow  morning", reason="brake noise"
    )
    assert content.startswith("CALLBACK_REQUESTED: callback_id=")
    assert "when: tomorrow morning | about: brake noise | number ending in 0123" in content
    assert JOHN_PHONE not in content  # the LLM gets the last digits only
    taken = effect.callback_requested
    assert taken is not None
    assert (taken.preferred_window, taken.reason, taken.customer_name) == (
        "tomorrow morning",
        "brake noise",
        "John Carter",
    )
    [row] = await h.rows(CallbackRequest)
    assert row.id == taken.callback_id
    assert (row.session_id, row.customer_id, row.name, row.phone) == (
        "sess-1",
        customer_id,
        "John Carter",
        JOHN_PHONE,
    )
    assert (row.preferred_window, row.reason, row.status) == (
        "tomorrow morning",
        "brake noise",
        CallbackStatus.OPEN.value,
    )
    # The same turn run again (redelivered; a real model may word it differently).
    again, effect2 = await h.run(
        "request_callback", preferred_window="tomorrow am", reason="brakes"
    )
    assert again.startswith(f"CALLBACK_ALREADY_REQUESTED: callback_id={row.id}")
    assert effect2.callback_requested == taken
    assert len(await h.rows(CallbackRequest)) == 1
    # A later turn asking again is a new request.
    h.turn_id = "turn-utt-2"
    content, _ = await h.run("request_callback", preferred_window="friday", reason="a quote")
    assert content.startswith("CALLBACK_REQUESTED")
    assert len(await h.rows(CallbackRequest)) == 2


async def test_request_callback_for_an_unknown_caller_uses_the_caller_id(h: Harness) -> None:
    h.state.caller_phone = "+14155550199"
    content, effect = await h.run("request_callback", preferred_window="today", reason="price")
    assert content.startswith("CALLBACK_REQUESTED") and "ending in 0199" in content
    assert effect.callback_requested is not None
    assert effect.callback_requested.customer_name is None
    [row] = await h.rows(CallbackRequest)
    assert (row.customer_id, row.name, row.phone) == (None, None, "+14155550199")


async def test_request_callback_needs_a_number_and_words(h: Harness) -> None:
    h.state.caller_phone = None
    content, effect = await h.run("request_callback", preferred_window="today", reason="price")
    assert content.startswith("ERROR: no number to call back")
    assert "create_customer" in content
    assert effect.is_empty()
    h.state.caller_phone = JOHN_PHONE
    content, effect = await h.run("request_callback", preferred_window="  ", reason="price")
    assert content.startswith("ERROR: when to call back is missing")
    assert effect.is_empty()
    assert await h.rows(CallbackRequest) == []


async def test_end_call(h: Harness) -> None:
    content, effect = await h.run("end_call", reason="caller said goodbye")
    assert content.startswith("CALL_ENDING")
    assert effect == ToolEffect(end_call=True)
    assert h.state.end_requested


async def test_a_database_outage_is_an_error_the_llm_can_handle(h: Harness) -> None:
    down = Dealership(
        session_factory(create_engine_from_url("postgresql+asyncpg://postgres@127.0.0.1:1/x")),
        lambda: NOW,
    )
    h.repo = down
    try:
        content, effect = await h.run("search_faq", query="loaner")
    finally:
        await down.close()
    assert content.startswith("ERROR: the dealership system is not responding")
    assert "request_human_agent" in content
    assert effect.is_empty()
