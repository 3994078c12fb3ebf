"""Many calls at once through the real fleet (the short version of ``make load``/``make soak``):
five callers speaking in real time at the same moment, each with several turns, on one
fleet with the scripted LLM. Every caller turn gets a reply, no call fails, and once the
calls have ended the fleet holds nothing beyond what the design keeps
(:mod:`dealerline_sim.leftovers`)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_sim.crowd import CrowdResult, FleetDoor, FrameClock, plans, prepare, run_crowd
from dealerline_sim.leftovers import Leftovers, inspect
from dealerline_sim.procstats import Snapshot, cpu_percent, rss_growth, snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CALLS = 5
TURNS = 2


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """The fleet lives for the whole module, by design."""
    return


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    logs = Path("artifacts") / "e2e-load" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(log_dir=logs, llm=scripted, quiet=True) as f:
        yield f


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def crowd(fleet: Fleet) -> tuple[CrowdResult, Leftovers, Leftovers]:
    """Five calls at once (started 0.5 s apart); what the fleet held before and after."""
    call_plans = plans(CALLS, TURNS, stagger_s=0.5)
    await prepare(call_plans)
    before = await inspect(fleet)
    door = FleetDoor(fleet.gateway_url, fleet.public_url, fleet.auth_token)
    result = await run_crowd(door, call_plans, quiet_s=1.5, timeout_s=90.0)
    return result, before, await _settled(fleet)


async def _settled(fleet: Fleet, timeout_s: float = 60.0) -> Leftovers:
    """The fleet's leftovers once the ended calls' stream tokens are gone (or the deadline
    passed: the assertions then say what is left)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = await inspect(fleet)
        if left.kv.get("dl_stream_tokens", 0) == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(1.0)


async def test_every_caller_turn_gets_a_reply_with_five_calls_at_once(
    crowd: tuple[CrowdResult, Leftovers, Leftovers],
) -> None:
    result, _, _ = crowd
    assert result.errors == []
    assert len(result.calls) == CALLS
    assert result.turns == CALLS * TURNS
    assert result.unanswered == 0, [c.latencies for c in result.calls]
    assert all(c.greeting_s is not None for c in result.calls), "every caller heard a greeting"
    assert all(c.protocol_errors == 0 for c in result.calls)
    assert len({c.session_id for c in result.calls}) == CALLS, "one session per call"
    assert result.media > 0


async def test_after_the_calls_only_what_the_design_keeps_is_left(
    crowd: tuple[CrowdResult, Leftovers, Leftovers], fleet: Fleet
) -> None:
    result, before, left = crowd
    sessions = {c.session_id for c in result.calls}
    # One admission per call (kept for replays until the bucket's max age), no unused
    # stream token, no pending hand-off.
    assert left.kv.get("dl_call_admissions") == CALLS
    assert left.kv.get("dl_stream_tokens", 0) == 0
    assert left.kv.get("dl_handoffs", 0) == 0
    # The state store: only the calls' own sessions, every key with its TTL.
    if fleet.state_url and fleet.state_url.startswith("redis"):
        assert left.redis.without_ttl == []
        assert left.redis.sessions <= sessions, left.redis.sessions - sessions
        assert left.redis.kinds["state"] >= 1
    # Consumers: the work streams' durable ones, as many after the calls as before.
    assert left.consumers == before.consumers
    # Every service reports its live asyncio tasks on /metrics.
    assert {"gateway", "stt", "tts", "agent"} <= set(left.tasks), left.tasks


# ----------------------------------------------------------------- the measuring devices


def _media(ms: int) -> dict[str, object]:
    payload = base64.b64encode(bytes(8 * ms)).decode()
    return {"event": "media", "media": {"payload": payload}}


async def test_a_frame_arriving_after_the_audio_before_it_ran_out_is_late() -> None:
    clock = FrameClock()
    clock.append(_media(20))
    await asyncio.sleep(0.2)  # the 20 ms before it ran out long ago
    clock.append(_media(20))
    assert (clock.media, clock.late) == (2, 1)
    assert clock.worst_gap_s > 0.1


async def test_audio_sent_ahead_or_a_new_sentence_is_not_late() -> None:
    clock = FrameClock()
    for _ in range(100):  # 2 s of audio at once: buffered ahead
        clock.append(_media(20))
    await asyncio.sleep(0.1)
    clock.append(_media(20))
    clock.append({"event": "mark", "mark": {"name": "s1"}})  # the sentence ends
    await asyncio.sleep(0.2)
    clock.append(_media(20))  # the next one starts whenever it is ready
    assert (clock.media, clock.late) == (102, 0)


async def test_rss_growth_is_read_from_the_window_start_to_its_end() -> None:
    series = [
        Snapshot(0.0, {}, {"tts": 100 * 1024**2}),
        Snapshot(60.0, {}, {"tts": 200 * 1024**2, "stt": 50}),
        Snapshot(120.0, {}, {"tts": 260 * 1024**2, "stt": 60}),
        Snapshot(180.0, {}, {"tts": 220 * 1024**2, "stt": 55}),
    ]
    growth = rss_growth(series, since=60.0)
    assert growth["tts"].first == 200 * 1024**2
    assert growth["tts"].peak == 260 * 1024**2
    assert growth["tts"].percent == pytest.approx(10.0)
    assert growth["stt"].percent == pytest.approx(10.0)


async def test_cpu_percent_of_a_busy_process_between_two_snapshots() -> None:
    me = {"me": os.getpid()}
    before = snapshot(me)
    spin = time.process_time() + 0.3
    while time.process_time() < spin:  # 0.3 s of CPU, however long that takes
        pass
    after = snapshot(me)
    assert after.rss["me"] > 0
    assert cpu_percent(before, after)["me"] > 0.0
