"""The orchestrator's decisions on an injectable clock (ring and confirmation deadlines,
the wait for "connecting you", lost call creations), the callback ledger, refused
transitions, and requests that can never run."""

from __future__ import annotations

import asyncio

from esc_testkit import (
    CUSTOMER_CALL,
    FakeCalls,
    Roster,
    make_settings,
    request,
    running_service,
    seed_session,
    status_log,
)

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import escalation_turn_id
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    EscalationRequest,
    HumanCallStatus,
    TurnPlayed,
)
from dealerline_common.metrics import Metrics
from dealerline_common.state import ConversationState, EscalationInfo
from dealerline_common.state_store import MemoryStateStore
from dealerline_escalation.changes import Decision
from dealerline_escalation.escalator import Escalator
from dealerline_escalation.facts import CallbackLedger
from dealerline_escalation.hunt import hunt_list
from dealerline_escalation.run import EscalationRun
from dealerline_escalation.twilio_client import TwilioRejected, TwilioUnavailable

S = HumanCallStatus
SID = "sess_unit"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _setup(
    client: Bus, nats_url: str, **overrides: object
) -> tuple[Escalator, EscalationRun, FakeCalls, Clock]:
    store = MemoryStateStore()
    calls = FakeCalls()
    clock = Clock()
    settings = make_settings(nats_url, **overrides)
    esc = Escalator(settings, client, store, calls, Metrics(), Roster(), clock=clock)
    await seed_session(store, SID)
    req = request(SID)
    assert await esc.begin(req) == "new"
    return esc, esc.new_run(req), calls, clock


async def _status(esc: Escalator) -> EscalationInfo:
    return (await esc.store.get_state(SID)).escalation


def test_callback_ledger_keeps_the_highest_sequence_per_call() -> None:
    ledger = CallbackLedger(max_calls=2)
    assert ledger.accept("CA1", 0)
    assert ledger.accept("CA1", 2)
    assert not ledger.accept("CA1", 2)  # duplicate
    assert not ledger.accept("CA1", 1)  # older
    assert ledger.accept("CA2", 0)
    assert ledger.accept("CA3", 5)  # CA1 is forgotten (bounded)
    assert ledger.accept("CA1", 1)


def test_hunt_list_skips_bad_and_repeated_numbers() -> None:
    req = request(SID)
    staff = [*req.staff, req.staff[0].model_copy(update={"name": "Alice again"})]
    staff.append(staff[0].model_copy(update={"name": "Nobody", "phone": "12"}))
    assert [p.name for p in hunt_list(staff)] == ["Alice", "Bob"]


async def test_stalled_ring_is_cancelled_and_the_next_person_rung(
    nats_server: NatsServer, client: Bus
) -> None:
    esc, run, calls, clock = await _setup(client, nats_server.url)
    assert not await run.step()
    alice = calls.created[0]["sid"]
    await esc.facts.observe(SID, "task_1", 1, alice, "ringing", seq=1)
    calls.statuses[alice] = "ringing"
    clock.now += 45 + 29
    assert not await run.step()
    assert calls.ended == [] and (await _status(esc)).status is S.RINGING
    clock.now += 2  # past ring timeout + stalled grace, and Twilio never said no-answer
    calls.statuses[alice] = "ringing"
    assert not await run.step()
    assert calls.ended == [(alice, "canceled")]
    info = await _status(esc)
    assert info.status is S.FAILED and info.detail == "no_answer"
    assert not await run.step()
    assert calls.created[1]["to"] == "+14155550102"
    assert (await _status(esc)).attempts == 2


async def test_lost_call_creation_is_given_up(nats_server: NatsServer, client: Bus) -> None:
    esc, run, calls, clock = await _setup(client, nats_server.url)
    calls.reject_create = TwilioUnavailable("create call: timed out")
    assert not await run.step()
    info = await _status(esc)
    assert info.status is S.CALLING and info.human_call_sid is None
    clock.now += 21
    assert not await run.step()
    assert (await _status(esc)).detail == "failed"
    # A number Twilio refuses fails its attempt at once.
    calls.reject_create = TwilioRejected("create call: HTTP 400", 400, 21211)
    assert not await run.step()
    info = await _status(esc)
    assert info.attempts == 2 and info.status is S.FAILED and info.detail == "failed"
    assert not await run.step()
    info = await _status(esc)
    assert info.status is S.FAILED and info.detail == "exhausted"
    assert await run.step()


async def test_late_callbacks_of_a_lost_creation_still_count(
    nats_server: NatsServer, client: Bus
) -> None:
    """The create timed out but the call was placed: its callbacks name the attempt."""
    esc, run, calls, _clock = await _setup(client, nats_server.url)
    calls.reject_create = TwilioUnavailable("create call: timed out")
    await run.step()
    await esc.facts.observe(SID, "task_1", 1, "CA" + "9" * 32, "ringing", seq=1)
    info = await _status(esc)
    assert info.status is S.RINGING and info.human_call_sid == "CA" + "9" * 32


async def test_answered_but_never_accepted_is_hung_up(nats_server: NatsServer, client: Bus) -> None:
    esc, run, calls, clock = await _setup(client, nats_server.url)
    await run.step()
    alice = calls.created[0]["sid"]
    calls.statuses[alice] = "in-progress"
    assert await esc.facts.human_answered(SID, "task_1", 1, alice)
    assert await esc.facts.key_pressed(SID, "task_1", 1, alice) is not None
    await run.step()  # the owner sees the answer (woken by its status message)
    clock.now += 89
    await run.step()
    assert calls.ended == []
    clock.now += 2
    await run.step()
    assert calls.ended == [(alice, "completed")]
    info = await _status(esc)
    assert info.status is S.FAILED and info.detail == "declined"


async def test_caller_is_moved_after_the_turn_played_or_the_timeout(
    nats_server: NatsServer, client: Bus
) -> None:
    esc, run, calls, clock = await _setup(client, nats_server.url)
    await run.step()
    alice = calls.created[0]["sid"]
    calls.statuses[alice] = "in-progress"
    await esc.facts.human_answered(SID, "task_1", 1, alice)
    await esc.facts.key_pressed(SID, "task_1", 1, alice)
    assert await esc.facts.accept(SID, "task_1", 1, alice)
    await run.step()
    clock.now += 19
    await run.step()
    assert calls.redirects == []
    run.played.add(escalation_turn_id("task_1", "confirmed"))
    await run.step()
    assert calls.redirects == [
        (CUSTOMER_CALL, f"https://dealer.example.com/api/voice/escalate?session_id={SID}")
    ]
    info = await _status(esc)
    assert info.status is S.IN_CONFERENCE and info.detail is None
    assert info.conference == f"support_{SID}"

    # Another escalation: nothing reports the turn played; after the timeout it moves anyway.
    esc2, run2, calls2, clock2 = await _setup(client, nats_server.url)
    await run2.step()
    bob = calls2.created[0]["sid"]
    calls2.statuses[bob] = "in-progress"
    await esc2.facts.human_answered(SID, "task_1", 1, bob)
    await esc2.facts.accept(SID, "task_1", 1, bob)
    await run2.step()
    clock2.now += 20
    await run2.step()
    assert len(calls2.redirects) == 1


async def test_turn_played_arrives_on_the_control_lane(
    nats_server: NatsServer, client: Bus
) -> None:
    esc, run, calls, _clock = await _setup(client, nats_server.url)
    task = asyncio.create_task(run.run(), name="run")
    try:
        alice = (await calls.created_call(1))["sid"]
        calls.statuses[alice] = "in-progress"
        await esc.facts.human_answered(SID, "task_1", 1, alice)
        await esc.facts.accept(SID, "task_1", 1, alice)
        await client.publish(
            subjects.control(SID),
            TurnPlayed(session_id=SID, turn_id=escalation_turn_id("task_1", "confirmed")),
        )
        await calls.wait("the redirect", lambda: calls.redirects)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_human_hanging_up_while_the_caller_is_moved(
    nats_server: NatsServer, client: Bus
) -> None:
    """Accepted, then gone before the caller arrived: the caller is brought straight back
    and the escalation ends (human_ended) with a notification for the agent."""
    esc, run, calls, _clock = await _setup(client, nats_server.url)
    await run.step()
    alice = calls.created[0]["sid"]
    calls.statuses[alice] = "in-progress"
    await esc.facts.human_answered(SID, "task_1", 1, alice)
    await esc.facts.accept(SID, "task_1", 1, alice)
    await run.step()
    real_redirect = calls.redirect

    async def redirect_while_human_hangs_up(call_sid: str, url: str) -> None:
        await real_redirect(call_sid, url)
        if "escalate" in url:
            await esc.facts.observe(SID, "task_1", 1, alice, "completed", seq=9)

    calls.redirect = redirect_while_human_hangs_up  # type: ignore[method-assign]
    run.played.add(escalation_turn_id("task_1", "confirmed"))
    await run.step()
    info = await _status(esc)
    assert info.status is S.FAILED and info.detail == "human_ended"
    assert [url.split("?")[0].rsplit("/", 1)[1] for _, url in calls.redirects] == [
        "escalate",
        "return-to-ai",
    ]
    state = await esc.store.sync_atomic_updates_to_state(SID)
    assert any(n.id == "task_1:failed" for n in state.pending_notifications)
    assert await run.step()


async def test_illegal_transitions_are_refused(nats_server: NatsServer, client: Bus) -> None:
    esc, run, calls, _clock = await _setup(client, nats_server.url)
    await run.step()
    alice = calls.created[0]["sid"]
    # Accepting from CALLING is not a move the machine makes: nothing changes.
    assert not await esc.facts.accept(SID, "task_1", 1, alice)
    change = await esc.committer.commit(SID, "task_1", lambda _s: Decision(S.IN_CONFERENCE))
    assert change is None
    assert (await _status(esc)).status is S.CALLING
    refused = [s for s in esc.m.refused.collect()[0].samples if s.name.endswith("_total")]
    assert refused[0].value == 1.0
    # A fact for another task or attempt changes nothing either.
    assert await esc.facts.observe(SID, "task_other", 1, alice, "busy") is None
    assert await esc.facts.observe(SID, "task_1", 2, alice, "busy") is None
    assert (await _status(esc)).status is S.CALLING


async def test_requests_that_cannot_run_are_dropped(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        # Another escalation of the session is still running.
        def running(state: ConversationState) -> None:
            state.call_sid = CUSTOMER_CALL
            state.escalation = EscalationInfo(task_id="task_old", status=S.RINGING)

        await run.store.update(SID, running)
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="a")
        # No conversation state at all for this session.
        await client.publish_durable(
            subjects.ESCALATION_REQUEST, request("sess_nobody"), msg_id="b"
        )
        # Not an escalation request.
        await client.publish_durable(subjects.ESCALATION_REQUEST, b'{"type":"x"}', msg_id="c")
        for _ in range(200):
            info = await client.js.stream_info(subjects.STREAM_ESCALATIONS)
            if info.state.messages == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("requests were not dropped")
        assert run.calls.created == []
        assert (await run.store.get_state(SID)).escalation.task_id == "task_old"
        metrics = (await run.http.get("/metrics")).text
        assert 'dealerline_escalation_requests_total{kind="busy"} 1.0' in metrics
        assert 'dealerline_escalation_requests_total{kind="unknown"} 1.0' in metrics


async def test_statuses_reach_the_bus_with_task_and_attempt(
    nats_server: NatsServer, client: Bus
) -> None:
    log = await status_log(client, SID)
    esc, run, calls, _clock = await _setup(client, nats_server.url)
    await run.step()
    calls.reject_create = None
    await esc.facts.observe(SID, "task_1", 1, calls.created[0]["sid"], "busy")
    first = await log.wait_for(S.CALLING)
    failed = await log.wait_for(S.FAILED)
    assert (first.task_id, first.attempt, first.final, first.staff_name) == (
        "task_1",
        1,
        False,
        "Alice",
    )
    assert failed.reason == "busy" and not failed.final
    assert isinstance(request(SID), EscalationRequest)


async def test_a_task_the_agent_recorded_before_asking_is_new(
    nats_server: NatsServer, client: Bus
) -> None:
    store = MemoryStateStore()
    esc = Escalator(make_settings(nats_server.url), client, store, FakeCalls(), Metrics(), Roster())
    await seed_session(store, SID)

    def recorded(state: ConversationState) -> None:
        state.escalation = EscalationInfo(task_id="task_1", reason="pricing")
        state.escalation_in_progress = True

    await store.update(SID, recorded)
    assert await esc.begin(request(SID)) == "new"
    info = (await store.get_state(SID)).escalation
    assert info.task_id == "task_1" and info.reason == "a trade-in offer on a 2019 Civic"
    assert info.status is S.NONE


async def test_facts_that_change_nothing_write_nothing(
    nats_server: NatsServer, client: Bus
) -> None:
    """The watchdog repeats what the state already says every few seconds: no write, so
    the agent's optimistic turn writes are not made to retry."""
    esc, run, calls, clock = await _setup(client, nats_server.url)
    await run.step()
    alice = calls.created[0]["sid"]
    await esc.facts.observe(SID, "task_1", 1, alice, "ringing")
    version = (await esc.store.get_state(SID)).version
    calls.statuses[alice] = "ringing"
    clock.now += 61
    await run.step()  # a watchdog round: fetches Alice's call (and the caller's)
    assert calls.fetches == 2
    await esc.facts.observe(SID, "task_1", 1, alice, "initiated")
    assert not await esc.facts.accept(SID, "task_1", 1, alice)
    assert (await esc.store.get_state(SID)).version == version
