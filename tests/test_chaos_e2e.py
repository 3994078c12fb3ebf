"""Chaos through the real fleet, the short version of ``make chaos``: while three callers
place calls one after another, each killable worker is SIGKILLed once at a point of a turn
(and started again), NATS and Redis are each restarted once mid-call; no caller turn is
lost (never answered: the caller waits up to 90 s), duplicated or mixed, every greeting is
heard and no service crashes. The tally itself is checked first on a made-up run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dealerline_sim.call_records import MarkEcho, SaidUtterance
from dealerline_sim.chaos import ChaosConfig, report_markdown, run_chaos
from dealerline_sim.chaos_callers import LineRecord
from dealerline_sim.chaos_tally import KillRecord, Tally, tally_bus, tally_lines
from dealerline_sim.chaos_watch import BusWatch, TurnSeen


def _call(*marks: str) -> Any:
    echoes = [MarkEcho(m, 10.0 + i, cleared=False, heard_bytes=0) for i, m in enumerate(marks)]
    return SimpleNamespace(mark_echoes=echoes, said=[SaidUtterance("x", 1, 1.0, 2.0, 2.0)])


def _turn(watch: BusWatch, utterance: str, turn: str, *sentences: str) -> None:
    watch.turns[utterance] = TurnSeen("s1", utterance, "CA1", at=1.0, played_at=5.0)
    watch.utterance_of_turn[turn] = utterance
    for seq, text in enumerate(sentences):
        watch.says[(turn, seq)].append(text)
    watch.says[(turn, len(sentences))].append("")
    watch.last_seq[turn] = len(sentences)


def test_the_tally_tells_complete_lost_duplicated_and_mixed_replies() -> None:
    watch = BusWatch("nats://unused")
    _turn(watch, "u1", "t1", "Hello there.", "How can I help?")
    _turn(watch, "u2", "t2", "First.", "Second.")
    _turn(watch, "u3", "t3", "One.")
    _turn(watch, "u4", "t4", "Said once.")
    watch.says[("t4", 0)].append("Said again.")  # a redelivered turn said seq 0 anew
    call = _call("t1:0", "t1:1", "t2:0", "t3:0", "t3:0", "t4:0")
    lines = [LineRecord(call, f"line {i}", f"u{i}") for i in range(1, 5)]
    committed = {"t1": "Hello there.  How can I help?", "t3": "Two.", "t4": "Said once."}
    tally = Tally()
    tally_lines(lines, watch, committed, tally)
    assert tally.lines == 4
    assert [x.split(" (")[0] for x in tally.lost] == ["'line 2'"]  # "Second." never played
    assert [x.split(" (")[0] for x in tally.duplicated] == ["'line 3'"]
    assert [x.split(":")[0] for x in tally.mixed] == ["'line 3'", "'line 4'"]
    assert "heard 'One.', committed 'Two.'" in tally.mixed[0]
    assert "two ways" in tally.mixed[1]
    kills = [KillRecord("agent", "agent", 4.0, "transcript", ["u1"])]
    tally_bus(watch, kills, tally)
    assert tally.recovery_s == [1.0]
    assert tally.rewritten == 1


@pytest.mark.e2e
async def test_workers_killed_and_nats_and_redis_restarted_mid_call_lose_nothing() -> None:
    config = ChaosConfig(
        kill_plan=("stt", "agent", "tts", "escalation", "aftercall"),
        nats_restarts=1,
        redis_restarts=1,
        calls=3,
        lines_per_call=3,
        # One process per worker: the killed one held the turns in flight at its stage, and
        # they wait for it to come back (or for their redelivery to it).
        replicas=1,
        seed=17,
        # A generous caller: on a loaded 2-core machine a healthy reply can take tens of
        # seconds; a turn the faults really lost never comes at all.
        patience_s=90.0,
        log_dir=Path("artifacts") / "e2e-chaos" / "logs",
    )
    result = await run_chaos(config)
    report = report_markdown(result, "test", "now")
    await asyncio.to_thread((config.log_dir.parent / "chaos.md").write_text, report)
    assert len(result.kills) == 5, report
    assert result.nats_restarts == 1 and result.redis_restarts == 1, report
    assert result.tally.lines >= 3, report
    assert result.tally.lost == [], report
    assert result.tally.mixed == [], report
    assert result.tally.duplicated == [], report
    assert result.crashes == [], report
    assert result.greetings_missing == 0, report
