"""The agent takes the dealership's name, timezone, assistant, persona and voice from the
database's profile row at each turn: a manager's change holds from the next call, with no
restart. Through the real agent on a real nats-server, a real SQLite database and the
scripted LLM over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agent_testkit import agent_settings
from sqlalchemy import select

from dealerline_agent.service import AgentService
from dealerline_common.bus import Bus
from dealerline_common.db import create_engine_from_url, seed, session_factory, upgrade
from dealerline_common.db.models import DealershipProfile
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import Say
from dealerline_common.state_store import MemoryStateStore
from dealerline_sim.agent_caller import Caller
from dealerline_sim.llm import Scenario, ScriptedLLM

# 03:00 UTC on a Thursday: 19:00 on Wednesday in Los Angeles, 22:00 in New York.
NOW = datetime(2026, 2, 5, 3, 0, tzinfo=UTC)
HARBOR = "You are Sam, the phone receptionist of Harbor Point Motors"


def scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "first_token_delay_ms": 0,
            "token_delay_ms": 1,
            "rules": [
                {
                    "match": r"\[CALL_STARTED\]",
                    "when_system_contains": HARBOR,
                    "reply": "Thanks for calling Harbor Point Motors. This is Sam, how can I help?",
                },
                {
                    "match": r"\[CALL_STARTED\]",
                    "reply": "Thanks for calling Sunrise Motors. This is Ava, how can I help?",
                },
            ],
        }
    )


@pytest.fixture
async def dealer_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dealer.db'}"
    await upgrade(url)
    await seed(url)
    return url


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM(scenario()) as server:
        yield server


@pytest.fixture
async def agent(
    nats_server: NatsServer, llm: ScriptedLLM, dealer_url: str
) -> AsyncIterator[AgentService]:
    service = AgentService(
        agent_settings(nats_server.url, llm.base_url, dealer_url),
        tools=[],
        store=MemoryStateStore(),
        clock=lambda: NOW,
    )
    await service.start()
    yield service
    await service.drain()


@pytest.fixture
async def test_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(nats_server.url, name="test", file_storage=False)
    await bus.connect()
    yield bus
    await bus.close()


async def greet(bus: Bus, sid: str) -> list[Say]:
    caller = Caller(bus, sid)
    await caller.start()
    return await caller.turn(await caller.started())


def system_prompt(llm: ScriptedLLM) -> str:
    first = llm.requests[-1]["messages"][0]
    assert first["role"] == "system"
    return str(first["content"])


async def edit_profile(url: str, **values: object) -> None:
    """What a manager's edit in the dashboard does: update the profile row."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            profile = (await s.execute(select(DealershipProfile))).scalar_one()
            for key, value in values.items():
                setattr(profile, key, value)
            await s.commit()
    finally:
        await engine.dispose()


async def test_a_profile_change_holds_from_the_next_call(
    agent: AgentService, llm: ScriptedLLM, test_bus: Bus, dealer_url: str
) -> None:
    says = await greet(test_bus, "sess_before")
    prompt = system_prompt(llm)
    assert "You are Ava, the phone receptionist of Sunrise Motors" in prompt
    assert "thank them for calling Sunrise Motors, say you are Ava" in prompt
    assert "local time 19:00" in prompt  # America/Los_Angeles
    assert "PERSONA" not in prompt
    assert [s.text for s in says][:2] == [
        "Thanks for calling Sunrise Motors.",
        "This is Ava, how can I help?",
    ]
    assert {s.voice for s in says} == {None}  # the TTS service's default voice

    await edit_profile(
        dealer_url,
        name="Harbor Point Motors",
        assistant_name="Sam",
        persona="Speak like a seasoned service advisor: plain words, no jargon.",
        timezone="America/New_York",
        voice="af_bella",
    )

    says = await greet(test_bus, "sess_after")
    prompt = system_prompt(llm)
    assert HARBOR in prompt
    assert "thank them for calling Harbor Point Motors, say you are Sam" in prompt
    assert "DEALERSHIP: Harbor Point Motors" in prompt and "YOU: Sam" in prompt
    assert "Speak like a seasoned service advisor: plain words, no jargon." in prompt
    assert "local time 22:00" in prompt  # America/New_York
    assert "Sunrise" not in prompt
    assert [s.text for s in says] == [
        "Thanks for calling Harbor Point Motors.",
        "This is Sam, how can I help?",
        "",
    ]
    assert {s.voice for s in says} == {"af_bella"}


async def test_an_unknown_timezone_in_the_profile_falls_back_and_the_call_is_answered(
    agent: AgentService, llm: ScriptedLLM, test_bus: Bus, dealer_url: str
) -> None:
    await edit_profile(dealer_url, timezone="Mars/Olympus")
    says = await greet(test_bus, "sess_mars")
    assert says[0].text == "Thanks for calling Sunrise Motors."
    assert "local time 19:00" in system_prompt(llm)  # AGENT_DEALERSHIP_TIMEZONE's default
