"""A redelivered turn continues the reply its first owner started.

Unit tests of the pieces (the voice notes each sentence before publishing it; the
committed reply begins with the words said before the takeover; the continuation request
is one the scripted LLM understands), a turn taken over by an in-process agent whose
store already holds noted sentences, and the whole story through the real components: an
agent process SIGKILLed after its second sentence, a second agent on the same NATS and
Redis finishing the reply, with the scripted LLM in vary mode so a second run of the
model would be worded differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from dealerline_agent.history import from_dicts, turn_reply
from dealerline_agent.metrics import AgentMetrics
from dealerline_agent.resume import CONTINUE_MARK, continuation_note, keep_said
from dealerline_agent.service import AgentService
from dealerline_agent.settings import AgentSettings
from dealerline_agent.speaker import TurnVoice
from dealerline_agent.turn_record import TurnRecord
from dealerline_agent.turns import TurnInput
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import (
    ai_message_id,
    turn_id_for_utterance,
    user_message_id,
)
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import Say, TurnTimings, loads
from dealerline_common.state_store import MemoryStateStore, StateStore, state_store_from_url
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import Scenario, ScriptedLLM, wordings_in
from dealerline_sim.llm_vary import WORDINGS, vary_text

REDIS_URL = "redis://127.0.0.1:6379/0"

# Four sentences; the model pauses after the second, so a kill lands mid-reply.
HOURS_HEAD = "We open at eight on weekdays. Saturdays we open at nine."
HOURS_TAIL = " Sundays we are closed. Is there anything else I can help with?"
HOURS = HOURS_HEAD + HOURS_TAIL
LOOK = "Let me look at the calendar."  # said before the model calls the hours tool


def scenario(pause_ms: float) -> Scenario:
    return Scenario.model_validate(
        {
            "token_delay_ms": 1,
            "rules": [
                {
                    "match": "opening hours",
                    "reply": [
                        {"text": HOURS_HEAD},
                        {"text": HOURS_TAIL, "delay_ms": pause_ms},
                    ],
                },
                {
                    "match": "are you open",
                    "reply": LOOK,
                    "tool_calls": [{"name": "get_dealership_hours", "arguments": {}}],
                },
                {"match": "HOURS:", "on": "tool", "reply": HOURS},
            ],
        }
    )


def words(text: str) -> str:
    return " ".join(text.split())


async def eventually(check: Callable[[], Awaitable[bool]], what: str, tries: int = 1500) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.04)
    raise AssertionError(f"never happened: {what}")


# ---------------------------------------------------------------------------- the pieces


class FakeBus:
    def __init__(self, log: list[tuple[str, int, str]]) -> None:
        self.log = log

    async def publish_durable(self, subject: str, message: Say, *, msg_id: str) -> None:
        self.log.append(("publish", message.seq, message.text))


class NotingStore:
    def __init__(self, log: list[tuple[str, int, str]]) -> None:
        self.log = log

    async def note_reply(self, session_id: str, turn_id: str, seq: int, text: str) -> None:
        self.log.append(("note", seq, text))


async def test_the_voice_notes_each_sentence_before_publishing_it() -> None:
    log: list[tuple[str, int, str]] = []
    voice = TurnVoice(
        FakeBus(log),  # type: ignore[arg-type]
        AgentMetrics(),
        "sess_v",
        "t1",
        None,
        TurnTimings(),
        store=NotingStore(log),  # type: ignore[arg-type]
    )
    await voice.resume(["One.", "Two."])  # an earlier delivery's: published, not noted again
    await voice.say("Three.")
    await voice.end()
    assert log == [
        ("publish", 0, "One."),
        ("publish", 1, "Two."),
        ("note", 2, "Three."),
        ("publish", 2, "Three."),
        ("publish", 3, ""),
    ]
    assert voice.text == "One. Two. Three."


def test_the_committed_reply_begins_with_the_words_said_before_the_takeover() -> None:
    said = ["Let me check.", "I have Tuesday"]
    # The continuation called a tool, then finished the sentence.
    record = TurnRecord("t1")
    record.add([HumanMessage("book it", id=user_message_id("t1"))])
    call = {"name": "lookup", "args": {}, "id": "c1"}
    record.add([AIMessage(content="", tool_calls=[call], id=ai_message_id("t1", 0))])
    record.add([AIMessage(content="at nine.", id=ai_message_id("t1", 1))])
    keep_said(record, said)
    assert turn_reply(record.messages(), "t1") == "Let me check. I have Tuesday at nine."
    assert record.messages()[1].tool_calls  # type: ignore[attr-defined]
    # Nothing was left to say: the said words are the reply.
    bare = TurnRecord("t2")
    keep_said(bare, ["All done."])
    assert turn_reply(bare.messages(), "t2") == "All done."
    untouched = TurnRecord("t3")
    keep_said(untouched, [])
    assert untouched.messages() == []


async def test_the_scripted_llm_understands_the_continuation_request() -> None:
    """The agent's note, sent by the production client (ChatOpenAI) over real HTTP."""
    async with ScriptedLLM(scenario(0)) as llm:
        chat = ChatOpenAI(base_url=llm.base_url, api_key="k", model="m", max_retries=0)
        ask = HumanMessage("what are your opening hours")
        note = continuation_note("t1", ["We open at eight on weekdays."])
        assert isinstance(note, SystemMessage) and CONTINUE_MARK in str(note.content)
        answer = await chat.ainvoke([SystemMessage("You are Ava."), ask, note])
        assert words(str(answer.content)) == words("Saturdays we open at nine." + HOURS_TAIL)
        everything = continuation_note("t1", [HOURS])
        assert (await chat.ainvoke([ask, everything])).content == ""


# ------------------------------------------------- a takeover, noted sentences in the store


def settings_for(nats: NatsServer, llm: ScriptedLLM, db: str, **kw: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "nats_url": nats.url,
        "llm_base_url": llm.base_url,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "js_file_storage": False,
        "ack_wait_s": 2.0,
        "drain_timeout_s": 2.0,
        "database_url": db,
        "llm_first_token_timeout_s": 10.0,
    }
    values.update(kw)
    return AgentSettings(**values)


async def kept_says(bus: Bus, sid: str, turn_id: str) -> list[Say]:
    """The Say messages the ``say`` stream keeps for ``turn_id`` (what the caller hears)."""
    psub = await bus.js.pull_subscribe(subjects.say(sid), stream=subjects.STREAM_SAY)
    kept: list[Say] = []
    try:
        while True:
            try:
                batch = await psub.fetch(50, timeout=1.0)
            except TimeoutError:
                break
            kept.extend(loads(Say, m.data) for m in batch)
    finally:
        await psub.unsubscribe()
    return [s for s in kept if s.turn_id == turn_id]


async def committed_reply(store: StateStore, sid: str, turn_id: str) -> str:
    return turn_reply(from_dicts((await store.get_state(sid)).messages), turn_id)


def assert_one_reply(says: list[Say], committed: str) -> str:
    """One Say per seq, ending with the closing one; their words are the committed reply."""
    assert [s.seq for s in says] == list(range(len(says))), [(s.seq, s.text) for s in says]
    assert says[-1].last and not any(s.last for s in says[:-1])
    heard = words(" ".join(s.text for s in says if s.text))
    assert heard == words(committed)
    return heard


async def test_a_delivery_with_noted_sentences_continues_after_them(
    nats_server: NatsServer, dealer_db: str
) -> None:
    store = MemoryStateStore()
    async with ScriptedLLM(scenario(0)) as llm:
        agent = AgentService(settings_for(nats_server, llm, dealer_db), store=store)
        bus = Bus(nats_server.url, name="test", file_storage=False)
        await bus.connect()
        await agent.start()
        try:
            caller = Caller(bus, "sess_noted")
            await caller.start()
            t = caller.transcript("what are your opening hours")
            turn_id = turn_id_for_utterance(t.utterance_id)
            # A first owner noted two sentences and died having published only the first.
            await store.note_reply(caller.sid, turn_id, 0, "We open at eight on weekdays.")
            await store.note_reply(caller.sid, turn_id, 1, "Saturdays we open at nine.")
            await bus.publish_durable(subjects.transcript(caller.sid), t)
            await eventually(
                lambda: _has_reply(store, caller.sid, turn_id), "the turn is committed"
            )
            says = await kept_says(bus, caller.sid, turn_id)
            committed = await committed_reply(store, caller.sid, turn_id)
            assert assert_one_reply(says, committed) == words(HOURS)
            assert says[1].text == "Saturdays we open at nine."  # noted, now published
            # The model was asked to continue, and the request is not in the history.
            notes = [
                m
                for m in llm.requests[-1]["messages"]
                if m["role"] == "system" and CONTINUE_MARK in m["content"]
            ]
            assert len(notes) == 1 and "Saturdays we open at nine." in notes[0]["content"]
            history = (await store.get_state(caller.sid)).messages
            assert not any(CONTINUE_MARK in str(m["data"].get("content")) for m in history)
            metrics = agent.metrics.render().decode()
            assert 'dealerline_agent_turns_total{result="resumed"} 1.0' in metrics
        finally:
            await agent.drain()
            await bus.close()


async def test_a_takeover_after_a_tool_step_runs_the_reading_tool_again_and_says_the_rest(
    nats_server: NatsServer, dealer_db: str
) -> None:
    """The first owner said the words before its tool call and the first sentence after
    it; its tool result was never stored. The new owner's model calls the (read-only) tool
    again, says nothing of the first step and the rest of the second."""
    store = MemoryStateStore()
    async with ScriptedLLM(scenario(0)) as llm:
        agent = AgentService(settings_for(nats_server, llm, dealer_db), store=store)
        bus = Bus(nats_server.url, name="test", file_storage=False)
        await bus.connect()
        await agent.start()
        try:
            caller = Caller(bus, "sess_tool")
            await caller.start()
            t = caller.transcript("are you open on saturday")
            turn_id = turn_id_for_utterance(t.utterance_id)
            await store.note_reply(caller.sid, turn_id, 0, LOOK)
            await store.note_reply(caller.sid, turn_id, 1, "We open at eight on weekdays.")
            await bus.publish_durable(subjects.transcript(caller.sid), t)
            await eventually(
                lambda: _has_reply(store, caller.sid, turn_id), "the turn is committed"
            )
            says = await kept_says(bus, caller.sid, turn_id)
            committed = await committed_reply(store, caller.sid, turn_id)
            assert assert_one_reply(says, committed) == words(f"{LOOK} {HOURS}")
            history = from_dicts((await store.get_state(caller.sid)).messages)
            tools = [m for m in history if m.type == "tool"]
            assert len(tools) == 1 and "HOURS:" in str(tools[0].content)
        finally:
            await agent.drain()
            await bus.close()


async def test_only_the_caller_cutting_a_turn_short_stores_it_half_said(
    nats_server: NatsServer, dealer_db: str
) -> None:
    """A turn cancelled for any other reason than the caller (its job's lease lost, the
    drain deadline) stores nothing, so the replica handed the job resumes it after the
    noted sentences; a barge-in still keeps the half reply the caller heard."""
    store = MemoryStateStore()
    async with ScriptedLLM(scenario(60_000)) as llm:
        agent = AgentService(settings_for(nats_server, llm, dealer_db), store=store)
        await agent.start()
        try:
            for sid, by_caller in (("sess_lease", False), ("sess_barge", True)):
                turn = TurnInput(turn_id=f"t-{sid}", text="what are your opening hours")
                running = asyncio.create_task(agent.runner.turn(sid, turn))
                await eventually(
                    lambda sid=sid, turn=turn: _noted(store, sid, turn.turn_id, 2),
                    "two sentences are noted",
                )
                if by_caller:
                    assert agent.sessions[sid].cancel_running()
                else:
                    running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                stored = await committed_reply(store, sid, turn.turn_id)
                assert words(stored) == (words(HOURS_HEAD) if by_caller else ""), sid
                assert len(await store.noted_reply(sid, turn.turn_id)) == 2
        finally:
            await agent.drain()


async def _noted(store: StateStore, sid: str, turn_id: str, n: int) -> bool:
    return len(await store.noted_reply(sid, turn_id)) >= n


async def _has_reply(store: StateStore, sid: str, turn_id: str) -> bool:
    return bool(await committed_reply(store, sid, turn_id))


# ------------------------------------------- the whole story: a killed agent, real Redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dealerline_agent"],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(1200):
            if proc.poll() is not None:
                raise AssertionError(f"the agent exited: {tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the agent never became ready: {tail(log)}")


@pytest.fixture
async def redis_namespace() -> AsyncIterator[str]:
    ns = f"test-resume-{uuid.uuid4().hex[:8]}:"
    yield ns
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{ns}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_a_turn_whose_agent_is_killed_mid_reply_is_finished_by_another_in_one_wording(
    nats_server: NatsServer, dealer_db: str, redis_namespace: str, tmp_path: Path
) -> None:
    sid = "sess_killed"
    async with ScriptedLLM(scenario(3000), vary=True) as llm:
        port = free_port()
        env = {
            "AGENT_NATS_URL": nats_server.url,
            "AGENT_HTTP_HOST": "127.0.0.1",
            "AGENT_HTTP_PORT": str(port),
            "AGENT_JS_FILE_STORAGE": "false",
            "AGENT_ACK_WAIT_S": "2",
            "AGENT_LLM_BASE_URL": llm.base_url,
            "AGENT_LLM_API_KEY": "scripted",
            "AGENT_LLM_FIRST_TOKEN_TIMEOUT_S": "10",
            "AGENT_STATE_URL": REDIS_URL,
            "AGENT_STATE_NAMESPACE": redis_namespace,
            "AGENT_DATABASE_URL": dealer_db,
        }
        log = tmp_path / "first-agent.log"
        first = agent_process(env, log)
        bus = Bus(nats_server.url, name="test", file_storage=False)
        await bus.connect()
        second: AgentService | None = None
        try:
            await wait_ready(port, first, log)
            caller = Caller(bus, sid)
            await caller.start()
            turn_id = await caller.say("what are your opening hours")
            seen = [await caller.next_say(), await caller.next_say()]
            first.send_signal(signal.SIGKILL)  # mid-reply: the model is pausing
            first.wait()
            assert [(s.turn_id, s.seq) for s in seen] == [(turn_id, 0), (turn_id, 1)]

            store = state_store_from_url(REDIS_URL, namespace=redis_namespace)
            second = AgentService(
                settings_for(
                    nats_server,
                    llm,
                    dealer_db,
                    state_url=REDIS_URL,
                    state_namespace=redis_namespace,
                )
            )
            await second.start()
            await eventually(lambda: _has_reply(store, sid, turn_id), "the turn is committed")
            says = await kept_says(bus, sid, turn_id)
            heard = assert_one_reply(says, await committed_reply(store, sid, turn_id))
            # One wording, the first owner's, and every word of the reply exactly once.
            (wording,) = wordings_in(heard)
            assert heard == words(vary_text(HOURS, wording)), heard
            assert WORDINGS[wording] in seen[0].text + seen[1].text
            # The second agent continued the reply; it did not run the model afresh.
            asked = llm.requests[-1]["messages"]
            assert any(m["role"] == "system" and CONTINUE_MARK in m["content"] for m in asked)
            assert len(llm.requests) == 2
            await store.close()
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
            if second is not None:
                await second.drain()
            await bus.close()
