"""Caller identity, enforced by the tools: each tool that reads or changes a customer's
account refuses an unverified caller and says nothing about the customer; a caller is
verified by the call's own caller ID plus a fact (plate, last 6 of the VIN, booked
service) or by a code texted to the number on file. Real repository (SQLite, the demo
dealership seeded for a fixed Monday), the texts collected instead of published."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from agent_testkit import db_rows, invoke_tool

from dealerline_agent.dealership.context import ToolContext
from dealerline_agent.dealership.effects import ToolEffect, apply_effect
from dealerline_agent.dealership.repo import Dealership
from dealerline_agent.identify import identify_caller
from dealerline_agent.prompts import context_for
from dealerline_common.db import create_engine_from_url, seed, session_factory
from dealerline_common.db.models import Appointment, AppointmentStatus, Customer, Vehicle
from dealerline_common.db.testing import sqlite_db_url_fixture  # noqa: F401
from dealerline_common.messages import EscalationRequest, NotificationJob, StreamStarted
from dealerline_common.state import ConversationState
from dealerline_common.state_store import state_store_from_url

LA = ZoneInfo("America/Los_Angeles")
MONDAY = date(2026, 3, 2)  # John Carter: Thu 5 09:00 Synthetic Oil Change, 2019 Camry
NOW = datetime.combine(MONDAY, time(8, 0), tzinfo=LA).astimezone(UTC)
JOHN = "+14155550123"
STRANGER = "+14155550199"
JOHN_PLATE, JOHN_VIN6 = "8ABC123", "284731"
# Whatever John's record holds that a stranger must never hear.
JOHN_SECRETS = ("Camry", "Toyota", "Synthetic", "March 5", "9:00", "0123", "john.carter", "8ABC")


@dataclass
class Call:
    url: str
    repo: Dealership
    state: ConversationState
    texts: list[NotificationJob] = field(default_factory=list)
    escalations: list[EscalationRequest] | None = None  # None: none expected
    now: datetime = NOW
    calls: int = 0

    async def publish(self, job: NotificationJob) -> None:
        self.texts.append(job)

    def context(self) -> ToolContext:
        async def no_escalation(request: EscalationRequest) -> None:
            if self.escalations is None:
                raise AssertionError("no escalation expected")
            self.escalations.append(request)

        return ToolContext(
            session_id=self.state.session_id,
            state=self.state,
            repo=self.repo,
            clock=lambda: self.now,
            timezone="America/Los_Angeles",
            publish_escalation=no_escalation,
            turn_id=f"turn-{self.calls}",
            publish_notification=self.publish,
            dealership_name="Sunrise Motors",
        )

    async def run(self, name: str, /, **args: Any) -> tuple[str, ToolEffect]:
        self.calls += 1
        content, effect = await invoke_tool(name, f"call-{self.calls}", self.context(), args)
        apply_effect(self.state, effect)
        return content, effect

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        return await db_rows(self.url, model, *where)

    def code(self) -> str:
        """The code in the last text (what the customer reads on their phone)."""
        found = re.search(r"\b(\d{6})\b", self.texts[-1].body)
        assert found, self.texts[-1].body
        return found.group(1)


async def _call(url: str, caller: str) -> AsyncIterator[Call]:
    await seed(url, today=MONDAY)
    repo = Dealership(session_factory(create_engine_from_url(url)), lambda: NOW)
    yield Call(url, repo, ConversationState(session_id="s-id", call_sid="CA1", caller_phone=caller))
    await repo.close()


@pytest.fixture
async def stranger(sqlite_db_url: str) -> AsyncIterator[Call]:
    """A call from a number that is not John's."""
    async for call in _call(sqlite_db_url, STRANGER):
        yield call


@pytest.fixture
async def john(sqlite_db_url: str) -> AsyncIterator[Call]:
    """A call whose (signed) caller ID is John's number on file."""
    async for call in _call(sqlite_db_url, JOHN):
        yield call


def assert_nothing_about_john(text: str) -> None:
    for secret in JOHN_SECRETS:
        assert secret.lower() not in text.lower(), (secret, text)


async def johns_appointment(call: Call) -> Appointment:
    [row] = await call.rows(Customer, Customer.phone == JOHN)
    [appt] = await call.rows(Appointment, Appointment.customer_id == row.id)
    return appt


async def test_an_unverified_caller_gets_nothing_and_changes_nothing(stranger: Call) -> None:
    appt = await johns_appointment(stranger)
    content, _ = await stranger.run("lookup_customer", name="Carter")
    assert content.startswith("FOUND") and "VERIFICATION_REQUIRED" in content
    assert "John" not in content  # not even the name beyond what the caller said
    assert_nothing_about_john(content)
    attempts = [
        ("list_appointments", {}),
        (
            "reschedule_appointment",
            {"appointment_id": appt.id, "date": "2026-03-06", "time": "10:00", "confirmed": True},
        ),
        ("cancel_appointment", {"appointment_id": appt.id, "confirmed": True}),
        ("update_customer", {"phone": "+14155550100", "email": "evil@example.com"}),
        ("add_or_update_vehicle", {"vin": "4T1B11HK8KU284731", "mileage": 1}),
        ("set_booking_slot", {"slot": "vehicle_id", "value": "1"}),
    ]
    for name, args in attempts:
        content, effect = await stranger.run(name, **args)
        assert content.startswith("VERIFICATION_REQUIRED"), (name, content)
        assert_nothing_about_john(content)
        assert effect.is_empty(), name
    # The prompt's CUSTOMER line holds nothing of John's either.
    prompt = context_for(NOW, "America/Los_Angeles", stranger.state).customer
    assert "NOT VERIFIED" in prompt
    assert_nothing_about_john(prompt)
    assert "John" not in prompt
    [still] = await stranger.rows(Appointment, Appointment.id == appt.id)
    assert (still.status, still.start_at) == (AppointmentStatus.BOOKED, appt.start_at)
    [customer] = await stranger.rows(Customer, Customer.id == appt.customer_id)
    assert (customer.phone, customer.email) == (JOHN, "john.carter@example.com")
    assert stranger.texts == []


async def test_a_name_found_customer_can_still_book_new(stranger: Call) -> None:
    await stranger.run("lookup_customer", name="John Carter")
    # Asked twice (from this call or another), the same booking does not say whether the
    # customer already has it (no ALREADY_BOOKED before verification).
    for _ in range(2):
        await stranger.run("set_booking_slot", slot="service", value="Tire Rotation")
        await stranger.run("set_booking_slot", slot="date", value="2026-03-03")
        await stranger.run("set_booking_slot", slot="time", value="11:00")
        content, _ = await stranger.run("set_booking_slot", slot="vehicle", value="my Camry")
        assert "vehicle_id" not in content  # the car on file is not matched before verification
        content, _ = await stranger.run("book_appointment", confirmed=True)
        assert content.startswith("BOOKED"), content
    [row] = await stranger.rows(Customer, Customer.phone == JOHN)
    booked = await stranger.rows(Appointment, Appointment.customer_id == row.id)
    assert len(booked) == 2  # the seeded one and this one, once


@pytest.mark.parametrize("fact", [JOHN_PLATE, "8abc 123", JOHN_VIN6, "synthetic oil change"])
async def test_caller_id_plus_a_fact_verifies(john: Call, fact: str) -> None:
    content, _ = await john.run("lookup_customer")
    assert "John Carter" in content and "Camry" not in content
    content, effect = await john.run("verify_identity", fact=fact)
    assert content.startswith("VERIFIED"), content
    assert effect.identity is not None and effect.identity.method == "caller_id_and_fact"
    content, _ = await john.run("list_appointments")
    assert content.startswith("UPCOMING (1)") and "Synthetic Oil Change" in content


async def test_wrong_facts_are_counted_and_then_refused(john: Call) -> None:
    await john.run("lookup_customer")
    for fact in ("7ABC123", "123456", "Wheel Alignment"):
        content, _ = await john.run("verify_identity", fact=fact)
        assert content.startswith("NOT_VERIFIED") and JOHN_PLATE not in content
    assert john.state.identity.fact_failures == 3
    content, _ = await john.run("verify_identity", fact=JOHN_PLATE)
    assert content.startswith("LOCKED")
    assert not john.state.verified


async def test_a_spoken_number_is_not_the_caller_id(stranger: Call) -> None:
    """The stranger says John's number and knows his plate: no fact verifies a call
    whose own caller ID is not the number on file."""
    content, _ = await stranger.run("lookup_customer", phone="(415) 555-0123")
    assert content.startswith("FOUND") and "John" not in content
    content, _ = await stranger.run("verify_identity", fact=JOHN_PLATE)
    assert content.startswith("NOT_VERIFIED") and "caller ID" in content
    assert not stranger.state.verified
    content, _ = await stranger.run("list_appointments")
    assert content.startswith("VERIFICATION_REQUIRED")


async def test_a_texted_code_verifies(stranger: Call) -> None:
    await stranger.run("lookup_customer", name="John Carter")
    content, effect = await stranger.run("send_verification_code")
    assert content.startswith("CODE_SENT")
    [text] = stranger.texts
    assert (text.channel, text.to) == ("sms", JOHN)  # the number on file, not the caller's
    assert text.secret  # the notifier sends it but keeps no copy
    code = stranger.code()
    assert code not in content
    # The state keeps a salted hash, never the digits.
    stored = stranger.state.model_dump_json()
    assert code not in stored
    assert effect.identity is not None and effect.identity.code is not None
    content, _ = await stranger.run("check_verification_code", code=" ".join(code))
    assert content.startswith("VERIFIED (texted code)") and "Camry" in content
    assert stranger.state.identity.method == "texted_code"
    assert stranger.state.identity.code is None  # used once
    appt = await johns_appointment(stranger)
    content, _ = await stranger.run(
        "reschedule_appointment",
        appointment_id=appt.id,
        date="2026-03-06",
        time="10:00",
        confirmed=True,
    )
    assert content.startswith("RESCHEDULED"), content


async def test_wrong_codes_use_up_the_tries(stranger: Call) -> None:
    await stranger.run("lookup_customer", name="John Carter")
    await stranger.run("send_verification_code")
    code = stranger.code()
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    first, _ = await stranger.run("check_verification_code", code=wrong)
    second, _ = await stranger.run("check_verification_code", code=wrong)
    third, _ = await stranger.run("check_verification_code", code=wrong)
    assert first.startswith("WRONG_CODE") and "2 tries left" in first
    assert second.startswith("WRONG_CODE") and "1 tries left" in second
    assert third.startswith("LOCKED")
    content, _ = await stranger.run("check_verification_code", code=code)
    assert content.startswith("ERROR: no code") and not stranger.state.verified


async def test_an_expired_code_does_not_verify(stranger: Call) -> None:
    await stranger.run("lookup_customer", name="John Carter")
    await stranger.run("send_verification_code")
    stranger.now = NOW + timedelta(minutes=5, seconds=1)
    content, _ = await stranger.run("check_verification_code", code=stranger.code())
    assert content.startswith("EXPIRED") and not stranger.state.verified


async def test_a_code_is_for_the_customer_it_was_sent_for(stranger: Call) -> None:
    await stranger.run("lookup_customer", name="John Carter")
    await stranger.run("send_verification_code")
    await stranger.run("lookup_customer", name="Emily Nguyen")
    content, _ = await stranger.run("check_verification_code", code=stranger.code())
    assert content.startswith("ERROR: no code") and not stranger.state.verified


async def test_codes_per_call_are_limited(stranger: Call) -> None:
    await stranger.run("lookup_customer", name="John Carter")
    for _ in range(3):
        content, _ = await stranger.run("send_verification_code")
        assert content.startswith("CODE_SENT")
    content, _ = await stranger.run("send_verification_code")
    assert content.startswith("ERROR: no more codes")
    assert len(stranger.texts) == 3


async def test_a_changed_phone_and_email_are_told_to_the_old_ones(john: Call) -> None:
    await john.run("lookup_customer")
    await john.run("verify_identity", fact=JOHN_VIN6)
    content, _ = await john.run("update_customer", phone="415-555-0100", email="jc@example.org")
    assert content.startswith("UPDATED") and "notice was sent" in content
    by_channel = {t.channel: t for t in john.texts}
    assert by_channel["sms"].to == JOHN
    assert by_channel["email"].to == "john.carter@example.com"
    for notice in by_channel.values():
        assert "changed" in notice.body and "If this was not you" in notice.body
        assert "0100" not in notice.body and "jc@example.org" not in notice.body
    [row] = await john.rows(Customer, Customer.phone == "+14155550100")
    assert row.email == "jc@example.org"
    # A name change alone tells nobody.
    john.texts.clear()
    await john.run("update_customer", name="Johnny Carter")
    assert john.texts == []


async def test_removed_contact_details_are_told_to_the_old_ones(john: Call) -> None:
    """Erasing the phone on file would also send future codes nowhere: the old phone and
    email hear of it as of a change."""
    await john.run("lookup_customer")
    await john.run("verify_identity", fact=JOHN_VIN6)
    content, _ = await john.run("update_customer", phone="", email="")
    assert content.startswith("UPDATED") and "notice was sent" in content
    [row] = await john.rows(Customer, Customer.name == "John Carter")
    assert (row.phone, row.email) == (None, None)
    by_channel = {t.channel: t for t in john.texts}
    assert by_channel["sms"].to == JOHN
    assert by_channel["email"].to == "john.carter@example.com"
    assert all("removed" in notice.body for notice in by_channel.values())


async def test_a_created_customer_is_the_caller(stranger: Call) -> None:
    content, effect = await stranger.run("create_customer", name="Ann Lee")
    assert content.startswith("CREATED") and stranger.state.verified
    content, _ = await stranger.run("add_or_update_vehicle", make="Honda", model="Civic")
    assert content.startswith("ADDED")
    [row] = await stranger.rows(Customer, Customer.phone == STRANGER)
    assert len(await stranger.rows(Vehicle, Vehicle.customer_id == row.id)) == 1


async def test_the_state_keeps_verification_per_caller_id(stranger: Call) -> None:
    """Verification lives in the session state (stored like the rest of it); a started
    stream with another caller ID voids it."""
    await stranger.run("lookup_customer", name="John Carter")
    await stranger.run("send_verification_code")
    await stranger.run("check_verification_code", code=stranger.code())
    store = state_store_from_url("memory://")
    state = stranger.state

    def put(stored: ConversationState) -> None:
        stored.caller_phone, stored.customer = state.caller_phone, state.customer
        stored.identity = state.identity

    await store.update(state.session_id, put)
    assert (await store.get_state(state.session_id)).verified
    started = StreamStarted(
        session_id=state.session_id, call_sid="CA1", stream_sid="MZ1", from_number=STRANGER
    )
    kept = await identify_caller(store, stranger.repo, started)
    assert kept.verified
    other = started.model_copy(update={"from_number": "+14155550177"})
    reset = await identify_caller(store, stranger.repo, other)
    assert not reset.verified and reset.identity.code is None
    # Verified again, then another call on the session: void as well.
    await store.update(state.session_id, put)
    assert (await store.get_state(state.session_id)).verified
    again = started.model_copy(update={"call_sid": "CA2"})
    assert not (await identify_caller(store, stranger.repo, again)).verified


async def test_a_recognised_caller_books_a_car_on_file_without_hearing_which(john: Call) -> None:
    """The caller ID on file books a new appointment for a car by its id (the demo's
    booking), and no reply or prompt line says which car it is."""
    await john.run("lookup_customer")
    prompt = context_for(NOW, "America/Los_Angeles", john.state).customer
    assert "John Carter" in prompt and "vehicle id 1" in prompt
    assert "Camry" not in prompt and "8ABC" not in prompt
    replies = [
        (await john.run("set_booking_slot", slot="service", value="Tire Rotation"))[0],
        (await john.run("set_booking_slot", slot="vehicle_id", value="1"))[0],
        (await john.run("set_booking_slot", slot="vehicle_id", value="2"))[0],
        (await john.run("set_booking_slot", slot="date", value="2026-03-03"))[0],
        (await john.run("set_booking_slot", slot="time", value="11:00"))[0],
        (await john.run("book_appointment", confirmed=False))[0],
        (await john.run("book_appointment", confirmed=True))[0],
        (await john.run("get_booking_progress"))[0],
    ]
    assert replies[2].startswith("ERROR: 2 is not one of")
    assert replies[6].startswith("BOOKED"), replies[6]
    for reply in replies:
        assert_nothing_about_john(reply)
    [row] = await john.rows(Customer, Customer.phone == JOHN)
    booked = await john.rows(Appointment, Appointment.customer_id == row.id)
    assert sorted(a.vehicle_id for a in booked) == [1, 1]


async def test_a_callback_to_the_number_on_file_does_not_tell_its_digits(stranger: Call) -> None:
    """A caller with no caller ID who named John gets a callback to John's number on file
    (the safe direction) without hearing any of its digits."""
    stranger.state.caller_phone = None
    await stranger.run("lookup_customer", name="John Carter")
    content, _ = await stranger.run(
        "request_callback", preferred_window="tomorrow", reason="brakes"
    )
    assert content.startswith("CALLBACK_REQUESTED") and "number on file" in content
    assert_nothing_about_john(content)


async def test_staff_hear_an_unproved_name_as_the_callers_claim(stranger: Call, john: Call) -> None:
    """The team member rung for an escalation must not take a spoken name as checked."""
    for call in (stranger, john):
        call.escalations = []
        await call.run("lookup_customer", **({"name": "John Carter"} if call is stranger else {}))
        content, _ = await call.run("request_human_agent", reason="brakes")
        assert content.startswith("ESCALATION_STARTED"), content
    [claimed] = stranger.escalations or []
    assert claimed.customer_name == "A caller who says they are John Carter"
    [recognised] = john.escalations or []  # rang from the number on file
    assert recognised.customer_name == "John Carter"
