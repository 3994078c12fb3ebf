"""Staff actions from the dashboard (claim, pass) and duty changes, against the running
service on a real nats-server: the dashboard's NATS request/reply on ``call.<sid>.staff``,
``staff.duty`` broadcasts, signed Twilio webhooks over HTTP; Twilio's REST side is the fake
in the test kit."""

from __future__ import annotations

import asyncio

import pytest
from esc_testkit import (
    CUSTOMER_CALL,
    FakeCalls,
    Running,
    StatusLog,
    TwilioSide,
    request,
    running_service,
    seed_session,
    staff_action,
)
from esc_testkit import status_log as make_status_log
from nats.errors import NoRespondersError

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    HumanCallStatus,
    StaffActionReply,
    StaffContact,
    StaffDutyChanged,
    loads,
)
from dealerline_common.state_store import MemoryStateStore

S = HumanCallStatus
SID = "sess_staff1"

ALICE = StaffContact(name="Alice", phone="+14155550101", role="sales", staff_id=1)
BOB = StaffContact(name="Bob", phone="+14155550102", role="sales", staff_id=2)
CAROL = StaffContact(name="Carol", phone="+14155550103", role="sales", staff_id=3)
# Not on any hunt list (off duty when the escalation started); the dashboard sends the
# number as the person typed it.
DAN = StaffContact(name="Dan", phone="+1 (415) 555-0104", role="sales", staff_id=4)
DAN_E164 = "+14155550104"


async def _start(run: Running, client: Bus, staff: list[StaffContact]) -> StatusLog:
    await seed_session(run.store, SID)
    log = await make_status_log(client, SID)
    await client.publish_durable(
        subjects.ESCALATION_REQUEST, request(SID, staff=staff), msg_id="task_1"
    )
    return log


async def _ringing(run: Running, tw: TwilioSide, log: StatusLog, attempt: int) -> str:
    """Call ``attempt`` placed and ringing; its call sid."""
    sid = str((await run.calls.created_call(attempt))["sid"])
    run.calls.statuses[sid] = "ringing"
    await tw.status(attempt, sid, "ringing")
    await log.wait_for(S.RINGING, attempt=attempt)
    return sid


async def _metric(run: Running, line: str) -> None:
    for _ in range(100):
        if line in (await run.http.get("/metrics")).text:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"metric never reached: {line}")


async def _acked(bus: Bus) -> None:
    for _ in range(200):
        info = await bus.js.stream_info(subjects.STREAM_ESCALATIONS)
        if info.state.messages == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the escalation request was never acknowledged")


def _to(run: Running) -> list[str]:
    return [c["to"] for c in run.calls.created]


async def test_claim_lets_the_ringing_leg_go_and_rings_the_claimer(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url) as run:
        log = await _start(run, client, [ALICE, BOB])
        tw = run.twilio(SID)
        alice = await _ringing(run, tw, log, 1)

        reply = await staff_action(client, SID, "claim", DAN)
        assert reply.accepted, reply.detail
        assert "Alice" in reply.detail and "ringing you now" in reply.detail
        dan = await run.calls.created_call(2)
        assert dan["to"] == DAN_E164  # normalised from what the dashboard sent
        await run.calls.wait("Alice's leg let go", lambda: (alice, "canceled") in run.calls.ended)
        assert (await log.wait_for(S.CALLING, attempt=2)).staff_name == "Dan"

        # Claiming twice changes nothing; Twilio's late "canceled" for Alice neither.
        again = await staff_action(client, SID, "claim", DAN)
        assert again.accepted and "already being rung" in again.detail
        await tw.status(1, alice, "canceled")
        await asyncio.sleep(0.2)
        assert len(run.calls.created) == 2

        # Dan does not answer: Alice (let go, never asked) is next, then Bob.
        await tw.status(2, dan["sid"], "no-answer")
        third = await run.calls.created_call(3)
        await tw.status(3, third["sid"], "busy")
        fourth = await run.calls.created_call(4)
        await tw.status(4, fourth["sid"], "busy")
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted"
        assert _to(run) == [ALICE.phone, DAN_E164, ALICE.phone, BOB.phone]
        assert [(s[1], s[0], s[2]) for s in log.sequence()] == [
            (1, "calling", None),
            (1, "ringing", None),
            (1, "failed", "canceled"),
            (2, "calling", None),
            (2, "failed", "no_answer"),
            (3, "calling", None),
            (3, "failed", "busy"),
            (4, "calling", None),
            (4, "failed", "busy"),
            (4, "failed", "exhausted"),
        ]
        await _metric(
            run, 'dealerline_escalation_staff_actions_total{action="claim",outcome="accepted"} 2.0'
        )
        await _acked(client)


async def test_claim_while_someone_answered_waits_for_their_decline(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url) as run:
        log = await _start(run, client, [ALICE, BOB, CAROL])
        tw = run.twilio(SID)
        alice = str((await run.calls.created_call(1))["sid"])
        run.calls.statuses[alice] = "in-progress"
        await tw.answer(1, alice)
        await tw.detected(1, alice)
        await log.wait_for(S.WAITING_CONFIRMATION)

        reply = await staff_action(client, SID, "claim", CAROL)
        assert reply.accepted and "if they do not accept" in reply.detail
        own = await staff_action(client, SID, "claim", ALICE)
        assert own.accepted and "press 1" in own.detail
        await asyncio.sleep(0.3)
        assert len(run.calls.created) == 1 and run.calls.ended == []  # Alice is left alone

        # Alice declines: Carol (claimed) is rung before Bob.
        await tw.confirmed(1, alice, "2")
        assert (await log.wait_for(S.FAILED, attempt=1)).reason == "declined"
        carol = await run.calls.created_call(2)
        assert carol["to"] == CAROL.phone
        await tw.status(2, carol["sid"], "no-answer")
        bob = await run.calls.created_call(3)
        assert bob["to"] == BOB.phone
        await tw.status(3, bob["sid"], "busy")
        assert (await log.wait_for(S.FAILED, final=True)).reason == "exhausted"
        assert _to(run) == [ALICE.phone, CAROL.phone, BOB.phone]


async def test_pass_by_the_person_being_rung_moves_on(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        log = await _start(run, client, [ALICE, BOB])
        tw = run.twilio(SID)
        alice = await _ringing(run, tw, log, 1)

        reply = await staff_action(client, SID, "pass", ALICE)
        assert reply.accepted and "next person" in reply.detail
        assert (await log.wait_for(S.FAILED, attempt=1)).reason == "declined"
        await run.calls.wait("Alice's leg ended", lambda: (alice, "canceled") in run.calls.ended)
        bob = await run.calls.created_call(2)
        assert bob["to"] == BOB.phone
        again = await staff_action(client, SID, "pass", ALICE)
        assert again.accepted and "nothing changed" in again.detail

        # Bob answers, then passes instead of pressing 1: his leg ends; nobody is left.
        run.calls.statuses[bob["sid"]] = "in-progress"
        await tw.answer(2, bob["sid"])
        await log.wait_for(S.WAITING_CONFIRMATION, attempt=2)
        assert (await staff_action(client, SID, "pass", BOB)).accepted
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted"
        assert (bob["sid"], "completed") in run.calls.ended
        assert [(s[1], s[2]) for s in log.sequence() if s[0] == "failed"] == [
            (1, "declined"),
            (2, "declined"),
            (2, "exhausted"),
        ]
        assert _to(run) == [ALICE.phone, BOB.phone]
        await _acked(client)


async def test_pass_by_a_later_person_skips_them(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        log = await _start(run, client, [ALICE, BOB, CAROL])
        tw = run.twilio(SID)
        alice = await _ringing(run, tw, log, 1)

        reply = await staff_action(client, SID, "pass", BOB)
        assert reply.accepted and "taken off" in reply.detail
        outsider = await staff_action(client, SID, "pass", DAN)
        assert outsider.accepted and "not on this escalation's list" in outsider.detail
        assert run.calls.ended == []  # Alice's phone still rings

        await tw.status(1, alice, "busy")
        carol = await run.calls.created_call(2)
        assert carol["to"] == CAROL.phone
        await tw.status(2, carol["sid"], "busy")
        assert (await log.wait_for(S.FAILED, final=True)).reason == "exhausted"
        assert _to(run) == [ALICE.phone, CAROL.phone]
        await _metric(
            run, 'dealerline_escalation_staff_actions_total{action="pass",outcome="accepted"} 2.0'
        )


async def test_off_duty_people_are_not_rung_later(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        log = await _start(run, client, [ALICE, BOB, CAROL])
        tw = run.twilio(SID)
        alice = await _ringing(run, tw, log, 1)

        # Alice (being rung) and Bob go off duty; someone not on the list comes on duty.
        for staff_id, name, on in ((1, "Alice", False), (2, "Bob", False), (4, "Dan", True)):
            await client.publish(
                subjects.STAFF_DUTY, StaffDutyChanged(staff_id=staff_id, name=name, on_duty=on)
            )
        await _metric(run, "dealerline_escalation_duty_removals_total 1.0")  # Bob
        assert run.calls.ended == []  # the leg ringing Alice goes on

        await tw.status(1, alice, "no-answer")
        carol = await run.calls.created_call(2)
        assert carol["to"] == CAROL.phone
        await tw.status(2, carol["sid"], "no-answer")
        assert (await log.wait_for(S.FAILED, final=True)).reason == "exhausted"
        assert _to(run) == [ALICE.phone, CAROL.phone]  # neither Bob nor Dan


async def test_nobody_answers_when_no_escalation_runs(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        await seed_session(run.store, SID)
        with pytest.raises(NoRespondersError):
            await staff_action(client, SID, "claim", ALICE)
        assert run.calls.created == []


async def test_actions_refused_in_conference_and_once_over(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(
        nats_server.url, confirm_speech_timeout_s=0.2, watchdog_interval_s=0.2
    ) as run:
        log = await _start(run, client, [ALICE, BOB])
        tw = run.twilio(SID)
        alice = str((await run.calls.created_call(1))["sid"])
        run.calls.statuses[alice] = "in-progress"
        await tw.answer(1, alice)
        await tw.detected(1, alice)
        await tw.confirmed(1, alice)
        await log.wait_for(S.IN_CONFERENCE)

        claim = await staff_action(client, SID, "claim", BOB)
        assert not claim.accepted and claim.detail == "the caller is already talking with Alice"
        own = await staff_action(client, SID, "pass", ALICE)
        assert not own.accepted and own.detail == "you are already talking with the caller"
        junk = await client.nc.request(subjects.staff_action(SID), b"{}", timeout=3)
        bad = loads(StaffActionReply, junk.data)
        assert not bad.accepted and bad.detail.startswith("malformed staff action")

        # The caller hangs up; the owner's watchdog ends the escalation, and is held while
        # it ends Alice's leg: the escalation is final, its owner still answers.
        run.calls.hold_end = asyncio.Event()
        run.calls.statuses[alice] = "in-progress"
        run.calls.statuses[CUSTOMER_CALL] = "completed"
        assert (await log.wait_for(S.COMPLETED)).reason == "customer_hung_up"
        late = await staff_action(client, SID, "claim", BOB)
        assert not late.accepted and late.detail == "this escalation is over"
        run.calls.hold_end.set()
        await _acked(client)
        for _ in range(100):
            if SID not in run.service.escalator.runs:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(NoRespondersError):
            await staff_action(client, SID, "pass", ALICE)
        assert len(run.calls.created) == 1
        await _metric(
            run, 'dealerline_escalation_staff_actions_total{action="claim",outcome="refused"} 2.0'
        )


async def test_a_resumed_escalation_keeps_the_list_staff_changed(
    nats_server: NatsServer, client: Bus
) -> None:
    """Dan claims while Alice's phone rings and Bob passes; the replica dies before Dan
    answers. The replica that resumes the escalation keeps the list the staff made (from
    the state, not the request): Dan's leg is still his attempt, then Alice, never Bob."""
    store = MemoryStateStore()
    calls = FakeCalls()
    async with running_service(nats_server.url, store=store, calls=calls) as first:
        log = await _start(first, client, [ALICE, BOB, CAROL])
        await _ringing(first, first.twilio(SID), log, 1)
        assert (await staff_action(client, SID, "claim", DAN)).accepted
        dan = await calls.created_call(2)
        assert (await staff_action(client, SID, "pass", BOB)).accepted
        state = await store.get_state(SID)
        assert state.escalation.ringing is not None and state.escalation.ringing.name == "Dan"
        assert [p.name for p in state.escalation.hunt or []] == ["Alice", "Carol"]
        await first.service.kill()  # crash: the request is neither acked nor finished
    async with running_service(nats_server.url, store=store, calls=calls) as second:
        tw = second.twilio(SID)
        await second.resumed(SID)
        # The resumed run knows Dan is the one being rung: his claim is "already rung".
        again = await staff_action(client, SID, "claim", DAN)
        assert again.accepted and "already being rung" in again.detail
        calls.statuses[dan["sid"]] = "busy"
        await tw.status(2, dan["sid"], "busy")
        third = await calls.created_call(3)
        await tw.status(3, third["sid"], "busy")
        fourth = await calls.created_call(4)
        await tw.status(4, fourth["sid"], "busy")
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted"
        assert _to(second) == [ALICE.phone, DAN_E164, ALICE.phone, CAROL.phone]
