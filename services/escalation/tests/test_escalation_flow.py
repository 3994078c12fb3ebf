"""The escalation service end to end on a real nats-server: JetStream requests, signed
webhooks over HTTP, the state store, published statuses; Twilio's REST side is the fake
in the test kit (the phone simulator's REST comes in the cross-service tests)."""

from __future__ import annotations

import asyncio
import os
import uuid

from esc_testkit import (
    CUSTOMER_CALL,
    GATEWAY_URL,
    PUBLIC_URL,
    STAFF,
    FakeCalls,
    Running,
    StatusLog,
    TwilioSide,
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
    CallEndedEvent,
    HumanCallStatus,
    HumanStatusEvent,
    StaffContact,
    StreamStopped,
    TurnPlayed,
    parse_event,
)
from dealerline_common.state import TaskStatus
from dealerline_common.state_store import MemoryStateStore, RedisStateStore

S = HumanCallStatus
SID = "sess_esc1"


async def _events(bus: Bus, session_id: str) -> list[object]:
    """Every durable event of the session so far (read back from the JetStream stream)."""
    out: list[object] = []
    sub = await bus.js.subscribe(subjects.events(session_id), ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except Exception:
                break
            out.append(parse_event(msg.data))
    finally:
        await sub.unsubscribe()
    return out


async def _acked(bus: Bus) -> None:
    """The request has been acknowledged (the work queue is empty)."""
    for _ in range(200):
        info = await bus.js.stream_info(subjects.STREAM_ESCALATIONS)
        if info.state.messages == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the escalation request was never acknowledged")


async def accepted_by_the_first(run: Running, client: Bus) -> tuple[StatusLog, str, TwilioSide]:
    """A seeded session escalates; the first person answers, presses a key, accepts. Returns
    the status log, the person's call sid and the Twilio side of the session."""
    await seed_session(run.store, SID)
    log = await status_log(client, SID)
    await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
    human = (await run.calls.created_call(1))["sid"]
    tw = run.twilio(SID)
    run.calls.statuses[human] = "in-progress"
    await tw.answer(1, human)
    await tw.detected(1, human)
    await tw.confirmed(1, human)
    return log, human, tw


async def test_accepted_call_joins_conference_and_returns_to_ai(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url) as run:
        await seed_session(run.store, SID)
        log = await status_log(client, SID)
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
        call = await run.calls.created_call(1)
        assert call["to"] == "+14155550101" and call["from"] == "+18005550100"
        assert call["timeout"] == 45
        assert call["url"] == (
            f"{PUBLIC_URL}/api/voice/human-answer?session_id={SID}&task_id=task_1&attempt=1"
        )
        assert call["status_callback"].startswith(f"{PUBLIC_URL}/api/voice/human-status?")
        human = call["sid"]
        calling = await log.wait_for(S.CALLING)
        assert calling.staff_name == "Alice" and calling.attempt == 1 and not calling.final

        tw = run.twilio(SID)
        await tw.status(1, human, "initiated")
        await tw.status(1, human, "ringing")
        await log.wait_for(S.RINGING)
        run.calls.statuses[human] = "in-progress"
        answer = await tw.answer(1, human)
        assert "Press any key" in answer.text
        await log.wait_for(S.WAITING_CONFIRMATION)
        detected = await tw.detected(1, human)
        assert "Dana Smith needs help with a trade-in offer on a 2019 Civic" in detected.text
        confirmed = await tw.confirmed(1, human, "1")
        assert "<Conference" in confirmed.text and f"support_{SID}</Conference>" in confirmed.text
        status = await log.wait_for(S.CONFIRMED)
        assert status.task_id == "task_1" and status.staff_name == "Alice"

        # The notification was queued before CONFIRMED was published.
        state = await run.store.sync_atomic_updates_to_state(SID)
        notes = {n.id: n for n in state.pending_notifications}
        assert notes["task_1:confirmed"].kind == "human_available"
        assert notes["task_1:confirmed"].data == {"name": "Alice"}
        assert state.escalation.conference == f"support_{SID}"

        # The caller is moved only once the "connecting you" turn has played.
        assert run.calls.redirects == []
        await client.publish(
            subjects.control(SID),
            TurnPlayed(session_id=SID, turn_id=escalation_turn_id("task_1", "confirmed")),
        )
        await run.calls.wait("redirect to the conference", lambda: run.calls.redirects)
        assert run.calls.redirects[0] == (
            CUSTOMER_CALL,
            f"{GATEWAY_URL}/api/voice/escalate?session_id={SID}",
        )
        await log.wait_for(S.IN_CONFERENCE)

        # The team member hangs up: the caller goes back to the AI.
        run.calls.statuses[human] = "completed"
        await tw.status(1, human, "completed")
        done = await log.wait_for(S.COMPLETED)
        assert done.final and done.reason == "human_ended"
        assert run.calls.redirects[-1] == (
            CUSTOMER_CALL,
            f"{GATEWAY_URL}/api/voice/return-to-ai?session_id={SID}&reason=human_ended",
        )
        await _acked(client)

        state = await run.store.sync_atomic_updates_to_state(SID)
        assert state.escalation.status is S.COMPLETED
        assert not state.escalation_in_progress
        task = state.task("task_1")
        assert task is not None and task.status is TaskStatus.DONE and task.kind == "escalation"
        assert [s[0] for s in log.sequence()] == [
            "calling", "ringing", "waiting_confirmation", "confirmed", "in_conference", "completed",
        ]  # fmt: skip
        events = await _events(client, SID)
        human_events = [e for e in events if isinstance(e, HumanStatusEvent)]
        assert [e.status for e in human_events] == [i.status for i in log.items]
        assert human_events[-1].final and human_events[-1].reason == "human_ended"
        assert len(run.calls.created) == 1


async def test_hunt_list_moves_on_after_each_failure_then_gives_up(
    nats_server: NatsServer, client: Bus
) -> None:
    staff = [
        *STAFF,
        StaffContact(name="Bad", phone="not-a-number"),
        StaffContact(name="Carol", phone="+14155550103", staff_id=3),
        StaffContact(name="Dan", phone="+14155550104", staff_id=4),
    ]
    async with running_service(nats_server.url) as run:
        await seed_session(run.store, SID)
        log = await status_log(client, SID)
        await client.publish_durable(
            subjects.ESCALATION_REQUEST, request(SID, staff=staff), msg_id="task_1"
        )
        tw = run.twilio(SID)
        alice = (await run.calls.created_call(1))["sid"]
        await tw.status(1, alice, "busy")
        busy = await log.wait_for(S.FAILED, attempt=1)
        assert busy.reason == "busy" and not busy.final

        bob = await run.calls.created_call(2)
        assert bob["to"] == "+14155550102"
        # Bob's phone answers but nobody presses a key: screening or voicemail.
        run.calls.statuses[bob["sid"]] = "in-progress"
        assert "<Hangup" in (await tw.answer(2, bob["sid"])).text
        await tw.status(2, bob["sid"], "completed")
        no_key = await log.wait_for(S.FAILED, attempt=2)
        assert no_key.reason == "no_key"

        # The invalid number is skipped; Carol answers, presses a key, then declines.
        carol = await run.calls.created_call(3)
        assert carol["to"] == "+14155550103"
        await tw.answer(3, carol["sid"])
        await tw.detected(3, carol["sid"])
        declined = await tw.confirmed(3, carol["sid"], "2")
        assert "declined" in declined.text and "<Hangup" in declined.text
        assert (await log.wait_for(S.FAILED, attempt=3)).reason == "declined"

        dan = (await run.calls.created_call(4))["sid"]
        await tw.status(4, dan, "no-answer")
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted" and final.attempt == 4
        await _acked(client)
        state = await run.store.sync_atomic_updates_to_state(SID)
        note = next(n for n in state.pending_notifications if n.id == "task_1:failed")
        assert note.kind == "escalation_failed" and note.data == {"reason": "exhausted"}
        assert state.task("task_1").status is TaskStatus.FAILED  # type: ignore[union-attr]
        assert len(run.calls.created) == 4
        reasons = [(s[1], s[2]) for s in log.sequence() if s[0] == "failed"]
        assert reasons == [
            (1, "busy"),
            (2, "no_key"),
            (3, "declined"),
            (4, "no_answer"),
            (4, "exhausted"),
        ]


async def test_empty_hunt_list_fails_at_once(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        await seed_session(run.store, SID)
        log = await status_log(client, SID)
        await client.publish_durable(
            subjects.ESCALATION_REQUEST, request(SID, staff=[]), msg_id="task_1"
        )
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "exhausted"
        await _acked(client)
        assert run.calls.created == []


async def test_caller_hanging_up_while_staff_rings_cancels_the_call(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url) as run:
        await seed_session(run.store, SID)
        log = await status_log(client, SID)
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
        human = (await run.calls.created_call(1))["sid"]
        tw = run.twilio(SID)
        await tw.status(1, human, "ringing")
        run.calls.statuses[human] = "ringing"
        await log.wait_for(S.RINGING)
        # A stop that is a hand-off is not a hang-up.
        await client.publish(subjects.control(SID), StreamStopped(session_id=SID, reason="handoff"))
        run.calls.statuses[CUSTOMER_CALL] = "completed"
        await client.publish(
            subjects.control(SID),
            StreamStopped(session_id=SID, call_sid=CUSTOMER_CALL, stream_sid="MZ1"),
        )
        final = await log.wait_for(S.FAILED, final=True)
        assert final.reason == "customer_hung_up"
        # The status is published, then the person's call is cancelled.
        ended = await run.calls.wait("the person's call ended", lambda: run.calls.ended)
        assert ended == [(human, "canceled")]
        await _acked(client)
        state = await run.store.sync_atomic_updates_to_state(SID)
        # Nobody is left to tell: no "escalation failed" notification for the agent.
        assert all(n.kind != "escalation_failed" for n in state.pending_notifications)
        # Twilio's late "canceled" callback changes nothing.
        await tw.status(1, human, "canceled")
        assert log.items[-1] is final


async def test_caller_hanging_up_in_conference_ends_the_human_leg(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url, confirm_speech_timeout_s=0.2) as run:
        log, human, tw = await accepted_by_the_first(run, client)
        # No TurnPlayed: the caller is moved once confirm_speech_timeout_s has passed.
        await log.wait_for(S.IN_CONFERENCE)
        # The caller hangs up: the conference ends; the human leg is ended by us.
        run.calls.statuses[CUSTOMER_CALL] = "completed"
        resp = await tw.conference("conference-end", None)
        assert resp.status_code == 204
        final = await log.wait_for(S.COMPLETED)
        assert final.final and final.reason == "customer_hung_up"
        assert run.calls.ended == [(human, "completed")]
        assert len(run.calls.redirects) == 1  # into the conference, never back
        await _acked(client)
        ended = [e for e in await _events(client, SID) if isinstance(e, CallEndedEvent)]
        assert len(ended) == 1 and ended[0].reason == "customer_hung_up"
        # The human's completed callback arriving now changes nothing.
        await tw.status(1, human, "completed")
        assert log.items[-1] is final


async def test_watchdog_ends_a_conference_whose_caller_left_unseen(
    nats_server: NatsServer, client: Bus
) -> None:
    """The caller hung up on the way into the room (or its callbacks were lost): no
    conference callback ever comes; the watchdog finds the caller's call over, ends the
    person's leg and completes the escalation."""
    async with running_service(
        nats_server.url, confirm_speech_timeout_s=0.2, watchdog_interval_s=0.2
    ) as run:
        log, human, tw = await accepted_by_the_first(run, client)
        await log.wait_for(S.IN_CONFERENCE)
        await asyncio.sleep(0.5)  # watchdog rounds while the caller is still there
        assert run.calls.ended == []
        run.calls.statuses[CUSTOMER_CALL] = "completed"
        final = await log.wait_for(S.COMPLETED)
        assert final.final and final.reason == "customer_hung_up"
        ended = await run.calls.wait("the person's leg ended", lambda: run.calls.ended)
        assert ended == [(human, "completed")]
        await _acked(client)


async def test_human_leaving_the_conference_returns_the_caller_once(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url, confirm_speech_timeout_s=0.2) as run:
        log, human, tw = await accepted_by_the_first(run, client)
        await log.wait_for(S.IN_CONFERENCE)
        run.calls.statuses[human] = "completed"
        # participant-leave and the completed callback race: the caller returns once.
        await asyncio.gather(
            tw.conference("participant-leave", human), tw.status(1, human, "completed")
        )
        done = await log.wait_for(S.COMPLETED)
        assert done.reason == "human_ended"
        await _acked(client)
        back = [r for r in run.calls.redirects if "return-to-ai" in r[1]]
        assert len(back) == 1
        assert [s[0] for s in log.sequence()].count("completed") == 1


async def test_status_callbacks_are_ordered_deduplicated_and_never_downgraded(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url) as run:
        await seed_session(run.store, SID)
        log = await status_log(client, SID)
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
        human = (await run.calls.created_call(1))["sid"]
        tw = run.twilio(SID)
        await log.wait_for(S.CALLING)
        await tw.status(1, human, "ringing", seq=1)
        await log.wait_for(S.RINGING)
        await tw.status(1, human, "ringing", seq=1)  # duplicate
        await tw.status(1, human, "initiated", seq=0)  # older, arriving late
        await tw.status(1, human, "no-answer", seq=3)
        await log.wait_for(S.FAILED, attempt=1)
        await tw.status(1, human, "in-progress", seq=2)  # older than the final one
        await tw.status(1, human, "ringing", seq=4)  # newer, but the call is final
        await run.calls.created_call(2)
        await log.wait_for(S.CALLING, attempt=2)
        await asyncio.sleep(0.2)
        attempt1 = [(s[0], s[2]) for s in log.sequence() if s[1] == 1]
        assert attempt1 == [("calling", None), ("ringing", None), ("failed", "no_answer")]
        metrics = (await run.http.get("/metrics")).text
        assert "dealerline_escalation_stale_callbacks_total 3.0" in metrics


async def test_watchdog_applies_a_missed_callback(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url, watchdog_interval_s=0.1) as run:
        await seed_session(run.store, SID)
        log = await status_log(client, SID)
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
        human = (await run.calls.created_call(1))["sid"]
        # No callback ever comes: Twilio's REST API says it rang out.
        run.calls.statuses[human] = "no-answer"
        failed = await log.wait_for(S.FAILED, attempt=1)
        assert failed.reason == "no_answer"
        await run.calls.created_call(2)
        metrics = (await run.http.get("/metrics")).text
        assert "dealerline_escalation_watchdog_corrections_total 1.0" in metrics


async def test_redelivered_request_is_handled_once(nats_server: NatsServer, client: Bus) -> None:
    """A replica dies while staff rings; another resumes from the state without ringing
    anyone again, and a request for a finished task is acknowledged and ignored."""
    store = MemoryStateStore()
    calls = FakeCalls()
    await seed_session(store, SID)
    log = await status_log(client, SID)
    async with running_service(nats_server.url, store=store, calls=calls) as first:
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
        human = (await calls.created_call(1))["sid"]
        await first.twilio(SID).status(1, human, "ringing")
        await log.wait_for(S.RINGING)
        await first.service.kill()  # crash: the request is neither acked nor finished
    async with running_service(nats_server.url, store=store, calls=calls) as second:
        tw = second.twilio(SID)
        # The request comes back after ack_wait; the resumed owner carries on.
        await second.resumed(SID)
        calls.statuses[human] = "busy"
        await tw.status(1, human, "busy")
        await calls.created_call(2)
        bob = calls.created[1]["sid"]
        await tw.status(2, bob, "failed")
        await log.wait_for(S.FAILED, final=True)
        await _acked(client)
        assert len(calls.created) == 2  # Alice was not rung twice
        # The same task asked for again: acknowledged, nothing rung.
        await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1b")
        await _acked(client)
        assert len(calls.created) == 2
        metrics = (await second.http.get("/metrics")).text
        assert 'dealerline_escalation_requests_total{kind="resume"} 1.0' in metrics
        assert 'dealerline_escalation_requests_total{kind="done"} 1.0' in metrics


async def test_through_redis_shared_with_the_agent(nats_server: NatsServer, client: Bus) -> None:
    """The service builds its own Redis store from ESCALATION_STATE_URL; the "agent" (this
    test) reads the same keys: the state, the notification and the task record."""
    url = os.environ.get("DL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    ns = f"test-esc-{uuid.uuid4().hex[:8]}:"
    agent_store = RedisStateStore(url, namespace=ns)
    try:
        await seed_session(agent_store, SID)
        async with running_service(
            nats_server.url, state_url=url, state_namespace=ns, confirm_speech_timeout_s=0.2
        ) as run:
            assert isinstance(run.service.store, RedisStateStore)
            log = await status_log(client, SID)
            await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
            human = (await run.calls.created_call(1))["sid"]
            tw = run.twilio(SID)
            run.calls.statuses[human] = "in-progress"
            # The ringing callback and the answer webhook race on the optimistic lock.
            await asyncio.gather(tw.status(1, human, "ringing"), tw.answer(1, human))
            await log.wait_for(S.WAITING_CONFIRMATION)
            await tw.detected(1, human)
            await tw.confirmed(1, human)
            await log.wait_for(S.IN_CONFERENCE)
            run.calls.statuses[human] = "completed"
            await tw.status(1, human, "completed")
            await log.wait_for(S.COMPLETED)
            await _acked(client)
        state = await agent_store.sync_atomic_updates_to_state(SID)
        assert state.escalation.status is S.COMPLETED
        assert state.escalation.detail == "human_ended"
        assert state.escalation.staff_name == "Alice"
        assert state.escalation.human_call_sid == human
        assert [n.id for n in state.pending_notifications] == ["task_1:confirmed"]
        task = state.task("task_1")
        assert task is not None and task.status is TaskStatus.DONE
    finally:
        await agent_store.delete(SID)
        await agent_store.close()
