"""The record keeper inside the aftercall service, against a real nats-server, a real
SQLite file (the demo dealership), real Redis and the scripted LLM over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.msg import Msg
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from dealerline_aftercall.record import desk_email_key
from dealerline_aftercall.service import Service
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Call, TranscriptTurn
from dealerline_common.messages import (
    AppointmentEvent,
    CallEndedEvent,
    CallRecordedEvent,
    CallStartedEvent,
    HumanStatusEvent,
    LatencyEvent,
    NotificationJob,
    StateUpdateEvent,
    StreamStartedEvent,
    TranscriptEvent,
    TurnTimings,
    Wire,
    loads,
    parse_event,
)
from dealerline_common.net import free_port
from dealerline_common.state import ConversationState, CustomerInfo
from dealerline_common.state_store import StateStore
from dealerline_sim.llm import Scenario, ScriptedLLM

CALLER = "+14155550123"
CALLER_LINE = "Hi, I would like to book an oil change for my Camry."
TUESDAY_9_LA = "2030-01-08T09:00:00-08:00"


def booking_call(sid: str, t0: float) -> tuple[list[Wire], list[Wire]]:
    """A booking call's events, in two halves (the second ends the call)."""
    first: list[Wire] = [
        CallStartedEvent(session_id=sid, call_sid="CA1", from_masked="+1*******123", at=t0),
        StreamStartedEvent(session_id=sid, stream_sid="MZ1", at=t0 + 0.1),
        TranscriptEvent(
            session_id=sid,
            role="assistant",
            text="Thanks for calling Sunrise Motors. How can I help?",
            turn_id="turn-MZ1",
            at=t0 + 1,
        ),
        LatencyEvent(
            session_id=sid,
            turn_id="turn-MZ1",
            timings=TurnTimings(),
            stages_ms={"greeting": 900.0},
            at=t0 + 1.1,
        ),
        TranscriptEvent(
            session_id=sid, role="user", text=CALLER_LINE, turn_id="turn-u1", at=t0 + 5
        ),
        TranscriptEvent(
            session_id=sid,
            role="assistant",
            text="Sure, I can book an oil change. Which day works best for you?",
            turn_id="turn-u1",
            at=t0 + 6,
        ),
        # The caller spoke over the reply: only its first sentence was heard.
        TranscriptEvent(
            session_id=sid,
            role="assistant",
            text="Sure, I can book an oil change.",
            turn_id="turn-u1",
            interrupted=True,
            at=t0 + 6.5,
        ),
        LatencyEvent(
            session_id=sid,
            turn_id="turn-u1",
            timings=TurnTimings(),
            stages_ms={"total": 1200.0, "stt": 300.0},
            at=t0 + 6.1,
        ),
    ]
    second: list[Wire] = [
        TranscriptEvent(
            session_id=sid,
            role="user",
            text="Tuesday at nine, my name is Dana Whitfield.",
            turn_id="turn-u2",
            at=t0 + 9,
        ),
        TranscriptEvent(
            session_id=sid,
            role="assistant",
            text="You're all set for Tuesday at nine a.m.",
            turn_id="turn-u2",
            at=t0 + 10,
        ),
        AppointmentEvent(
            session_id=sid,
            action="booked",
            appointment_id=1,
            service="Conventional Oil Change",
            start=TUESDAY_9_LA,
            vehicle="2019 Toyota Camry",
            customer_name="Dana Whitfield",
            turn_id="turn-u2",
            at=t0 + 10,
        ),
        StateUpdateEvent(
            session_id=sid,
            state={"customer": {"id": 1, "name": "Dana Whitfield"}},
            at=t0 + 10.1,
        ),
        CallEndedEvent(session_id=sid, reason="stop", at=t0 + 12),
    ]
    return first, second


async def publish(bus: Bus, events: list[Wire]) -> None:
    for event in events:
        sid = getattr(event, "session_id")  # noqa: B009
        await bus.publish_durable(subjects.events(sid), event)


async def put_state(store: StateStore, sid: str, **fields: Any) -> None:
    def mutate(state: ConversationState) -> None:
        for key, value in fields.items():
            setattr(state, key, value)

    await store.update(sid, mutate)


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.05)


class Db:
    def __init__(self, url: str) -> None:
        self.engine = create_engine_from_url(url)
        self.sessions = session_factory(self.engine)

    async def call(self, sid: str) -> Call | None:
        async with self.sessions() as s:
            return (
                await s.execute(
                    select(Call).where(Call.session_id == sid).options(selectinload(Call.turns))
                )
            ).scalar()

    async def recorded(self, sid: str) -> Call | None:
        call = await self.call(sid)
        return call if call is not None and call.recorded_at is not None else None

    async def counts(self, sid: str) -> tuple[int, int]:
        async with self.sessions() as s:
            calls = (
                await s.execute(select(func.count()).where(Call.session_id == sid))
            ).scalar_one()
            turns = (
                await s.execute(
                    select(func.count())
                    .select_from(TranscriptTurn)
                    .join(Call)
                    .where(Call.session_id == sid)
                )
            ).scalar_one()
            return calls, turns


@pytest.fixture
async def db(dealer_db: str) -> AsyncIterator[Db]:
    d = Db(dealer_db)
    yield d
    await d.engine.dispose()


class Watch:
    """Core subscriptions to the desk's email jobs and the call_recorded events."""

    def __init__(self) -> None:
        self.jobs: list[NotificationJob] = []
        self.recorded: list[CallRecordedEvent] = []

    async def start(self, bus: Bus) -> Watch:
        async def on_job(msg: Msg) -> None:
            self.jobs.append(loads(NotificationJob, msg.data))

        async def on_event(msg: Msg) -> None:
            event = parse_event(msg.data)
            if isinstance(event, CallRecordedEvent):
                self.recorded.append(event)

        await bus.subscribe(subjects.NOTIFY_EMAIL, on_job)
        await bus.subscribe(subjects.ALL_EVENTS, on_event)
        return self


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        if service.health.ready:
            await service.drain()


async def start(services: list[Service], settings: Any) -> Service:
    service = Service(settings)
    await service.start()
    services.append(service)
    return service


async def test_a_calls_events_become_one_record_with_summary_and_desk_email(
    make_settings: Any,
    services: list[Service],
    test_bus: Bus,
    state_store: StateStore,
    db: Db,
    llm: ScriptedLLM,
) -> None:
    sid = "sess_book1"
    watch = await Watch().start(test_bus)
    await put_state(state_store, sid, caller_phone=CALLER, call_sid="CA1")
    await start(services, make_settings())
    first, second = booking_call(sid, time.time() - 20)
    await publish(test_bus, first + second)

    call = await eventually(lambda: db.recorded(sid))
    assert call.outcome == "booked"
    assert call.end_reason == "hangup"
    assert call.duration_s == pytest.approx(12.0, abs=0.01)
    assert call.caller_phone == CALLER, "the full number comes from the state store"
    assert call.customer_name == "Dana Whitfield"
    assert call.customer_id == 1
    assert call.barge_ins == 1
    assert [(t.role, t.text, t.interrupted) for t in call.turns] == [
        ("agent", "Thanks for calling Sunrise Motors. How can I help?", False),
        ("caller", CALLER_LINE, False),
        ("agent", "Sure, I can book an oil change.", True),
        ("caller", "Tuesday at nine, my name is Dana Whitfield.", False),
        ("agent", "You're all set for Tuesday at nine a.m.", False),
    ]
    assert [e["turn_id"] for e in call.latency] == ["turn-MZ1", "turn-u1"]
    assert call.latency[1]["stages_ms"] == {"total": 1200.0, "stt": 300.0}
    assert [(a["action"], a["appointment_id"]) for a in call.appointments] == [("booked", 1)]
    # The summary is the LLM's, derived from this call's transcript.
    assert call.summary is not None
    assert CALLER_LINE in call.summary and "booked" in call.summary
    summary_requests = [r for r in llm.requests if "call summaries" in r["messages"][0]["content"]]
    assert len(summary_requests) == 1
    assert f"Caller: {CALLER_LINE}" in summary_requests[0]["messages"][1]["content"]

    await eventually(lambda: _true(watch.jobs and watch.recorded))
    (job,) = watch.jobs
    assert job.key == desk_email_key(sid)
    assert job.to == "service@sunrisemotors.example", "the dealership row's desk address"
    assert "Dana Whitfield" in job.subject and "booked" in job.subject.lower()
    assert call.summary in job.body
    assert f"Dana Whitfield, {CALLER}" in job.body
    assert "Tuesday, January 8 at 9:00 AM" in job.body, "local time in the dealership's zone"
    assert f"https://dash.example.com/#/calls/{sid}" in job.body
    (recorded,) = watch.recorded
    assert recorded.outcome == "booked" and recorded.summary == call.summary


async def _true(value: Any) -> bool:
    return bool(value)


async def test_duplicate_events_and_a_second_call_ended_leave_one_record(
    make_settings: Any, services: list[Service], test_bus: Bus, db: Db
) -> None:
    sid = "sess_dup1"
    watch = await Watch().start(test_bus)
    service = await start(services, make_settings())
    first, second = booking_call(sid, time.time() - 20)
    # Every event twice (distinct stream messages: what a redelivery looks like to us),
    # and the end once more after the record is written.
    await publish(test_bus, first + first + second + second)
    call = await eventually(lambda: db.recorded(sid))
    await publish(test_bus, [CallEndedEvent(session_id=sid, reason="disconnect")])
    await asyncio.sleep(1.0)
    assert await db.counts(sid) == (1, 5)
    again = await db.recorded(sid)
    assert again is not None
    assert again.recorded_at == call.recorded_at and again.end_reason == "hangup"
    assert again.barge_ins == 1 and len(again.latency) == 2 and len(again.appointments) == 1
    assert len(watch.jobs) == 1 and len(watch.recorded) == 1
    written = service.metrics.registry.get_sample_value(
        "dealerline_aftercall_records_written_total", {"outcome": "booked"}
    )
    assert written == 1.0


async def test_the_service_restarting_mid_call_still_leaves_one_complete_record(
    make_settings: Any, services: list[Service], test_bus: Bus, db: Db
) -> None:
    sid = "sess_restart1"
    watch = await Watch().start(test_bus)
    first, second = booking_call(sid, time.time() - 20)
    slow = make_settings(end_grace_s=60.0)  # it would finalize only a minute after the end
    a = await start(services, slow)
    await publish(test_bus, first)
    await eventually(lambda: _turns(db, sid, 3))
    await a.kill()  # crashes mid-call
    await publish(test_bus, second)  # the call goes on and ends while nobody records it
    b = await start(services, slow)
    await eventually(lambda: _ended(db, sid))  # the rows are in; the finalize is not
    assert await db.recorded(sid) is None
    await b.kill()  # crashes between the rows and the finalize
    await start(services, make_settings())
    call = await eventually(lambda: db.recorded(sid))
    assert call.outcome == "booked" and call.barge_ins == 1
    assert [t.turn_id for t in call.turns] == [
        "turn-MZ1",
        "turn-u1",
        "turn-u1",
        "turn-u2",
        "turn-u2",
    ]
    assert await db.counts(sid) == (1, 5)
    await eventually(lambda: _true(watch.recorded))
    assert len(watch.jobs) == 1


async def _turns(db: Db, sid: str, n: int) -> bool:
    return (await db.counts(sid))[1] >= n


async def _ended(db: Db, sid: str) -> bool:
    call = await db.call(sid)
    return call is not None and call.ended_at is not None


async def test_with_the_llm_down_the_record_is_written_and_the_summary_filled_later(
    make_settings: Any, services: list[Service], test_bus: Bus, db: Db
) -> None:
    sid = "sess_nollm1"
    watch = await Watch().start(test_bus)
    port = free_port()  # nothing listens there yet
    settings = make_settings(
        llm_base_url=f"http://127.0.0.1:{port}/v1",
        llm_timeout_s=1.0,
        summary_attempts=1,
        summary_retry_after_s=0.5,
    )
    service = await start(services, settings)
    first, second = booking_call(sid, time.time() - 20)
    await publish(test_bus, first + second)
    call = await eventually(lambda: db.recorded(sid))
    assert call.outcome == "booked" and call.summary is None
    await eventually(lambda: _true(watch.jobs))
    assert "not available yet" in watch.jobs[0].body
    failures = service.metrics.registry.get_sample_value(
        "dealerline_aftercall_summary_failures_total"
    )
    assert failures is not None and failures >= 1

    scenario = Scenario.load("demo").model_copy(update={"first_token_delay_ms": 0})
    async with ScriptedLLM(scenario, port=port):  # the LLM comes back
        filled = await eventually(lambda: _summary(db, sid))
    assert CALLER_LINE in filled.summary
    assert filled.recorded_at == call.recorded_at, "the same record, completed"
    await eventually(lambda: _true([r for r in watch.recorded if r.summary]))


async def _summary(db: Db, sid: str) -> Call | None:
    call = await db.call(sid)
    return call if call is not None and call.summary else None


async def test_a_call_gone_silent_is_closed_from_the_bus_and_the_state_store(
    make_settings: Any,
    services: list[Service],
    test_bus: Bus,
    state_store: StateStore,
    db: Db,
) -> None:
    sid = "sess_stale1"
    t0 = time.time() - 4.5  # its last event is about 2 s from now
    first, _ = booking_call(sid, t0)
    # The agent stored a turn in the state and died before publishing its events.
    messages = [
        {"type": "human", "data": {"content": "[CALL_STARTED]", "id": "turn-MZ1:user"}},
        {"type": "ai", "data": {"content": "Thanks for calling.", "id": "turn-MZ1:ai"}},
        {"type": "human", "data": {"content": CALLER_LINE, "id": "turn-u1:user"}},
        {"type": "ai", "data": {"content": "Sure, I can book it.", "id": "turn-u1:ai"}},
        {"type": "human", "data": {"content": "Can someone call me back?", "id": "turn-u3:user"}},
        {"type": "ai", "data": {"content": "", "id": "turn-u3:ai"}},
        {"type": "ai", "data": {"content": "Of course, someone will call.", "id": "turn-u3:ai:1"}},
    ]
    await put_state(
        state_store,
        sid,
        caller_phone=CALLER,
        customer=CustomerInfo(id=2, name="Marcus Lee"),
        messages=messages,
    )
    await start(services, make_settings(stale_after_s=3.0))
    await publish(test_bus, first)  # no end ever comes: the gateway died with the call
    call = await eventually(lambda: db.recorded(sid), timeout_s=20)
    assert call.end_reason == "stream_lost"
    assert call.ended_at == datetime.fromtimestamp(t0 + 6.1, UTC), "closed at its last event"
    assert call.caller_phone == CALLER and call.customer_name == "Marcus Lee"
    assert call.outcome == "answered"
    recovered = [(t.role, t.text) for t in call.turns if t.turn_id == "turn-u3"]
    assert recovered == [
        ("caller", "Can someone call me back?"),
        ("agent", "Of course, someone will call."),
    ]
    assert call.turns[-1].turn_id == "turn-u3", "placed after what the bus had"
    assert call.turns[-1].at - call.turns[0].at < timedelta(seconds=10)


async def test_an_escalation_that_failed_is_recorded_with_its_timeline(
    make_settings: Any, services: list[Service], test_bus: Bus, db: Db
) -> None:
    from dealerline_common.messages import CallbackRequestedEvent, HumanCallStatus

    sid = "sess_esc1"
    watch = await Watch().start(test_bus)
    await start(services, make_settings(desk_email="desk@example.org"))
    t0 = time.time() - 60
    events: list[Wire] = [
        CallStartedEvent(session_id=sid, call_sid="CA9", at=t0),
        TranscriptEvent(
            session_id=sid, role="user", text="Get me a person.", turn_id="t1", at=t0 + 2
        ),
        HumanStatusEvent(
            session_id=sid, status=HumanCallStatus.CALLING, task_id="k", attempt=1, at=t0 + 3
        ),
        HumanStatusEvent(
            session_id=sid,
            status=HumanCallStatus.FAILED,
            task_id="k",
            attempt=1,
            final=True,
            reason="exhausted",
            at=t0 + 20,
        ),
        CallbackRequestedEvent(
            session_id=sid,
            callback_id=77,
            preferred_window="tomorrow morning",
            reason="brake noise",
            at=t0 + 30,
        ),
        CallEndedEvent(session_id=sid, reason="hangup:end_call", at=t0 + 35),
    ]
    await publish(test_bus, events)
    call = await eventually(lambda: db.recorded(sid))
    assert call.outcome == "escalation_failed", "precedence: above the callback request"
    assert call.end_reason == "end_call"
    assert [(e["kind"], e.get("status")) for e in call.escalation] == [
        ("human_status", "calling"),
        ("human_status", "failed"),
        ("callback_requested", None),
    ]
    await eventually(lambda: _true(watch.jobs))
    (job,) = watch.jobs
    assert job.to == "desk@example.org", "the configured address overrides the row's"
    assert "Callback requested: tomorrow morning (reason: brake noise)" in job.body
