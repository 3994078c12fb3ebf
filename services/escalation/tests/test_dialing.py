"""Only staff are rung: the escalation service checks every number against the dealership
database (real PostgreSQL) before it asks Twilio (the simulator's REST API, through the
service's real Twilio client) to call it; a forged hunt list on the bus rings nobody."""

from __future__ import annotations

import pytest
from esc_testkit import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    Roster,
    request,
    running_service,
    seed_session,
    status_log,
)
from sqlalchemy import select

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.db import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_common.db.testing import postgres_db_url_fixture  # noqa: F401
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import HumanCallStatus, StaffContact
from dealerline_escalation.staff_check import StaffRecord, refusal
from dealerline_sim.twilio_rest import TwilioSim

S = HumanCallStatus
# An attacker's premium-rate numbers (a hunt list rings each number once: three of them).
TOLL, TOLL2, TOLL3 = "+19005550197", "+19005550198", "+19005550199"
MARIA, BOB, CAROL = "+14155550111", "+14155550112", "+14155550113"


async def _staff(url: str) -> dict[str, int]:
    """Maria and Carol on duty, Bob off duty; their ids by name."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as session:
            session.add_all(
                [
                    Staff(name="Maria", phone=MARIA, role="sales", on_duty=True),
                    Staff(name="Bob", phone=BOB, role="sales", on_duty=False),
                    Staff(name="Carol", phone=CAROL, role="service", on_duty=True),
                ]
            )
            await session.commit()
            rows = (await session.execute(select(Staff))).scalars()
            return {r.name: r.id for r in rows}
    finally:
        await engine.dispose()


def _refusals(metrics: bytes) -> dict[str, float]:
    out = {}
    for line in metrics.decode().splitlines():
        if line.startswith("dealerline_escalation_dial_refusals_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


async def test_a_forged_hunt_list_rings_nobody_and_staff_are_still_rung(
    nats_server: NatsServer,
    client: Bus,
    postgres_db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await _staff(postgres_db_url)
    forged = [
        StaffContact(name="Mallory", phone=TOLL),  # no staff id
        StaffContact(name="Maria", phone=TOLL2, staff_id=ids["Maria"]),  # her id, not her number
        StaffContact(name="Ghost", phone=TOLL3, staff_id=max(ids.values()) + 100),
        StaffContact(name="Bob", phone=BOB, staff_id=ids["Bob"]),  # off duty
    ]
    sim = TwilioSim(AUTH_TOKEN, account_sid=ACCOUNT_SID, owned_numbers=[FROM_NUMBER])
    async with (
        sim,
        running_service(
            nats_server.url,
            use_service_calls=True,
            twilio_api_base_url=sim.rest_url,
            database_url=postgres_db_url,
        ) as run,
    ):
        sim.add_route(PUBLIC_URL, f"http://127.0.0.1:{run.service.http.port}")
        await seed_session(run.store, "sess_forged")
        log = await status_log(client, "sess_forged")
        await client.publish_durable(
            subjects.ESCALATION_REQUEST,
            request("sess_forged", "task_forged", staff=forged),
            msg_id="task_forged",
        )
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted"
        assert not sim.calls, "no number from a forged list may be rung"
        refusals = _refusals((await run.http.get("/metrics")).content)
        assert refusals == {
            "no_staff_id": 1.0,
            "not_their_number": 1.0,
            "unknown_staff": 1.0,
            "off_duty": 1.0,
        }

        # A genuine list is rung: the database's on-duty staff with their own numbers.
        await seed_session(run.store, "sess_real")
        await client.publish_durable(
            subjects.ESCALATION_REQUEST,
            request(
                "sess_real",
                "task_real",
                staff=[StaffContact(name="Carol", phone=CAROL, staff_id=ids["Carol"])],
            ),
            msg_id="task_real",
        )
        leg = await sim.wait_for_call_to(CAROL)
        assert leg is not None
        assert not any(sim.calls_to(n) for n in (TOLL, TOLL2, TOLL3))
    out = capsys.readouterr()
    for number in (TOLL, TOLL2, TOLL3, BOB):
        assert number not in out.out + out.err, "numbers are logged masked"
    assert "refused to ring a number" in out.out + out.err


def test_refusal_reasons() -> None:
    maria = StaffRecord(1, "Maria", MARIA, True)
    assert refusal(StaffContact(name="M", phone=MARIA, staff_id=1), maria) is None
    # The same number written another way is hers.
    assert refusal(StaffContact(name="M", phone="+1 (415) 555-0111", staff_id=1), maria) is None
    assert refusal(StaffContact(name="M", phone=MARIA), maria) == "no_staff_id"
    assert refusal(StaffContact(name="M", phone=MARIA, staff_id=1), None) == "unknown_staff"
    off = StaffRecord(1, "Maria", MARIA, False)
    assert refusal(StaffContact(name="M", phone=MARIA, staff_id=1), off) == "off_duty"
    wrong = StaffContact(name="M", phone=TOLL, staff_id=1)
    assert refusal(wrong, maria) == "not_their_number"
    assert refusal(StaffContact(name="M", phone="junk", staff_id=1), maria) == "not_their_number"


class Broken(Roster):
    async def lookup(self, staff_id: int) -> StaffRecord | None:
        raise OSError("database unreachable")


async def test_nobody_is_rung_while_the_database_cannot_be_read(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url, staff=Broken()) as run:
        await seed_session(run.store, "sess_nodb")
        log = await status_log(client, "sess_nodb")
        await client.publish_durable(
            subjects.ESCALATION_REQUEST, request("sess_nodb"), msg_id="task_1"
        )
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted"
        assert not run.calls.created
        metrics = (await run.http.get("/metrics")).content
        assert _refusals(metrics) == {"directory_unavailable": 2.0}
