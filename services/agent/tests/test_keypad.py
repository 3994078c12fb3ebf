"""The caller's key presses: the digit collector on its own (timers injected), then through
the real agent on a real nats-server with the scripted LLM ("press 1 to confirm")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dealerline_agent.keypad import DigitCollector, KeyRun
from dealerline_agent.service import AgentService
from dealerline_agent.settings import AgentSettings
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import turn_id_for_dtmf
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import Dtmf
from dealerline_common.state_store import MemoryStateStore
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import ScriptedLLM

# ---------------------------------------------------------------------- the collector


@dataclass
class FakeTimer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    """``loop.call_later`` under the test's control: nothing fires until ``fire``."""

    def __init__(self) -> None:
        self.timers: list[FakeTimer] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def fire(self) -> None:
        due, self.timers = [t for t in self.timers if not t.cancelled], []
        for timer in due:
            timer.callback()


def collector(
    timers: FakeTimers | None = None, interdigit_s: float = 1.5
) -> tuple[DigitCollector, list[KeyRun]]:
    runs: list[KeyRun] = []
    return DigitCollector(interdigit_s, runs.append, timers), runs


def test_keys_pressed_in_one_go_are_one_run() -> None:
    timers = FakeTimers()
    keys, runs = collector(timers)
    keys.press("s", "MZ1", "1", 10.0)
    keys.press("s", "MZ1", "2", 10.5)
    assert runs == []
    # Each key restarts the inter-digit timeout: only the last one's timer is live.
    assert [t.cancelled for t in timers.timers] == [True, False]
    assert timers.timers[-1].delay == 1.5
    timers.fire()
    assert runs == [KeyRun("s", "MZ1", "12", seq=1, first_at=10.0)]
    keys.press("s", "MZ1", "3", 20.0)
    timers.fire()
    # The second run starts at the stream's third key.
    assert runs[-1] == KeyRun("s", "MZ1", "3", seq=3, first_at=20.0)


def test_hash_ends_the_run_at_once() -> None:
    timers = FakeTimers()
    keys, runs = collector(timers)
    keys.press("s", "MZ1", "4", 1.0)
    keys.press("s", "MZ1", "2", 1.1)
    keys.press("s", "MZ1", "#", 1.2)
    assert [r.digits for r in runs] == ["42#"]
    timers.fire()  # the cancelled timers fire nothing
    assert len(runs) == 1


def test_sessions_and_streams_are_counted_apart() -> None:
    timers = FakeTimers()
    keys, runs = collector(timers)
    keys.press("a", "MZ1", "1", 1.0)
    keys.press("b", "MZ9", "2", 1.0)
    timers.fire()
    assert sorted((r.session_id, r.digits, r.seq) for r in runs) == [
        ("a", "1", 1),
        ("b", "2", 1),
    ]
    # A new stream of the call (back from a person): its keys are counted afresh, and a
    # run still open on the old stream is dropped.
    keys.press("a", "MZ1", "5", 2.0)
    keys.press("a", "MZ2", "6", 3.0)
    timers.fire()
    assert runs[-1] == KeyRun("a", "MZ2", "6", seq=1, first_at=3.0)
    assert len(runs) == 3


def test_a_stopped_stream_drops_its_open_run() -> None:
    timers = FakeTimers()
    keys, runs = collector(timers)
    keys.press("s", "MZ1", "9", 1.0)
    keys.drop("s")
    timers.fire()
    assert runs == []


async def test_the_run_ends_after_the_interdigit_timeout() -> None:
    keys, runs = collector(interdigit_s=0.05)  # the event loop's own timers
    keys.press("s", "MZ1", "7", 1.0)
    await asyncio.sleep(0.02)
    keys.press("s", "MZ1", "8", 1.02)
    await asyncio.sleep(0.03)
    assert runs == []  # 0.05 s after the first key, but not after the second
    await asyncio.sleep(0.1)
    assert [r.digits for r in runs] == ["78"]
    keys.close()


def test_interdigit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_DTMF_INTERDIGIT_S", raising=False)
    assert AgentSettings().dtmf_interdigit_s == 1.5
    monkeypatch.setenv("AGENT_DTMF_INTERDIGIT_S", "0.8")
    assert AgentSettings().dtmf_interdigit_s == 0.8


# ---------------------------------------------------------------------- over the bus

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
        dtmf_interdigit_s=0.3,
    )
    return AgentService(settings, tools=[], **kw)


async def press(caller: Caller, keys: str) -> None:
    for key in keys:
        await caller.bus.publish(
            subjects.control(caller.sid), Dtmf(session_id=caller.sid, digit=key)
        )


def dtmf_requests(llm: ScriptedLLM, marker: str) -> list[dict[str, Any]]:
    return [r for r in llm.requests if r["messages"][-1]["content"] == marker]


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
        # A key pressed while the greeting is still being said does not cut it short:
        # it is the next turn's input.
        await press(caller, "1")
        says = [first, *(await caller.turn(greeting))]
        assert [s.text for s in says] == [*GREETING, ""]

        confirmed = await caller.turn(turn_id_for_dtmf("MZK1", 1))
        assert confirmed[0].text == "Thank you, your appointment is confirmed."
        request = llm.requests[-1]
        assert request["messages"][-1] == {"role": "user", "content": "[DTMF:1]"}
        system = request["messages"][0]["content"]
        assert "[DTMF:<keys>]" in system and "THIS TURN: the input is [DTMF]" in system
        # Keys ended by # are answered at once, as one input.
        await press(caller, "42#")
        says = await caller.turn(turn_id_for_dtmf("MZK1", 2))
        assert says[0].text == "You pressed 42#."
        assert not any(
            '{reason="barge_in"}' in line for line in agent.metrics.render().decode().splitlines()
        )
        assert agent.sessions[caller.sid].turns == 3
    finally:
        await agent.drain()


async def test_two_replicas_answer_the_keys_once(
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
        # Every replica hears every key; whichever got the first key answers, all of it.
        await press(caller, "789")
        says = await caller.turn(turn_id_for_dtmf("MZK2", 1))
        assert says[0].text == "You pressed 789."
        await press(caller, "1")
        await caller.turn(turn_id_for_dtmf("MZK2", 4))
        assert len(dtmf_requests(llm, "[DTMF:789]")) == 1
        assert len(dtmf_requests(llm, "[DTMF:1]")) == 1
        assert not any(
            r["messages"][-1]["content"] in ("[DTMF:7]", "[DTMF:89]") for r in llm.requests
        )
    finally:
        for replica in replicas:
            await replica.drain()
