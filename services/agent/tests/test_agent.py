"""The agent through a real nats-server and the scripted LLM over real HTTP (ChatOpenAI)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from langchain_core.messages import BaseMessage

from dealerline_agent.history import from_dicts
from dealerline_agent.prompts import build_system_prompt, context_for
from dealerline_agent.service import AgentService
from dealerline_agent.settings import AgentSettings
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import ai_message_id
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    BargeIn,
    Say,
    StateUpdateEvent,
    StreamStopped,
    TranscriptEvent,
    loads,
)
from dealerline_common.settings import SettingsError
from dealerline_common.state_store import MemoryStateStore
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import Scenario, ScriptedLLM

GREETING = [
    "Thanks for calling Sunrise Motors service department.",
    "This is Ava, how can I help you today?",
]
SLOW_FIRST = "Let me check that for you."
SLOW_REST = " I found three openings this week. Which one would you like?"
LONG_FIRST = "Our service department is open six days a week."
LONG_REST = " The second sentence is one you never hear. Neither is this third one."


def scenario(pause_ms: float = 1500) -> Scenario:
    """The packaged demo, plus rules whose reply pauses after its first sentence."""
    demo = Scenario.load("demo")
    extra = [
        # These tests run the agent without tools: plain replies where the demo calls tools.
        {
            "match": "oil change",
            "reply": "Sure, I can help you book an oil change. We have openings most days "
            "this week. Which day works best for you?",
        },
        {
            "match": "tuesday",
            "reply": "Great, I have Tuesday at nine a.m. open for an oil change. Can I get "
            "your name for the booking?",
        },
        {
            "match": "slow",
            "reply": [{"text": SLOW_FIRST}, {"text": SLOW_REST, "delay_ms": pause_ms}],
        },
        {
            "match": "hours",
            "reply": [{"text": LONG_FIRST}, {"text": LONG_REST, "delay_ms": pause_ms}],
        },
    ]
    rules = [*(Scenario.model_validate({"rules": extra}).rules), *demo.rules]
    return demo.model_copy(update={"rules": rules, "first_token_delay_ms": 0, "token_delay_ms": 1})


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


def agent_settings(nats_server: NatsServer, llm: ScriptedLLM, **kw: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "nats_url": nats_server.url,
        "llm_base_url": llm.base_url,
        "llm_model": "gpt-4.1-mini",
        "http_host": "127.0.0.1",
        "http_port": 0,
        "js_file_storage": False,
        "ack_wait_s": 5.0,
        "drain_timeout_s": 5.0,
    }
    values.update(kw)
    return AgentSettings(**values)


@pytest.fixture(autouse=True)
def _dealer_db(dealer_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every agent in this module reads the seeded database from its usual variable.
    monkeypatch.setenv("AGENT_DATABASE_URL", dealer_db)


def make_agent(settings: AgentSettings, **kw: Any) -> AgentService:
    """An agent without the dealership tools: these tests are about turns, streaming,
    barge-in and sessions (the tools have their own scenario tests)."""
    kw.setdefault("tools", [])
    return AgentService(settings, **kw)


async def history(agent: AgentService, sid: str) -> list[BaseMessage]:
    return from_dicts((await agent.store.get_state(sid)).messages)


@pytest.fixture
async def agent(nats_server: NatsServer, llm: ScriptedLLM) -> AsyncIterator[AgentService]:
    service = make_agent(agent_settings(nats_server, llm))
    await service.start()
    yield service
    await service.drain()


@pytest.fixture
async def caller(agent: AgentService, test_bus: Bus) -> Caller:
    c = Caller(test_bus, "sess_a")
    await c.start()
    return c


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    for _ in range(500):
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


# ---------------------------------------------------------------------- unit-ish


def test_settings_name_the_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AGENT_LLM_API_KEY", "OPENAI_API_KEY", "AGENT_LLM_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SettingsError, match="AGENT_LLM_API_KEY"):
        AgentSettings().api_key()
    assert AgentSettings(llm_base_url="http://x/v1").api_key() == "not-needed"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert AgentSettings().api_key() == "sk-openai"
    monkeypatch.setenv("AGENT_LLM_API_KEY", "sk-agent")
    assert AgentSettings().api_key() == "sk-agent"
    assert AgentSettings().http_port == 8084
    assert AgentSettings().dealership_name == "Sunrise Motors"


def test_system_prompt_has_context_in_dealership_timezone() -> None:
    # 03:00 UTC on Thursday is still Wednesday evening in Los Angeles.
    ctx = context_for(datetime(2026, 2, 5, 3, 0, tzinfo=UTC), "America/Los_Angeles")
    prompt = build_system_prompt("Sunrise Motors", ctx)
    assert "TODAY: 2026-02-04 (Wednesday)" in prompt
    assert "INTERFACE: Voice call" in prompt
    assert "CUSTOMER: Not yet identified" in prompt
    assert "BOOKING: No booking in progress" in prompt
    for marker in ("[CALL_STARTED]", "[CALL_RESUMED]", "[ESCALATION_RETURNED:"):
        assert marker in prompt


# ---------------------------------------------------------------------- over the bus


async def test_stream_started_greets_sentence_by_sentence(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await caller.started()
    says = await caller.turn(turn_id)
    assert [s.text for s in says] == [*GREETING, ""]
    assert [s.seq for s in says] == [0, 1, 2]
    assert [s.last for s in says] == [False, False, True]
    first = says[0].timings
    assert first.llm_request is not None and first.first_token is not None
    assert first.first_sentence is not None
    assert first.llm_request <= first.first_token <= first.first_sentence

    request = llm.requests[-1]
    assert request["stream"] is True
    system, user = request["messages"]
    assert system["role"] == "system" and "Sunrise Motors" in system["content"]
    assert "TODAY:" in system["content"]
    assert user == {"role": "user", "content": "[CALL_STARTED]"}


async def test_resumed_stream_sends_the_escalation_marker(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await caller.started("MZ0002", resumed=True, reason="busy")
    says = await caller.turn(turn_id)
    assert says[-1].last
    assert llm.requests[-1]["messages"][-1]["content"] == "[ESCALATION_RETURNED:busy]"
    turn_id = await caller.started("MZ0003", resumed=True)
    await caller.turn(turn_id)
    assert llm.requests[-1]["messages"][-1]["content"] == "[CALL_RESUMED]"


async def test_transcript_gets_a_reply_with_history_and_events(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    await caller.turn(await caller.started())
    turn_id = await caller.say("Hi, I'd like to book an oil change.")
    says = await caller.turn(turn_id)
    assert [s.text for s in says] == [
        "Sure,",  # the first clause goes out on its own
        "I can help you book an oil change.",
        "We have openings most days this week.",
        "Which day works best for you?",
        "",
    ]
    assert all(s.utterance_id == "utt_sess_a_1" for s in says)
    # The transcript's timings travel on, filled in by the agent.
    assert says[0].timings.speech_end == 1.0 and says[0].timings.transcript_published == 2.0
    assert says[0].timings.first_sentence is not None

    roles = [m["role"] for m in llm.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert llm.requests[-1]["messages"][2]["content"] == " ".join(GREETING)

    user = await caller.event(lambda e: isinstance(e, TranscriptEvent) and e.role == "user")
    assert user.text == "Hi, I'd like to book an oil change." and user.turn_id == turn_id
    reply = await caller.event(
        lambda e: isinstance(e, TranscriptEvent) and e.role == "assistant" and e.turn_id == turn_id
    )
    assert reply.text.startswith("Sure, I can help") and not reply.interrupted
    state = await caller.event(
        lambda e: isinstance(e, StateUpdateEvent) and e.state["last_turn_id"] == turn_id
    )
    assert state.state["turns"] == 2

    turn_id = await caller.say("Tuesday morning")
    says = await caller.turn(turn_id)
    assert "name" in says[-2].text


async def test_the_closing_message_says_what_the_turn_asks_for(
    agent: AgentService, caller: Caller
) -> None:
    async def closing(text: str | None) -> Say:
        turn_id = await caller.started() if text is None else await caller.say(text)
        says = await caller.turn(turn_id)
        assert says[-1].last and says[-1].text == ""
        assert all(s.expects is None for s in says[:-1])  # only the closing message says
        return says[-1]

    assert (await closing(None)).expects is None  # "… how can I help you today?"
    assert (await closing("I'd like an oil change")).expects == "datetime"  # which day
    assert (await closing("Tuesday works")).expects == "name"  # "Can I get your name…?"
    # "Sorry, I didn't quite catch that. Could you say that again?": the name still.
    assert (await closing("mumble mumble")).expects == "name"
    assert (await closing("How much is it?")).expects == "yes_no"  # "Would you like…?"
    assert (await closing("thanks")).expects is None  # goodbye: no question


async def test_noise_transcripts_are_ignored(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    await caller.say("   ")
    await caller.say("...")
    await caller.say("thank you", no_speech_prob=0.97)
    turn_id = await caller.say("I need an oil change")
    await caller.turn(turn_id)
    assert len(llm.requests) == 1
    assert llm.requests[0]["messages"][-1]["content"] == "I need an oil change"


async def test_first_sentence_is_published_before_the_llm_finishes(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await caller.say("slow answer please")
    first = await caller.next_say()
    assert first.turn_id == turn_id and first.seq == 0 and first.text == SLOW_FIRST
    completion = llm.completions[-1]
    # The endpoint has not yet sent its last chunk when the first sentence arrives.
    assert not completion.finished
    says = [first, *(await caller.turn(turn_id))]
    assert completion.finished
    assert [s.text for s in says] == [
        SLOW_FIRST,
        "I found three openings this week.",
        "Which one would you like?",
        "",
    ]


async def test_barge_in_cancels_the_turn_and_keeps_only_what_was_heard(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await caller.say("What are your hours?")
    first = await caller.next_say()
    assert first.text == LONG_FIRST and not llm.completions[-1].finished
    heard = "Our service department is open"
    await caller.bus.publish(
        subjects.control(caller.sid),
        BargeIn(session_id=caller.sid, turn_id=turn_id, heard_text=heard, heard_seqs=[0]),
    )
    event = await caller.event(
        lambda e: isinstance(e, TranscriptEvent) and e.role == "assistant" and e.turn_id == turn_id
    )
    assert event.interrupted and event.text == heard
    await eventually(lambda: llm.completions[-1].cancelled)

    next_turn = await caller.say("Can I book an oil change?")
    says = await caller.turn(next_turn)
    assert says[-1].last
    # Nothing more of the cancelled turn was said, and it never got its last=True.
    assert [s for s in caller.heard if s.turn_id == turn_id] == [first]
    messages = llm.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == heard
    assert not any("never hear" in str(m.get("content")) for m in messages)
    metrics = agent.metrics.render().decode()
    assert 'dealerline_agent_turns_cancelled_total{reason="barge_in"} 1.0' in metrics
    assert 'dealerline_agent_turns_total{result="cancelled"} 1.0' in metrics


async def test_barge_in_after_the_reply_was_generated_edits_history(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    turn_id = await caller.started()
    await caller.turn(turn_id)
    await caller.bus.publish(
        subjects.control(caller.sid),
        BargeIn(session_id=caller.sid, turn_id=turn_id, heard_text=GREETING[0], heard_seqs=[0]),
    )
    await caller.event(lambda e: isinstance(e, TranscriptEvent) and e.interrupted)
    ai = [m for m in await history(agent, caller.sid) if m.id == ai_message_id(turn_id)]
    assert len(ai) == 1 and ai[0].content == GREETING[0]

    await caller.turn(await caller.say("oil change"))
    assert llm.requests[-1]["messages"][2] == {"role": "assistant", "content": GREETING[0]}


async def test_stream_stopped_forgets_the_session(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    # A stopped session is forgotten once idle for the TTL (short here; 30 min by default).
    agent = make_agent(agent_settings(nats_server, llm, session_idle_ttl_s=0.2))
    await agent.start()
    try:
        caller = Caller(test_bus, "sess_a")
        await caller.start()
        await caller.turn(await caller.started())
        assert caller.sid in agent.sessions
        await caller.bus.publish(subjects.control(caller.sid), StreamStopped(session_id=caller.sid))
        await eventually(lambda: caller.sid not in agent.sessions)
        # The replica's bookkeeping is gone; the stored state stays until its TTL.
        assert len(await history(agent, caller.sid)) == 2
    finally:
        await agent.drain()


def test_session_idle_ttl_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_SESSION_IDLE_TTL_S", raising=False)
    assert AgentSettings().session_idle_ttl_s == 1800.0
    assert AgentSettings().session_sweep_interval_s == 60.0
    monkeypatch.setenv("AGENT_SESSION_IDLE_TTL_S", "2")
    assert AgentSettings().session_idle_ttl_s == 2.0
    assert AgentSettings().session_sweep_interval_s == 0.5


def metric(agent: AgentService, line: str) -> bool:
    return line in agent.metrics.render().decode()


async def test_stream_stopped_keeps_the_history_for_the_resumed_stream(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    """The customer leg goes into the escalation conference (Twilio sends `stop`) while a
    reply is being spoken, and comes back on a new stream: the turn was cancelled, the
    history is still there for `[ESCALATION_RETURNED:...]`."""
    greeting = await caller.started("MZ0001")
    await caller.turn(greeting)
    await caller.turn(await caller.say("I need an oil change"))
    slow = await caller.say("slow answer please")
    first = await caller.next_say()
    assert (first.turn_id, first.text) == (slow, SLOW_FIRST)

    await caller.stopped("MZ0001")
    await eventually(lambda: llm.completions[-1].cancelled)
    await eventually(lambda: not agent.sessions[caller.sid].streaming)
    assert metric(agent, 'dealerline_agent_turns_cancelled_total{reason="hangup"} 1.0')
    assert caller.sid in agent.sessions
    assert len(await history(agent, caller.sid)) >= 4

    back = await caller.started("MZ0002", resumed=True, reason="human_ended")
    says = await caller.turn(back)
    assert says[-1].last
    assert says[0].text.startswith("Welcome back")  # the scripted answer to human_ended
    messages = llm.requests[-1]["messages"]
    assert messages[1] == {"role": "user", "content": "[CALL_STARTED]"}
    assert messages[2] == {"role": "assistant", "content": " ".join(GREETING)}
    assert messages[3] == {"role": "user", "content": "I need an oil change"}
    assert messages[4]["role"] == "assistant"
    assert messages[4]["content"].startswith("Sure, I can help you book an oil change.")
    assert messages[-1] == {"role": "user", "content": "[ESCALATION_RETURNED:human_ended]"}
    # The cancelled turn never got its last=True.
    assert not any(s.last for s in caller.heard if s.turn_id == slow)


async def test_late_stop_of_the_old_stream_does_not_cancel_the_resumed_turn(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    await caller.turn(await caller.started("MZ0001"))
    # The greeting turn is over (its events too), so the stop cancels nothing.
    await eventually(lambda: agent.sessions[caller.sid].running_task is None)
    await caller.stopped("MZ0001")
    # reason "slow": the welcome-back reply pauses after its first sentence.
    back = await caller.started("MZ0002", resumed=True, reason="slow")
    first = await caller.next_say()
    assert (first.turn_id, first.seq, first.text) == (back, 0, SLOW_FIRST)
    assert not llm.completions[-1].finished

    await caller.stopped("MZ0001")  # the old stream's stop, delivered late
    await eventually(
        lambda: metric(agent, 'dealerline_agent_control_ignored_total{reason="stale_stop"} 1.0')
    )
    says = [first, *(await caller.turn(back))]
    assert [s.text for s in says] == [
        SLOW_FIRST,
        "I found three openings this week.",
        "Which one would you like?",
        "",
    ]
    assert llm.completions[-1].finished and not llm.completions[-1].cancelled
    assert not metric(agent, 'dealerline_agent_turns_cancelled_total{reason="hangup"}')
    assert agent.sessions[caller.sid].streaming
    # The resumed stream still takes transcripts, and its own stop still counts.
    await caller.turn(await caller.say("oil change"))
    await caller.stopped("MZ0002")
    await eventually(lambda: not agent.sessions[caller.sid].streaming)


async def test_stale_start_of_a_stopped_stream_is_ignored(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    await caller.turn(await caller.started("MZ0001"))
    await caller.stopped("MZ0001")
    await eventually(lambda: not agent.sessions[caller.sid].streaming)
    await caller.started("MZ0001")  # a copy of the first start, handled after its stop
    await eventually(
        lambda: metric(agent, 'dealerline_agent_control_ignored_total{reason="stale_start"} 1.0')
    )
    assert not agent.sessions[caller.sid].streaming
    assert len(llm.requests) == 1


async def test_idle_sessions_are_swept_after_the_ttl(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    """A stopped session and one whose stop was lost are both forgotten by the sweep."""
    agent = make_agent(agent_settings(nats_server, llm, session_idle_ttl_s=0.3))
    await agent.start()
    try:
        stopped, lost = Caller(test_bus, "sess_stopped"), Caller(test_bus, "sess_lost")
        for c in (stopped, lost):
            await c.start()
            await c.turn(await c.started())
        await stopped.stopped()
        await eventually(lambda: not agent.sessions)
        assert metric(agent, "dealerline_agent_active_sessions 0.0")
        # A forgotten call that comes back continues from the stored history.
        await lost.turn(await lost.started("MZ0009", resumed=True))
        roles = [m["role"] for m in llm.requests[-1]["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
    finally:
        await agent.drain()


async def test_sweep_spares_a_session_with_a_turn_running(
    agent: AgentService, caller: Caller, llm: ScriptedLLM
) -> None:
    await caller.turn(await caller.started())
    busy = await caller.say("slow answer please")
    assert (await caller.next_say()).turn_id == busy
    other = Caller(caller.bus, "sess_other")
    await other.start()
    await other.turn(await other.started())
    await eventually(lambda: agent.sessions["sess_other"].running_task is None)
    later = time.monotonic() + agent.settings.session_idle_ttl_s + 1
    assert await agent.sweep_idle_sessions(now=later) == ["sess_other"]
    assert caller.sid in agent.sessions and "sess_other" not in agent.sessions
    says = await caller.turn(busy)
    assert says[-1].last and says[-2].text == "Which one would you like?"
    await eventually(lambda: agent.sessions[caller.sid].running_task is None)
    # Nothing happened since: just after the turn the session is not idle yet...
    assert await agent.sweep_idle_sessions() == []
    # ...and a TTL later it is.
    later = time.monotonic() + agent.settings.session_idle_ttl_s + 1
    assert await agent.sweep_idle_sessions(now=later) == [caller.sid]


async def test_two_replicas_greet_once(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    settings = agent_settings(nats_server, llm)
    store = MemoryStateStore()  # shared, as Redis is between real replicas
    replicas = [make_agent(settings, store=store) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        caller = Caller(test_bus, "sess_2")
        await caller.start()
        greeting = await caller.started("MZ0001")
        says = await caller.turn(greeting)
        assert [s.text for s in says] == [*GREETING, ""]
        # Both replicas saw the start on their plain subscription...
        await eventually(
            lambda: all(
                caller.sid in r.sessions and r.sessions[caller.sid].stream_sid == "MZ0001"
                for r in replicas
            )
        )
        # ...and a later turn has come and gone, so a second greeting would have shown.
        await caller.turn(await caller.say("oil change"))
        greetings = [r for r in llm.requests if r["messages"][-1]["content"] == "[CALL_STARTED]"]
        assert len(greetings) == 1
        first = [s for s in caller.heard if s.turn_id == greeting and s.seq == 0]
        assert [s.text for s in first] == [GREETING[0]]
        assert sum(r.sessions[caller.sid].turns for r in replicas) == 2
        # Both replicas still see a stop (the one running a turn must cancel it).
        await caller.stopped("MZ0001")
        await eventually(lambda: not any(r.sessions[caller.sid].streaming for r in replicas))
    finally:
        for replica in replicas:
            await replica.drain()


async def test_sessions_run_concurrently(
    agent: AgentService, test_bus: Bus, llm: ScriptedLLM
) -> None:
    a, b = Caller(test_bus, "sess_x"), Caller(test_bus, "sess_y")
    await a.start()
    await b.start()
    turn_a = await a.say("slow answer please")
    assert (await a.next_say()).text == SLOW_FIRST
    # While sess_x's reply is paused mid-stream, sess_y is answered in full.
    says_b = await b.turn(await b.say("oil change"))
    assert says_b[-1].last
    assert not llm.completions[0].finished
    await a.turn(turn_a)


async def test_health_and_metrics_endpoints(agent: AgentService, caller: Caller) -> None:
    turn_id = await caller.started()
    await caller.turn(turn_id)
    # The turn is counted once its events are out, just after its last sentence.
    await caller.event(lambda e: isinstance(e, StateUpdateEvent))
    assert agent.http is not None
    base = f"http://127.0.0.1:{agent.http.port}"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/livez")).status_code == 200
        assert (await http.get(f"{base}/readyz")).status_code == 200

        async def counted() -> bool:
            metrics = (await http.get(f"{base}/metrics")).text
            return (
                'dealerline_agent_turns_total{result="ok"} 1.0' in metrics
                and "dealerline_agent_llm_first_token_seconds_count 1.0" in metrics
            )

        await eventually(counted)


async def test_redelivered_transcript_keeps_its_turn_id(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    """An agent dies after speaking the first sentence; the transcript is redelivered to
    another agent, whose turn has the same id, so the say stream drops the repeat."""
    settings = agent_settings(nats_server, llm, ack_wait_s=1.0, drain_timeout_s=1.0)
    first = make_agent(settings)
    await first.start()
    caller = Caller(test_bus, "sess_r")
    await caller.start()
    turn_id = await caller.say("slow answer please")
    say = await caller.next_say()
    assert (say.turn_id, say.seq) == (turn_id, 0)

    # The first agent loses its connection mid-turn: the transcript is never acked.
    await first.bus.nc.close()
    await first.drain()

    second = make_agent(settings)
    await second.start()
    try:
        says = await caller.turn(turn_id)
        assert says[0].seq == 0 and says[0].turn_id == turn_id  # published again...
        assert [s.seq for s in says] == [0, 1, 2, 3]
        # ...but the stream kept one copy of each sentence.
        psub = await test_bus.js.pull_subscribe(
            subjects.say(caller.sid), stream=subjects.STREAM_SAY
        )
        stored = [loads(Say, m.data) for m in await psub.fetch(10, timeout=2)]
        with contextlib.suppress(Exception):
            await psub.fetch(1, timeout=0.5)  # nothing more
            raise AssertionError("duplicate sentence in the stream")
        await psub.unsubscribe()
        assert [(s.turn_id, s.seq) for s in stored] == [(turn_id, i) for i in range(4)]
        metrics = second.metrics.render().decode()
        assert 'dealerline_bus_redelivered_total{subject_kind="agent-transcripts"} 1.0' in metrics
    finally:
        await second.drain()


async def test_llm_history_is_capped(
    nats_server: NatsServer, llm: ScriptedLLM, test_bus: Bus
) -> None:
    service = make_agent(agent_settings(nats_server, llm, max_history_messages=2))
    await service.start()
    try:
        caller = Caller(test_bus, "sess_h")
        await caller.start()
        await caller.turn(await caller.started())
        for text in ("oil change", "Tuesday", "my name is Sam"):
            await caller.turn(await caller.say(text))
        messages = llm.requests[-1]["messages"]
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[-1]["content"] == "my name is Sam"
    finally:
        await service.drain()
