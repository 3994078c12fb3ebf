"""The greeting written at the incoming webhook (``CallIncoming``), through the real agent
on a real nats-server with the scripted LLM over HTTP: written once under
``turn_id_for_call``, never again when the stream starts with it held by the gateway,
said again without the LLM on a stream that missed it, written as before when there is
none, and a call that never gets a stream is forgotten by the sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dealerline_agent.service import AgentService
from dealerline_agent.settings import AgentSettings
from dealerline_common.bus import Bus
from dealerline_common.conversation import turn_id_for_call, turn_id_for_stream
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import Say
from dealerline_common.state_store import MemoryStateStore
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import Scenario, ScriptedLLM

CALL = "CA00000000000000000000000000000001"
JOHN = "+14155550123"  # John Carter in the demo data
GREETING = [
    "Thanks for calling Sunrise Motors service department.",
    "This is Ava, how can I help you today?",
]
HI_JOHN = "Hi John, welcome back to Sunrise Motors. How can I help you today?"


def scenario(greeting_delay_ms: float = 0.0) -> Scenario:
    """The packaged demo, plus a greeting by name for a recognised caller; the greeting
    (either) takes ``greeting_delay_ms`` before its first token."""
    demo = Scenario.load("demo")
    extra = [
        {
            "match": r"\[CALL_STARTED\]",
            "when_system_contains": "CUSTOMER: John Carter",
            "reply": HI_JOHN,
            "first_token_delay_ms": greeting_delay_ms,
        },
        {
            "match": r"\[CALL_STARTED\]",
            "reply": " ".join(GREETING),
            "first_token_delay_ms": greeting_delay_ms,
        },
        {"match": "oil change", "reply": "Sure. Which day works best for you?"},
    ]
    rules = [*(Scenario.model_validate({"rules": extra}).rules), *demo.rules]
    return demo.model_copy(update={"rules": rules, "first_token_delay_ms": 0, "token_delay_ms": 1})


@pytest.fixture(autouse=True)
def _dealer_db(dealer_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_DATABASE_URL", dealer_db)


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM(scenario()) as server:
        yield server


@pytest.fixture
async def test_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(nats_server.url, name="test", file_storage=False)
    await bus.connect()
    yield bus
    await bus.close()


def make_agent(nats_server: NatsServer, llm: ScriptedLLM, **kw: Any) -> AgentService:
    settings = AgentSettings(
        nats_url=nats_server.url,
        llm_base_url=llm.base_url,
        llm_model="gpt-4.1-mini",
        http_host="127.0.0.1",
        http_port=0,
        js_file_storage=False,
        ack_wait_s=5.0,
        drain_timeout_s=5.0,
    )
    return AgentService(settings, tools=[], **kw)


@pytest.fixture
async def agent(nats_server: NatsServer, llm: ScriptedLLM) -> AsyncIterator[AgentService]:
    service = make_agent(nats_server, llm)
    await service.start()
    yield service
    await service.drain()


@pytest.fixture
async def caller(agent: AgentService, test_bus: Bus) -> Caller:
    c = Caller(test_bus, "sess_g")
    await c.start()
    return c


async def incoming(caller: Caller, from_number: str | None = JOHN) -> str:
    """What the gateway publishes when it answers the incoming webhook."""
    return await caller.incoming(CALL, from_number=from_number, to_number="+18005550100")


def greetings_asked(llm: ScriptedLLM) -> int:
    return sum(1 for r in llm.requests if r["messages"][-1]["content"] == "[CALL_STARTED]")


def texts(says: list[Say]) -> list[str]:
    return [s.text for s in says]


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    for _ in range(500):
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


async def test_the_incoming_call_is_greeted_before_its_stream_by_name(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await incoming(caller)
    says = await caller.turn(turn_id)
    assert says[-1].last and says[-1].text == ""
    assert " ".join(texts(says)).strip() == HI_JOHN
    # No stream yet: the gateway stamps the stream's start on the audio when it opens.
    assert all(s.timings.stream_started is None for s in says)
    assert says[0].timings.llm_request is not None
    state = await agent.store.get_state(caller.sid)
    assert state.call_sid == CALL and state.caller_phone == JOHN
    assert state.customer is not None and state.customer.name == "John Carter"
    session = agent.sessions[caller.sid]
    assert session.incoming_call_sid == CALL and not session.streaming
    # The stream opens with the greeting held by the gateway: recorded, not greeted again.
    await caller.started("MZ0001", call_sid=CALL, from_number=JOHN, greeting_prefetched=True)
    await eventually(lambda: agent.sessions[caller.sid].stream_sid == "MZ0001")
    await caller.turn(await caller.say("I need an oil change"))
    assert greetings_asked(llm) == 1
    assert {s.turn_id for s in caller.heard if s.utterance_id is None} == {turn_id}


async def test_a_duplicate_incoming_call_is_greeted_once(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await incoming(caller, from_number=None)
    await incoming(caller, from_number=None)
    says = await caller.turn(turn_id)
    assert texts(says) == [*GREETING, ""]
    await caller.turn(await caller.say("I need an oil change"))
    assert greetings_asked(llm) == 1
    assert [s.seq for s in caller.heard if s.turn_id == turn_id] == [0, 1, 2]


async def test_a_stream_that_missed_the_greeting_hears_it_again_without_the_llm(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    """The stream opened on another gateway (or after the hold expired): the stored
    greeting is said again under the stream's own turn, with the stream's start."""
    first = await caller.turn(await incoming(caller, from_number=None))
    asked = len(llm.requests)
    again = await caller.started("MZ0002", call_sid=CALL, greeting_prefetched=False)
    assert again == turn_id_for_stream("MZ0002")
    says = await caller.turn(again)
    assert texts(says) == texts(first) == [*GREETING, ""]
    assert len(llm.requests) == asked  # no LLM
    assert all(s.timings.stream_started is not None for s in says)
    assert says[0].timings.llm_request is None
    # the history keeps one greeting
    state = await agent.store.get_state(caller.sid)
    assert sum(1 for m in state.messages if m["data"].get("content") == "[CALL_STARTED]") == 1


async def test_a_stream_that_opens_while_the_greeting_is_written_waits_for_it(
    nats_server: NatsServer, test_bus: Bus
) -> None:
    async with ScriptedLLM(scenario(greeting_delay_ms=600)) as llm:
        service = make_agent(nats_server, llm)
        await service.start()
        try:
            caller = Caller(test_bus, "sess_w")
            await caller.start()
            await incoming(caller, from_number=None)
            await eventually(lambda: greetings_asked(llm) == 1)
            again = await caller.started("MZ0003", call_sid=CALL, greeting_prefetched=False)
            says = await caller.turn(again)
            assert texts(says) == [*GREETING, ""]
            assert greetings_asked(llm) == 1
            webhook = [s for s in caller.heard if s.turn_id == turn_id_for_call(CALL)]
            assert texts(webhook) == [*GREETING, ""]
        finally:
            await service.drain()


async def test_a_new_stream_without_any_webhook_greeting_is_greeted_as_before(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await caller.started("MZ0004", call_sid=CALL, greeting_prefetched=False)
    says = await caller.turn(turn_id)
    assert texts(says) == [*GREETING, ""]
    assert says[0].timings.stream_started is not None and says[0].timings.llm_request
    assert greetings_asked(llm) == 1


async def test_a_held_greeting_this_replica_never_heard_of_is_written_under_the_call_turn(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    """CallIncoming went out while no agent was up; the gateway still says it holds the
    greeting: the webhook's turn is written now (and the gateway plays it)."""
    caller = Caller(test_bus, "sess_late")
    await caller.start()
    await incoming(caller, from_number=None)  # nobody hears it
    service = make_agent(nats_server, llm)
    await service.start()
    try:
        await caller.started("MZ0005", call_sid=CALL, greeting_prefetched=True)
        says = await caller.turn(turn_id_for_call(CALL))
        assert texts(says) == [*GREETING, ""]
        assert greetings_asked(llm) == 1
    finally:
        await service.drain()


async def test_two_replicas_write_the_webhook_greeting_once(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    store = MemoryStateStore()  # shared, as Redis is between real replicas
    replicas = [make_agent(nats_server, llm, store=store) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        caller = Caller(test_bus, "sess_2")
        await caller.start()
        await caller.turn(await incoming(caller, from_number=None))
        # both heard it on their plain subscription
        await eventually(
            lambda: all(r.sessions[caller.sid].incoming_call_sid == CALL for r in replicas)
        )
        await caller.started("MZ0006", call_sid=CALL, greeting_prefetched=True)
        await caller.turn(await caller.say("I need an oil change"))
        assert greetings_asked(llm) == 1
        assert sum(r.sessions[caller.sid].greeting_claimed for r in replicas) == 1
    finally:
        for replica in replicas:
            await replica.drain()


async def test_a_call_that_hangs_up_before_its_stream_is_forgotten(
    agent: AgentService, caller: Caller
) -> None:
    await caller.turn(await incoming(caller, from_number=None))
    await eventually(lambda: agent.sessions[caller.sid].running_task is None)
    assert caller.sid in agent.sessions and not agent.sessions[caller.sid].streaming
    soon = time.monotonic() + 1
    assert await agent.sweep_idle_sessions(now=soon) == []
    later = time.monotonic() + agent.agent_settings.session_idle_ttl_s + 1
    assert await agent.sweep_idle_sessions(now=later) == [caller.sid]
    assert caller.sid not in agent.sessions
