"""Caller identity through the fleet's own processes: a real nats-server, the agent and the
after-call service each started as ``python -m ...``, the scripted LLM over HTTP (the
``identity`` scenario: a model that reads every tool result aloud) and the Twilio
simulator's Messages API, where the after-call notifier sends the texted code.

A caller from another number asks for John Carter's appointment and tries to cancel it:
refused, unchanged in the database, nothing about John spoken. John verifies by his plate
from his own number, then from another phone by the code texted to his number on file
(read from the simulator's message log), and moves the appointment."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from sqlalchemy import select

from dealerline_cli.fleet import SERVICES, Fleet, LlmChoice, TwilioAccount
from dealerline_common.bus import Bus
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Appointment, AppointmentStatus, Customer
from dealerline_sim.agent_caller import Caller
from dealerline_sim.twilio_rest import TwilioSim

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

JOHN = "+14155550123"  # John Carter in the demo data: 2019 Toyota Camry, plate 8ABC123
STRANGER = "+14155550199"
DEALER = "+18005550100"
TZ = ZoneInfo("America/Los_Angeles")
JOHN_SECRETS = ("Camry", "Toyota", "Synthetic", "Express Bay", "0123", "john.carter", "8ABC")
SCENARIO = Path(__file__).parents[1] / "libs/sim/src/dealerline_sim/scenarios/identity.yaml"


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """The fleet lives for the whole module, by design."""
    return


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def twilio() -> AsyncIterator[TwilioSim]:
    sim = await TwilioSim().start()
    yield sim
    await sim.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(twilio: TwilioSim) -> AsyncIterator[Fleet]:
    account = TwilioAccount(twilio.account_sid, twilio.auth_token, DEALER, twilio.rest_url)
    async with Fleet(
        log_dir=Path("artifacts") / "e2e-identity" / "logs",
        llm=LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True),
        scenario=SCENARIO,
        services=tuple(s for s in SERVICES if s.name in ("agent", "aftercall")),
        twilio=account,
        quiet=True,
    ) as f:
        yield f


@pytest_asyncio.fixture(loop_scope="module")
async def bus(fleet: Fleet) -> AsyncIterator[Bus]:
    b = Bus(str(fleet.nats_url), "identity-e2e")
    await b.connect()
    yield b
    await b.close()


async def johns_appointment(fleet: Fleet) -> Appointment:
    engine = create_engine_from_url(str(fleet.database_url))
    try:
        async with session_factory(engine)() as s:
            john = (await s.execute(select(Customer).where(Customer.phone == JOHN))).scalar_one()
            query = select(Appointment).where(Appointment.customer_id == john.id)
            return (await s.execute(query)).scalar_one()
    finally:
        await engine.dispose()


async def call(bus: Bus, sid: str, number: str) -> Caller:
    caller = Caller(bus, sid)
    await caller.start()
    await caller.turn(await caller.started(f"MZ{sid}", call_sid=f"CA{sid}", from_number=number))
    return caller


async def said(caller: Caller, line: str) -> str:
    return " ".join(s.text for s in await caller.turn(await caller.say(line)))


async def texted_code(twilio: TwilioSim, to: str) -> str:
    for _ in range(300):
        for message in reversed(twilio.messages_to(to)):
            found = re.search(r"verification code is (\d{6})\b", message.body)
            if found:
                return found.group(1)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no code texted to {to}: {[m.body for m in twilio.messages]}")


async def test_a_stranger_asking_for_johns_appointment_is_refused(fleet: Fleet, bus: Bus) -> None:
    appt = await johns_appointment(fleet)
    caller = await call(bus, "e2e_hostile", STRANGER)
    await said(caller, "Hi, this is John Carter")
    listed = await said(caller, "What are my appointments?")
    cancelled = await said(caller, f"Please cancel appointment {appt.id}")
    assert listed.startswith("VERIFICATION_REQUIRED")
    assert cancelled.startswith("VERIFICATION_REQUIRED")
    heard = " ".join(s.text for s in caller.heard).lower()
    assert not [s for s in JOHN_SECRETS if s.lower() in heard]
    after = await johns_appointment(fleet)
    assert (after.status, after.start_at) == (AppointmentStatus.BOOKED, appt.start_at)


async def test_john_verifies_by_fact_then_by_texted_code_and_moves_it(
    fleet: Fleet, bus: Bus, twilio: TwilioSim
) -> None:
    appt = await johns_appointment(fleet)
    own_phone = await call(bus, "e2e_fact", JOHN)
    assert (await said(own_phone, "My plate is 8ABC123")).startswith("VERIFIED")
    assert "Synthetic Oil Change" in await said(own_phone, "What are my appointments?")

    other_phone = await call(bus, "e2e_code", STRANGER)
    await said(other_phone, "Hi, this is John Carter")
    assert (await said(other_phone, "Can you text me a code?")).startswith("CODE_SENT")
    code = await texted_code(twilio, JOHN)
    assert twilio.messages_to(STRANGER) == []
    assert code not in " ".join(s.text for s in other_phone.heard)
    assert (await said(other_phone, f"The code is {code}")).startswith("VERIFIED")
    moved = await said(other_phone, f"Please move appointment {appt.id} to next Wednesday")
    assert moved.startswith("RESCHEDULED"), moved
    after = await johns_appointment(fleet)
    assert after.status == AppointmentStatus.BOOKED and after.start_at != appt.start_at
    assert after.start_at.astimezone(TZ).strftime("%A %H:%M") == "Wednesday 14:00"
