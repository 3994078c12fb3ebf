"""Greetings and spoken escalation outcomes are durable jobs (``call.<sid>.agent_job``, the
``DL_AGENT_JOBS`` work queue), through the real agent on a real nats-server with the
scripted LLM over HTTP: a job sent while no agent is up is taken once one starts; an
agent killed while greeting (no hand-back) leaves the job to another, and the ``say``
stream holds one greeting, each sentence once; a malformed job is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from agent_testkit import agent_settings

from dealerline_agent.jobs import AgentJobs
from dealerline_agent.service import AgentService
from dealerline_common import subjects
from dealerline_common.bus import Bus, Reject
from dealerline_common.conversation import escalation_turn_id, turn_id_for_call
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AgentJob,
    CallIncoming,
    EscalationStatus,
    HumanCallStatus,
    Say,
    StreamStarted,
    agent_job_id,
    loads,
)
from dealerline_common.state import Notification
from dealerline_common.state_store import MemoryStateStore, StateStore
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import Scenario, ScriptedLLM

CALL = "CA00000000000000000000000000000042"
# Three sentences, slow enough (one word every 120 ms) for an agent to die half way.
GREETING = [
    "Thanks for calling Sunrise Motors service department today.",
    "My name is Ava and I am the virtual assistant here.",
    "How can I help you with your car this morning?",
]


def scenario(token_delay_ms: float) -> Scenario:
    demo = Scenario.load("demo")
    extra = Scenario.model_validate(
        {"rules": [{"match": r"\[CALL_STARTED\]", "reply": " ".join(GREETING)}]}
    )
    return demo.model_copy(
        update={
            "rules": [*extra.rules, *demo.rules],
            "first_token_delay_ms": 0,
            "token_delay_ms": token_delay_ms,
        }
    )


@pytest.fixture
async def test_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(nats_server.url, name="test", file_storage=False)
    await bus.connect()
    await bus.ensure_streams()  # jobs go out before any agent is up
    yield bus
    await bus.close()


def make_agent(
    nats_server: NatsServer, llm: ScriptedLLM, dealer_db: str, store: StateStore
) -> AgentService:
    settings = agent_settings(nats_server.url, llm.base_url, dealer_db).model_copy(
        update={"ack_wait_s": 2.0, "llm_model": "gpt-4.1-mini"}
    )
    return AgentService(settings, tools=[], store=store)


async def send_job(bus: Bus, control_subject: str, job: AgentJob) -> None:
    """What the gateway (or the escalation service) sends: the message on its core
    subject for everyone, and the same message as the agent's durable job."""
    await bus.publish(control_subject, job)
    await bus.publish_durable(subjects.agent_job(job.session_id), job, msg_id=agent_job_id(job))


async def incoming(caller: Caller) -> str:
    job = CallIncoming(session_id=caller.sid, call_sid=CALL, to_number="+18005550100")
    await send_job(caller.bus, subjects.control(caller.sid), job)
    return turn_id_for_call(CALL)


async def stored_says(bus: Bus, sid: str) -> list[Say]:
    """Every message the ``say`` stream holds for ``sid`` (no TTS runs here to take them)."""
    psub = await bus.js.pull_subscribe(
        subjects.say(sid), durable=f"check-{sid}", stream=subjects.STREAM_SAY
    )
    out: list[Say] = []
    try:
        while True:
            try:
                msgs = await psub.fetch(50, timeout=1.0)
            except TimeoutError:
                return out
            out += [loads(Say, m.data) for m in msgs]
    finally:
        await psub.unsubscribe()


async def test_an_incoming_call_sent_while_no_agent_is_up_is_greeted_once_one_starts(
    nats_server: NatsServer, test_bus: Bus, dealer_db: str
) -> None:
    caller = Caller(test_bus, "sess_jobs_a")
    await caller.start()
    turn_id = await incoming(caller)  # nobody is up to hear it
    async with ScriptedLLM(scenario(token_delay_ms=1)) as llm:
        agent = make_agent(nats_server, llm, dealer_db, MemoryStateStore())
        await agent.start()
        try:
            says = await caller.turn(turn_id)
            assert " ".join(s.text for s in says if s.text) == " ".join(GREETING)
            # The stream then opens with the greeting held by the gateway: not greeted again.
            started = StreamStarted(
                session_id=caller.sid, call_sid=CALL, stream_sid="MZJ1", greeting_prefetched=True
            )
            await send_job(test_bus, subjects.control(caller.sid), started)
            await caller.turn(await caller.say("I need an oil change"))
            greetings = [
                r for r in llm.requests if r["messages"][-1]["content"] == "[CALL_STARTED]"
            ]
            assert len(greetings) == 1
        finally:
            await agent.drain()


async def test_an_agent_killed_while_greeting_leaves_the_greeting_to_another(
    nats_server: NatsServer, test_bus: Bus, dealer_db: str
) -> None:
    store = MemoryStateStore()  # shared, as Redis is between real replicas
    caller = Caller(test_bus, "sess_jobs_b")
    await caller.start()
    async with ScriptedLLM(scenario(token_delay_ms=120)) as llm:
        first = make_agent(nats_server, llm, dealer_db, store)
        await first.start()
        second = make_agent(nats_server, llm, dealer_db, store)
        try:
            turn_id = await incoming(caller)
            said = await caller.next_say()
            assert said.turn_id == turn_id and said.seq == 0 and not said.last
            await second.start()
            await first.kill()  # a crash: the job is neither acked nor handed back
            assert not any(s.last for s in caller.heard if s.turn_id == turn_id)
            await caller.turn(turn_id)  # the second agent finishes the greeting
            stored = [s for s in await stored_says(test_bus, caller.sid) if s.turn_id == turn_id]
            seqs = [s.seq for s in stored]
            assert sorted(seqs) == list(range(len(stored))), "each sentence once"
            assert stored[-1].last
            text = " ".join(s.text for s in sorted(stored, key=lambda s: s.seq) if s.text)
            assert text == " ".join(GREETING)
        finally:
            await second.drain()


async def test_an_escalation_outcome_sent_while_the_agent_is_down_is_spoken_once_it_is_up(
    nats_server: NatsServer, test_bus: Bus, dealer_db: str
) -> None:
    store = MemoryStateStore()
    caller = Caller(test_bus, "sess_jobs_c")
    await caller.start()
    async with ScriptedLLM(scenario(token_delay_ms=1)) as llm:
        first = make_agent(nats_server, llm, dealer_db, store)
        await first.start()
        await caller.turn(await incoming(caller))
        await first.kill()
        # Nobody is up: the escalation service pushes the notification, then the status.
        await store.push_notification(
            caller.sid,
            Notification(
                id="task_j:confirmed",
                kind="human_available",
                data={"name": "Dana"},
                task_id="task_j",
            ),
        )
        status = EscalationStatus(
            session_id=caller.sid,
            status=HumanCallStatus.CONFIRMED,
            staff_name="Dana",
            task_id="task_j",
            attempt=1,
        )
        assert status.spoken
        await send_job(test_bus, subjects.escalation(caller.sid), status)
        second = make_agent(nats_server, llm, dealer_db, store)
        await second.start()
        try:
            says = await caller.turn(escalation_turn_id("task_j", "confirmed"))
            assert " ".join(s.text for s in says).startswith("Good news, Dana")
        finally:
            await second.drain()


def test_only_acceptance_and_final_failure_are_spoken() -> None:
    def status(s: HumanCallStatus, **kw: Any) -> EscalationStatus:
        return EscalationStatus(session_id="sess_x", status=s, task_id="t", **kw)

    assert status(HumanCallStatus.CONFIRMED).spoken
    assert status(HumanCallStatus.FAILED, final=True).spoken
    assert not status(HumanCallStatus.FAILED, final=False).spoken  # the next one is rung
    assert not status(HumanCallStatus.RINGING).spoken
    assert not EscalationStatus(session_id="sess_x", status=HumanCallStatus.CONFIRMED).spoken


def test_a_job_sent_again_has_the_same_message_id() -> None:
    one = CallIncoming(session_id="sess_x", call_sid=CALL)
    again = CallIncoming(session_id="sess_x", call_sid=CALL)  # another `at`
    assert (
        agent_job_id(one)
        == agent_job_id(again)
        != agent_job_id(StreamStarted(session_id="sess_x", call_sid=CALL, stream_sid="MZ1"))
    )
    failed = EscalationStatus(session_id="sess_x", status=HumanCallStatus.FAILED, task_id="t")
    final = failed.model_copy(update={"final": True})
    assert agent_job_id(failed) != agent_job_id(final)


async def test_a_malformed_job_or_one_on_another_calls_subject_is_dropped() -> None:
    jobs = AgentJobs(greeter=None, escalation_turns=None)  # type: ignore[arg-type]
    bad = SimpleNamespace(subject=subjects.agent_job("sess_x"), data=b'{"type": "nope"}')
    with pytest.raises(Reject):
        await jobs.on_job(bad)  # type: ignore[arg-type]
    job = CallIncoming(session_id="sess_x", call_sid=CALL)
    elsewhere = SimpleNamespace(subject=subjects.agent_job("sess_y"), data=job.dumps())
    with pytest.raises(Reject):
        await jobs.on_job(elsewhere)  # type: ignore[arg-type]
    await asyncio.sleep(0)
