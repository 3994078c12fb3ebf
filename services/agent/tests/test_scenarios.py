"""Scenario tests: the agent with its real tools, the real dealership database and the
conversation state store, driven by the scripted OpenAI-compatible endpoint over HTTP
(through the real ChatOpenAI client) and a real nats-server.

Every scenario runs twice: on the embedded defaults (in-memory state, SQLite) and on the
production stores (real Redis, real PostgreSQL). Each asserts the tool calls the turn
made, the conversation state after it, and the rows in the database.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import nats.errors
import pytest
from agent_testkit import agent_settings, db_rows
from langchain_core.messages import AIMessage, ToolMessage
from sqlalchemy import func, select

from dealerline_agent.history import from_dicts
from dealerline_agent.service import AgentService
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import escalation_turn_id
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import (
    Appointment,
    AppointmentStatus,
    CallbackRequest,
    Customer,
    Vehicle,
)
from dealerline_common.db.seed import seed
from dealerline_common.db.testing import empty_database, run_sync
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AppointmentEvent,
    BargeIn,
    CallbackRequestedEvent,
    EscalationRequest,
    EscalationStatus,
    HangupRequest,
    HumanCallStatus,
    loads,
    parse_command,
    parse_event,
)
from dealerline_common.state import ConversationState, Notification
from dealerline_common.state_store import StateStore, state_store_from_url
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import Scenario, ScriptedLLM

T = TypeVar("T")
SCENARIO = Path(__file__).parent / "scenarios" / "dealership.yaml"
TZ = ZoneInfo("America/Los_Angeles")
NEW_CALLER = "+14155550199"
JOHN = "+14155550123"  # John Carter in the demo data, with a 2019 Toyota Camry


@dataclass
class World:
    agent: AgentService
    llm: ScriptedLLM
    bus: Bus
    store: StateStore
    db_url: str

    async def call(self, sid: str, from_number: str | None = NEW_CALLER) -> Caller:
        caller = Caller(self.bus, sid)
        await caller.start()
        await caller.turn(await caller.started(f"MZ{sid}", from_number=from_number))
        return caller

    async def state(self, sid: str) -> ConversationState:
        return await self.store.get_state(sid)

    def tools_called(self, since: int = 0) -> list[str]:
        return [name for c in self.llm.completions[since:] for name in c.tool_calls]

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        return await db_rows(self.db_url, model, *where)

    async def count(self, model: Any, *where: Any) -> int:
        engine = create_engine_from_url(self.db_url)
        try:
            async with session_factory(engine)() as session:
                query = select(func.count()).select_from(model).where(*where)
                return int((await session.execute(query)).scalar_one())
        finally:
            await engine.dispose()


def scenario_rules(change: Callable[[Scenario], Scenario]) -> Callable[[T], T]:
    """Run the decorated test against ``change(scenario)`` instead of this file's script."""

    def mark(test: T) -> T:
        test.scenario_rules = change  # type: ignore[attr-defined]
        return test

    return mark


def next_weekday(weekday: int) -> date:
    today = datetime.now(UTC).astimezone(TZ).date()
    return today + timedelta(days=(weekday - today.weekday()) % 7 or 7)


@pytest.fixture(params=["memory+sqlite", "redis+postgresql"])
async def world(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer, client: Bus
) -> AsyncIterator[World]:
    state_kind, db_kind = request.param.split("+")
    db_url = empty_database(request, db_kind, tmp_path)
    run_sync(seed(db_url))
    namespace = f"dltest-{secrets.token_hex(4)}:"
    store = state_store_from_url(
        "memory://" if state_kind == "memory" else "redis://127.0.0.1:6379/0",
        namespace=namespace,
    )
    scenario = Scenario.from_yaml(SCENARIO)
    change = getattr(request.function, "scenario_rules", None)
    if change is not None:
        scenario = change(scenario)
    async with ScriptedLLM(scenario) as llm:
        settings = agent_settings(nats_server.url, llm.base_url, db_url)
        agent = AgentService(settings, store=store)
        await agent.start()
        try:
            yield World(agent, llm, client, store, db_url)
        finally:
            await agent.drain()
            if state_kind == "redis":
                cleanup = state_store_from_url("redis://127.0.0.1:6379/0", namespace=namespace)
                for sid in ("s_new", "s_john", "s_move", "s_cancel", "s_faq", "s_mixed"):
                    await cleanup.delete(sid)
                for sid in ("s_busy", "s_barge", "s_dup", "s_human", "s_bye", "s_llm"):
                    await cleanup.delete(sid)
                for sid in ("s_events", "s_callback", "s_demo_cb", "s_demo_book"):
                    await cleanup.delete(sid)
                await cleanup.close()


async def stored_events(bus: Bus, sid: str, kind: type[Any]) -> list[Any]:
    """The events of ``kind`` that the ``DL_EVENTS`` stream holds for the session (what
    the after-call service will read: a duplicate here is a duplicate there)."""
    psub = await bus.js.pull_subscribe(subjects.events(sid), stream=subjects.STREAM_EVENTS)
    found: list[Any] = []
    try:
        while True:
            try:
                batch = await psub.fetch(100, timeout=0.5)
            except nats.errors.TimeoutError:
                break
            found.extend(parse_event(m.data) for m in batch)
    finally:
        await psub.unsubscribe()
    return [e for e in found if isinstance(e, kind)]


async def announced(caller: Caller, kind: type[Any], turn_id: str) -> Any:
    """Wait for the next event of ``kind`` from ``turn_id`` (a duplicate still reaches
    plain subscribers; only the stream drops it)."""
    return await caller.event(lambda e: isinstance(e, kind) and e.turn_id == turn_id)


async def redeliver(
    w: World, caller: Caller, turn_id: str, text: str, before: ConversationState | None = None
) -> None:
    """Deliver ``turn_id``'s transcript again (same utterance id). With ``before``, the
    stored state is first put back to it: the first delivery died after its tools ran,
    before the turn was stored, so the turn runs again from the start."""
    if before is not None:

        def rewind(state: ConversationState) -> None:
            state.messages = before.messages
            state.booking_slots = before.booking_slots
            state.confirmed_appointment = before.confirmed_appointment

        await w.store.update(caller.sid, rewind)
    utterance_id = turn_id.removeprefix("turn-")
    transcript = caller.transcript(text, utterance_id=utterance_id)
    await caller.bus.publish_durable(subjects.transcript(caller.sid), transcript)
    await caller.turn(turn_id)


async def book_for_new_caller(w: World, sid: str) -> Caller:
    caller = await w.call(sid)
    await caller.turn(await caller.say("Hi, this is Maria Lopez, I need an oil change"))
    await caller.turn(await caller.say("It's a 2020 Honda Civic, next Tuesday at ten thirty"))
    return caller


async def test_book_a_service_for_a_new_caller(world: World) -> None:
    caller = await world.call("s_new")
    start = len(world.llm.completions)
    await caller.turn(await caller.say("Hi, this is Maria Lopez, I need an oil change"))
    assert world.tools_called(start) == ["create_customer", "set_booking_slot"]
    state = await world.state("s_new")
    assert state.customer is not None and state.customer.name == "Maria Lopez"
    assert state.customer.phone == NEW_CALLER  # the caller ID, in E.164
    assert state.booking_slots.service == "Conventional Oil Change"

    start = len(world.llm.completions)
    says = await caller.turn(
        await caller.say("It's a 2020 Honda Civic, next Tuesday at ten thirty")
    )
    assert world.tools_called(start) == [
        "add_or_update_vehicle",
        "set_booking_slot",
        "set_booking_slot",
        "check_availability",
    ]
    assert "Shall I book it?" in " ".join(s.text for s in says)
    assert says[-1].last and says[-1].expects == "yes_no"  # words after the tools decide
    state = await world.state("s_new")
    tuesday = next_weekday(1)
    assert state.booking_slots.date == tuesday.isoformat()
    assert state.booking_slots.time == "10:30"
    assert state.confirmed_appointment is None  # nothing booked before the yes

    start = len(world.llm.completions)
    await caller.turn(await caller.say("Yes, please book it"))
    assert world.tools_called(start) == ["book_appointment"]
    state = await world.state("s_new")
    booked = state.confirmed_appointment
    assert booked is not None and booked.service == "Conventional Oil Change"
    assert booked.start.astimezone(TZ).date() == tuesday
    assert booked.start.astimezone(TZ).strftime("%H:%M") == "10:30"
    assert state.booking_slots.is_empty()  # a confirmed booking closes the slots

    [customer] = await world.rows(Customer, Customer.phone == NEW_CALLER)
    assert customer.name == "Maria Lopez"
    [vehicle] = await world.rows(Vehicle, Vehicle.customer_id == customer.id)
    assert (vehicle.year, vehicle.make, vehicle.model) == (2020, "Honda", "Civic")
    [appointment] = await world.rows(Appointment, Appointment.customer_id == customer.id)
    assert appointment.id == booked.id and appointment.vehicle_id == vehicle.id
    assert appointment.status == AppointmentStatus.BOOKED
    # The tool results are in the stored history, each answering its call.
    history = from_dicts(state.messages)
    calls = {tc["id"] for m in history if isinstance(m, AIMessage) for tc in m.tool_calls}
    results = {m.tool_call_id for m in history if isinstance(m, ToolMessage)}
    assert calls == results and len(calls) == 7


async def test_returning_caller_is_recognised_by_caller_id(world: World) -> None:
    caller = Caller(world.bus, "s_john")
    await caller.start()
    says = await caller.turn(await caller.started("MZjohn", from_number="(415) 555-0123"))
    assert "Hi John" in " ".join(s.text for s in says)
    state = await world.state("s_john")
    assert state.caller_phone == JOHN
    assert state.customer is not None and state.customer.name == "John Carter"
    assert state.customer.returning
    assert any(v.model == "Camry" for v in state.customer.vehicles)
    system = world.llm.requests[-1]["messages"][0]["content"]
    # The caller ID (spoofable) gives the name only: his cars wait for verification.
    assert "CUSTOMER: John Carter" in system and "NOT VERIFIED" in system
    assert "Camry" not in system


async def test_reschedule_and_cancel_only_the_callers_own(world: World) -> None:
    caller = await book_for_new_caller(world, "s_move")
    await caller.turn(await caller.say("Yes, please book it"))
    booked = (await world.state("s_move")).confirmed_appointment
    assert booked is not None

    start = len(world.llm.completions)
    await caller.turn(await caller.say("What are my appointments?"))
    await caller.turn(await caller.say("Please move it to next Wednesday at two"))
    assert world.tools_called(start) == ["list_appointments", "reschedule_appointment"]
    [moved] = await world.rows(Appointment, Appointment.id == booked.id)
    wednesday = next_weekday(2)
    assert moved.start_at.astimezone(TZ).date() == wednesday
    assert moved.start_at.astimezone(TZ).strftime("%H:%M") == "14:00"
    state = await world.state("s_move")
    assert state.confirmed_appointment is not None
    assert state.confirmed_appointment.start.astimezone(TZ).date() == wednesday

    start = len(world.llm.completions)
    await caller.turn(await caller.say("What are my appointments?"))
    await caller.turn(await caller.say("Actually, cancel it"))
    assert world.tools_called(start) == ["list_appointments", "cancel_appointment"]
    [cancelled] = await world.rows(Appointment, Appointment.id == booked.id)
    assert cancelled.status == AppointmentStatus.CANCELLED
    assert (await world.state("s_move")).confirmed_appointment is None

    # Someone else's appointment cannot be touched: John's, from the demo data.
    [john] = await world.rows(Customer, Customer.phone == JOHN)
    johns = await world.rows(Appointment, Appointment.customer_id == john.id)
    assert johns, "the demo data gives John an appointment"
    ctx_state = await world.state("s_move")
    tool = next(t for t in world.agent.tools if t.name == "cancel_appointment")
    result = await tool.ainvoke(
        {
            "type": "tool_call",
            "id": "call_x",
            "name": "cancel_appointment",
            "args": {"appointment_id": johns[0].id, "confirmed": True},
        },
        config={"configurable": {"tool_context": tool_context(world, "s_move", ctx_state)}},
    )
    assert str(result.content).startswith("ERROR")
    [still] = await world.rows(Appointment, Appointment.id == johns[0].id)
    assert still.status == AppointmentStatus.BOOKED


def tool_context(world: World, sid: str, state: ConversationState) -> Any:
    from dealerline_agent.dealership.context import ToolContext

    async def no_escalation(_req: EscalationRequest) -> None:
        raise AssertionError("no escalation expected")

    return ToolContext(
        session_id=sid,
        state=state,
        repo=world.agent.dealership,
        clock=world.agent.clock,
        timezone=world.agent.settings.dealership_timezone,
        publish_escalation=no_escalation,
    )


async def test_faq_answer(world: World) -> None:
    caller = await world.call("s_faq")
    start = len(world.llm.completions)
    await caller.turn(await caller.say("Do you have loaner cars?"))
    assert world.tools_called(start) == ["search_faq"]
    tool_result = world.llm.requests[-1]["messages"][-1]
    assert tool_result["role"] == "tool"
    assert "loaner" in tool_result["content"].lower()


async def test_mixed_intent_utterance(world: World) -> None:
    caller = await world.call("s_mixed")
    start = len(world.llm.completions)
    says = await caller.turn(await caller.say("Thanks, and my name is John Carter"))
    assert world.tools_called(start) == ["lookup_customer"]
    assert "You're welcome, John" in " ".join(s.text for s in says)
    state = await world.state("s_mixed")
    assert state.customer is not None and state.customer.name == "John Carter"


async def test_unavailable_slot_offers_alternatives(world: World) -> None:
    caller = await world.call("s_busy")
    before = await world.count(Appointment)
    start = len(world.llm.completions)
    says = await caller.turn(await caller.say("Can I come on Sunday at nine?"))
    assert world.tools_called(start) == ["check_availability"]
    result = world.llm.requests[-1]["messages"][-1]["content"]
    assert result.startswith("UNAVAILABLE") and "closed on sundays" in result.lower()
    assert any(ch.isdigit() for ch in result.split("closed", 1)[1]), "alternatives offered"
    assert "not available" in " ".join(s.text for s in says)
    assert await world.count(Appointment) == before
    assert (await world.state("s_busy")).confirmed_appointment is None


async def test_barge_in_during_the_confirmation_keeps_the_booking_once(world: World) -> None:
    caller = await book_for_new_caller(world, "s_barge")
    turn_id = await caller.say("Yes, please book it")
    first = await caller.next_say()
    assert first.turn_id == turn_id and first.text == "You're all set."
    # The caller talks over the rest of the confirmation.
    await caller.bus.publish(
        subjects.control(caller.sid),
        BargeIn(
            session_id=caller.sid, turn_id=turn_id, heard_text="You're all set.", heard_seqs=[0]
        ),
    )
    await caller.event(lambda e: getattr(e, "interrupted", False))
    state = await world.state("s_barge")
    assert state.confirmed_appointment is not None
    history = from_dicts(state.messages)
    replies = [m for m in history if isinstance(m, AIMessage) and str(m.id).startswith(turn_id)]
    assert [m.tool_calls[0]["name"] for m in replies if m.tool_calls] == ["book_appointment"]
    assert [m.content for m in replies if not m.tool_calls] == ["You're all set."]
    [customer] = await world.rows(Customer, Customer.phone == NEW_CALLER)
    # The caller, unsure, asks again: the same booking, not a second one.
    await caller.turn(await caller.say("Yes, please book it"))
    booked = await world.rows(Appointment, Appointment.customer_id == customer.id)
    assert len(booked) == 1 and booked[0].id == state.confirmed_appointment.id


async def test_duplicate_booking_attempt_books_once(world: World) -> None:
    caller = await book_for_new_caller(world, "s_dup")
    start = len(world.llm.completions)
    await caller.turn(await caller.say("Please book it twice to be sure"))
    assert world.tools_called(start) == ["book_appointment", "book_appointment"]
    [customer] = await world.rows(Customer, Customer.phone == NEW_CALLER)
    booked = await world.rows(Appointment, Appointment.customer_id == customer.id)
    assert len(booked) == 1


async def test_asking_for_a_human_requests_an_escalation(world: World, client: Bus) -> None:
    consumer = await client.js.pull_subscribe(
        subjects.ESCALATION_REQUEST, durable="scenario-test", stream=subjects.STREAM_ESCALATIONS
    )
    caller = await world.call("s_human", from_number=JOHN)
    start = len(world.llm.completions)
    says = await caller.turn(await caller.say("Can I talk to a person please?"))
    assert world.tools_called(start) == ["request_human_agent"]
    assert "calling a team member" in " ".join(s.text for s in says)
    [msg] = await consumer.fetch(1, timeout=5)
    await msg.ack()
    request = loads(EscalationRequest, msg.data)
    assert request.session_id == "s_human" and request.call_sid == "CA1"
    assert request.customer_name == "John Carter"
    assert request.staff, "the hunt list of on-duty staff"
    assert all(s.phone.startswith("+") for s in request.staff)
    state = await world.state("s_human")
    assert state.escalation_in_progress
    assert [t.task_id for t in state.pending_tasks] == [request.task_id]
    await consumer.unsubscribe()

    # The escalation service accepts: it pushes the notification, then the status.
    await world.store.push_notification(
        "s_human",
        Notification(
            id=f"{request.task_id}:confirmed",
            kind="human_available",
            data={"name": "Dana"},
            task_id=request.task_id,
        ),
    )
    status = EscalationStatus(
        session_id="s_human",
        status=HumanCallStatus.CONFIRMED,
        staff_name="Dana",
        task_id=request.task_id,
        attempt=1,
    )
    await caller.escalation(status)
    turn = escalation_turn_id(request.task_id, "confirmed")
    says = await caller.turn(turn)
    assert [s.text for s in says[:2]] == ["Good news,", "Dana is free."]
    assert (
        world.llm.requests[-1]["messages"][-1]["content"] == "[NOTIFICATION:human_available:Dana]"
    )
    state = await world.state("s_human")
    assert state.pending_notifications == []
    assert f"{request.task_id}:confirmed" in state.delivered_notifications


async def test_end_call_hangs_up_after_the_goodbye(world: World) -> None:
    commands: asyncio.Queue[Any] = asyncio.Queue()

    async def on_command(msg: Any) -> None:
        commands.put_nowait(parse_command(msg.data))

    # The hang-up is a command to the gateway holding the call, not a control message.
    await world.bus.subscribe(subjects.command("s_bye"), on_command)
    caller = await world.call("s_bye")
    turn_id = await caller.say("That's all, bye")
    says = await caller.turn(turn_id)
    assert "Goodbye" in " ".join(s.text for s in says)
    message = await asyncio.wait_for(commands.get(), 5)
    assert isinstance(message, HangupRequest)
    assert message.after_turn == turn_id
    assert message.reason == "end_call"
    assert (await world.state("s_bye")).end_requested


async def test_failing_llm_is_retried_then_the_model_apologises(world: World) -> None:
    caller = await world.call("s_llm")
    says = await caller.turn(await caller.say("flaky question"))
    # Two failures (the call and its retry), then the fallback asks the model for words.
    assert [c.error_status for c in world.llm.completions[-3:]] == [500, 500, None]
    apology = "I'm so sorry for the wait, could you say that once more?"
    assert " ".join(s.text for s in says).strip() == apology
    metrics = world.agent.metrics.render().decode()
    assert 'dealerline_agent_llm_fallbacks_total{source="model"} 1.0' in metrics
    # The model is down for good: the apology it wrote last time is spoken again.
    says = await caller.turn(await caller.say("broken question"))
    assert " ".join(s.text for s in says).strip() == apology
    assert 'dealerline_agent_llm_fallbacks_total{source="cached"} 1.0' in (
        world.agent.metrics.render().decode()
    )


async def test_appointment_changes_are_announced_once_each(world: World) -> None:
    caller = await book_for_new_caller(world, "s_events")
    before = await world.state("s_events")
    book = await caller.say("Yes, please book it")
    await caller.turn(book)
    event = await announced(caller, AppointmentEvent, book)
    state = await world.state("s_events")
    booked = state.confirmed_appointment
    assert booked is not None
    assert (event.session_id, event.action, event.appointment_id) == (
        "s_events",
        "booked",
        booked.id,
    )
    assert (event.service, event.vehicle, event.customer_name) == (
        "Conventional Oil Change",
        "2020 Honda Civic",
        "Maria Lopez",
    )
    start = datetime.fromisoformat(event.start)
    assert start == booked.start and start.utcoffset() == booked.start.astimezone(TZ).utcoffset()
    assert start.strftime("%H:%M") == "10:30"  # the dealership's wall clock, with its offset

    # Redelivered after the turn was stored: replayed, announced under the same id.
    await redeliver(world, caller, book, "Yes, please book it")
    await announced(caller, AppointmentEvent, book)
    # Redelivered as if the first delivery died before storing the turn: the tool runs
    # again (the same appointment) and announces it again under the same id.
    start_llm = len(world.llm.completions)
    await redeliver(world, caller, book, "Yes, please book it", before=before)
    assert world.tools_called(start_llm) == ["book_appointment"]
    await announced(caller, AppointmentEvent, book)
    events = await stored_events(world.bus, "s_events", AppointmentEvent)
    assert [(e.action, e.appointment_id, e.turn_id) for e in events] == [
        ("booked", booked.id, book)
    ]
    assert len(await world.rows(Appointment, Appointment.id == booked.id)) == 1

    await caller.turn(await caller.say("What are my appointments?"))
    move = await caller.say("Please move it to next Wednesday at two")
    await caller.turn(move)
    event = await announced(caller, AppointmentEvent, move)
    assert (event.action, event.appointment_id, event.service) == (
        "rescheduled",
        booked.id,
        "Conventional Oil Change",
    )
    moved_to = datetime.fromisoformat(event.start).astimezone(TZ)
    assert (moved_to.date(), moved_to.strftime("%H:%M")) == (next_weekday(2), "14:00")
    assert event.customer_name == "Maria Lopez"
    await redeliver(world, caller, move, "Please move it to next Wednesday at two")
    await announced(caller, AppointmentEvent, move)

    await caller.turn(await caller.say("What are my appointments?"))
    before = await world.state("s_events")
    cancel = await caller.say("Actually, cancel it")
    await caller.turn(cancel)
    event = await announced(caller, AppointmentEvent, cancel)
    assert (event.action, event.appointment_id, event.service, event.vehicle) == (
        "cancelled",
        booked.id,
        "Conventional Oil Change",
        "2020 Honda Civic",
    )
    assert datetime.fromisoformat(event.start) == moved_to
    await redeliver(world, caller, cancel, "Actually, cancel it")
    await announced(caller, AppointmentEvent, cancel)
    await redeliver(world, caller, cancel, "Actually, cancel it", before=before)
    await announced(caller, AppointmentEvent, cancel)

    events = await stored_events(world.bus, "s_events", AppointmentEvent)
    assert [(e.action, e.appointment_id, e.turn_id) for e in events] == [
        ("booked", booked.id, book),
        ("rescheduled", booked.id, move),
        ("cancelled", booked.id, cancel),
    ]


async def test_callback_request_writes_a_row_and_announces_it_once(world: World) -> None:
    caller = await world.call("s_callback", from_number=JOHN)
    before = await world.state("s_callback")
    start = len(world.llm.completions)
    turn = await caller.say("Please call me back tomorrow morning about my brakes")
    says = await caller.turn(turn)
    assert world.tools_called(start) == ["request_callback"]
    assert "call you back tomorrow morning" in " ".join(s.text for s in says)
    event = await announced(caller, CallbackRequestedEvent, turn)
    [row] = await world.rows(CallbackRequest, CallbackRequest.session_id == "s_callback")
    [john] = await world.rows(Customer, Customer.phone == JOHN)
    assert (row.customer_id, row.name, row.phone, row.status) == (
        john.id,
        "John Carter",
        JOHN,
        "open",
    )
    assert (row.preferred_window, row.reason) == ("tomorrow morning", "brakes")
    assert (event.callback_id, event.preferred_window, event.reason, event.customer_name) == (
        row.id,
        "tomorrow morning",
        "brakes",
        "John Carter",
    )

    # Redelivered before the turn was stored: the tool runs again, finds its row.
    start = len(world.llm.completions)
    text = "Please call me back tomorrow morning about my brakes"
    await redeliver(world, caller, turn, text, before=before)
    assert world.tools_called(start) == ["request_callback"]
    await announced(caller, CallbackRequestedEvent, turn)
    # And after it was stored: replayed.
    await redeliver(world, caller, turn, text)
    await announced(caller, CallbackRequestedEvent, turn)
    assert len(await world.rows(CallbackRequest, CallbackRequest.session_id == "s_callback")) == 1
    events = await stored_events(world.bus, "s_callback", CallbackRequestedEvent)
    assert [(e.callback_id, e.turn_id) for e in events] == [(row.id, turn)]


def demo_scenario(_: Scenario) -> Scenario:
    """The packaged offline demo (what ``make demo`` scripts), without its pauses."""
    return Scenario.load("demo").model_copy(update={"first_token_delay_ms": 0, "token_delay_ms": 1})


@scenario_rules(demo_scenario)
async def test_demo_caller_asks_for_a_callback(world: World) -> None:
    caller = await world.call("s_demo_cb", from_number=JOHN)
    start = len(world.llm.completions)
    turn = await caller.say("Hi, could you please call me back tomorrow morning about my brakes?")
    says = " ".join(s.text for s in await caller.turn(turn))
    assert world.tools_called(start) == ["request_callback"]
    assert "call you back tomorrow morning about brakes" in says
    event = await announced(caller, CallbackRequestedEvent, turn)
    [row] = await world.rows(CallbackRequest, CallbackRequest.session_id == "s_demo_cb")
    assert (row.preferred_window, row.reason, row.name) == (
        "tomorrow morning",
        "brakes",
        "John Carter",
    )
    assert event.callback_id == row.id


@scenario_rules(demo_scenario)
async def test_demo_booking_by_caller_id_books_the_car_on_file(world: World) -> None:
    """``make demo``'s call: John, recognised by his caller ID and not verified, books an
    oil change for his car on file by its id; nothing he did not say is read to him."""
    caller = await world.call("s_demo_book", from_number=JOHN)
    lines = [
        "Hi, I would like to book an oil change for my car.",
        "Tuesday morning would be great, around nine.",
        "Yes please, book it.",
    ]
    for line in lines:
        await caller.turn(await caller.say(line))
    state = await world.state("s_demo_book")
    assert not state.verified
    booked = state.confirmed_appointment
    assert booked is not None and booked.service == "Conventional Oil Change"
    [john] = await world.rows(Customer, Customer.phone == JOHN)
    [vehicle] = await world.rows(Vehicle, Vehicle.customer_id == john.id)
    [row] = await world.rows(Appointment, Appointment.id == booked.id)
    assert row.vehicle_id == vehicle.id
    results = [m for m in from_dicts(state.messages) if isinstance(m, ToolMessage)]
    assert len(results) == 6
    assert not [m.content for m in results if "Camry" in str(m.content)]
    assert "Camry" not in " ".join(s.text for s in caller.heard)
