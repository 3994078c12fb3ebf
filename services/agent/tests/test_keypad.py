"""The caller's key presses through the real agent on a real nats-server with the scripted
LLM ("press 1 to confirm"): the gateway's runs of keys (``KeyPresses``) are answered as
turns, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dealerline_agent.service import AgentService
from dealerline_agent.settings import AgentSettings
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import turn_id_for_dtmf
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import KeyPresses
from dealerline_common.state_store import MemoryStateStore
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import ScriptedLLM

GREETING = [
    "Thanks for calling Sunrise Motors.",
    "Your oil change is on Tuesday at nine.",
    "Press 1 to confirm.",
]


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM("keypad") as server:
        yield server


def make_agent(
    nats_server: NatsServer, llm: ScriptedLLM, tmp_path: Path, **kw: Any
) -> AgentService:
    settings = AgentSettings(
        nats_url=nats_server.url,
        llm_base_url=llm.base_url,
        http_host="127.0.0.1",
        http_port=0,
        js_file_storage=False,
        drain_timeout_s=5.0,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'dealer.db'}",
    )
    return AgentService(settings, tools=[], **kw)


def keys(caller: Caller, stream_sid: str, run: int, digits: str) -> KeyPresses:
    return KeyPresses(
        session_id=caller.sid, stream_sid=stream_sid, run=run, digits=digits, first_at=1.0
    )


async def press(caller: Caller, run: KeyPresses) -> None:
    """What the gateway publishes when a run of keys ended."""
    await caller.bus.publish(subjects.control(caller.sid), run)


def dtmf_requests(llm: ScriptedLLM, marker: str) -> list[dict[str, Any]]:
    return [r for r in llm.requests if r["messages"][-1]["content"] == marker]


def turns_counted(agent: AgentService, result: str) -> float:
    line = f'dealerline_agent_turns_total{{result="{result}"}}'
    for text in agent.metrics.render().decode().splitlines():
        if text.startswith(line):
            return float(text.split()[-1])
    return 0.0


async def until(check: Any, within_s: float = 10.0) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), within_s)


async def test_press_1_to_confirm(
    nats_server: NatsServer, llm: ScriptedLLM, client: Bus, tmp_path: Path
) -> None:
    agent = make_agent(nats_server, llm, tmp_path)
    await agent.start()
    try:
        caller = Caller(client, "sess_keys")
        await caller.start()
        greeting = await caller.started("MZK1")
        first = await caller.next_say()
        assert first.text == GREETING[0] and not llm.completions[-1].finished
        # Keys pressed while the greeting is still being said do not cut it short: they
        # are the next turn's input.
        await press(caller, keys(caller, "MZK1", 1, "1"))
        says = [first, *(await caller.turn(greeting))]
        assert [s.text for s in says] == [*GREETING, ""]

        confirmed = await caller.turn(turn_id_for_dtmf("MZK1", 1))
        assert [s.text for s in confirmed] == ["Thank you,", "your appointment is confirmed.", ""]
        assert confirmed[-1].expects is None  # a statement asks for nothing
        request = llm.requests[-1]
        assert request["messages"][-1] == {"role": "user", "content": "[DTMF:1]"}
        system = request["messages"][0]["content"]
        assert "\n- [DTMF:<keys>]: the caller pressed" in system
        assert "THIS TURN: the input is [DTMF]" in system
        # The next run of the stream is the next turn.
        await press(caller, keys(caller, "MZK1", 2, "42#"))
        says = await caller.turn(turn_id_for_dtmf("MZK1", 2))
        assert says[0].text == "You pressed 42#."
        assert says[-1].expects == "yes_no"  # "To confirm, please press 1."
        assert not any(
            '{reason="barge_in"}' in line for line in agent.metrics.render().decode().splitlines()
        )
        assert agent.sessions[caller.sid].turns == 3
    finally:
        await agent.drain()


async def test_two_replicas_answer_each_run_once(
    nats_server: NatsServer, llm: ScriptedLLM, client: Bus, tmp_path: Path
) -> None:
    store = MemoryStateStore()  # shared, as Redis is between real replicas
    replicas = [make_agent(nats_server, llm, tmp_path, store=store) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        caller = Caller(client, "sess_keys2")
        await caller.start()
        await caller.turn(await caller.started("MZK2"))
        await press(caller, keys(caller, "MZK2", 1, "789"))
        says = await caller.turn(turn_id_for_dtmf("MZK2", 1))
        assert says[0].text == "You pressed 789."
        await press(caller, keys(caller, "MZK2", 2, "1"))
        await caller.turn(turn_id_for_dtmf("MZK2", 2))
        assert len(dtmf_requests(llm, "[DTMF:789]")) == 1
        assert len(dtmf_requests(llm, "[DTMF:1]")) == 1
        # The greeting and the two runs, each on one replica.
        await until(lambda: sum(turns_counted(r, "ok") for r in replicas) == 3)
        await asyncio.sleep(0.2)
        assert sum(turns_counted(r, "ok") for r in replicas) == 3
    finally:
        for replica in replicas:
            await replica.drain()


async def test_a_run_delivered_twice_is_answered_once(
    nats_server: NatsServer, llm: ScriptedLLM, client: Bus, tmp_path: Path
) -> None:
    agent = make_agent(nats_server, llm, tmp_path)
    await agent.start()
    try:
        caller = Caller(client, "sess_keys3")
        await caller.start()
        await caller.turn(await caller.started("MZK3"))
        run = keys(caller, "MZK3", 1, "5")
        await press(caller, run)
        await press(caller, run)
        says = await caller.turn(turn_id_for_dtmf("MZK3", 1))
        assert says[0].text == "You pressed 5."
        # The second delivery finds the turn's reply stored: it replays it (the say
        # stream keeps one copy of each sentence) instead of asking the LLM again.
        await until(lambda: turns_counted(agent, "replayed") == 1)
        assert len(dtmf_requests(llm, "[DTMF:5]")) == 1
        await until(lambda: turns_counted(agent, "ok") == 2)  # greeting + the run
        assert agent.sessions[caller.sid].turns == 2
    finally:
        await agent.drain()


async def test_keys_after_the_caller_hung_up_are_ignored(
    nats_server: NatsServer, llm: ScriptedLLM, client: Bus, tmp_path: Path
) -> None:
    agent = make_agent(nats_server, llm, tmp_path)
    await agent.start()
    try:
        caller = Caller(client, "sess_keys4")
        await caller.start()
        await caller.turn(await caller.started("MZK4"))
        await caller.stopped("MZK4")
        await until(lambda: agent.sessions.hung_up(caller.sid))
        await press(caller, keys(caller, "MZK4", 1, "9"))
        await asyncio.sleep(0.5)
        assert dtmf_requests(llm, "[DTMF:9]") == []
        assert agent.sessions[caller.sid].turns == 1  # the greeting only
    finally:
        await agent.drain()
