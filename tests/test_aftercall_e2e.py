"""A phone call through the real fleet (real nats-server, every service as its own process,
the embedded Whisper and Kokoro models, the scripted LLM over HTTP, the phone simulator
playing Twilio): the call is answered end to end (what the caller says reaches the agent,
what the agent says is what the caller hears, Media Streams framing and marks, forged
webhooks refused), and it leaves one call record (transcript, outcome, LLM summary) and a
service-desk email job; a call whose agent process is killed mid-call still gets its
record.

One fleet serves the module (starting it loads Whisper and Kokoro)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Call, Delivery
from dealerline_common.messages import NotificationJob, loads
from dealerline_sim.demo import (
    CALLER_NUMBER,
    DEALER_NUMBER,
    format_report,
    normalise,
    place_scripted_call,
    word_error_rate,
)
from dealerline_sim.phone import PhoneSimulator, Transcriber, new_sid

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

BOOKING = [
    "Hi, I would like to book an oil change for my car.",
    "Tuesday morning would be great, around nine.",
    "Yes please, book it.",
]
FIRST = "Hi, I would like to book an oil change for my car."
SECOND = "Tuesday morning would be great, around nine."


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """The fleet and its observer live for the whole module, by design."""
    return


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    logs = Path("artifacts") / "e2e-aftercall" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    env = {"AFTERCALL_END_GRACE_S": "1.0", "AFTERCALL_SWEEP_INTERVAL_S": "1.0"}
    async with Fleet(log_dir=logs, llm=scripted, quiet=True, extra_env=env) as f:
        yield f


class Jobs:
    """Every email job put on the ``DL_NOTIFY`` queue (a core subscription sees each one
    as JetStream stores it, whether or not the notifier has taken it yet)."""

    def __init__(self) -> None:
        self.emails: list[NotificationJob] = []
        self.bus: Bus | None = None

    async def start(self, nats_url: str) -> Jobs:
        self.bus = Bus(nats_url, "aftercall-e2e-observer")
        await self.bus.connect()

        async def on_job(msg: Msg) -> None:
            self.emails.append(loads(NotificationJob, msg.data))

        await self.bus.subscribe(subjects.NOTIFY_EMAIL, on_job)
        return self


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jobs(fleet: Fleet) -> AsyncIterator[Jobs]:
    j = await Jobs().start(str(fleet.nats_url))
    yield j
    assert j.bus is not None
    await j.bus.close()


async def record_of(fleet: Fleet, sid: str, timeout_s: float = 30.0) -> Call:
    engine = create_engine_from_url(str(fleet.database_url))
    sessions = session_factory(engine)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with sessions() as s:
                call = (
                    await s.execute(
                        select(Call).where(Call.session_id == sid).options(selectinload(Call.turns))
                    )
                ).scalar()
            if call is not None and call.recorded_at is not None:
                return call
            if time.monotonic() > deadline:
                raise AssertionError(f"no call record for {sid} after {timeout_s}s: {call}")
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()


async def delivery_of(fleet: Fleet, key: str, timeout_s: float = 15.0) -> Delivery:
    engine = create_engine_from_url(str(fleet.database_url))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with session_factory(engine)() as s:
                row = (await s.execute(select(Delivery).where(Delivery.key == key))).scalar()
            if row is not None:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"the notifier never took job {key}")
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()


_NUMBERS = dict(
    enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
)


def words(text: str) -> list[str]:
    """Normalised words, with Whisper's digits spelled out (``9am`` → ``nine a m``)."""
    text = re.sub(r"(\d+)\s*([ap])\.?\s*m\b\.?", r"\1 \2 m", text.lower())
    text = re.sub(r"\b(\d{1,2})\b", lambda m: _NUMBERS.get(int(m.group(1)), m.group(1)), text)
    return normalise(text).split()


def heard_in(heard: str, said: str) -> float:
    """The word error rate of ``heard`` against the best-matching stretch of ``said``
    of the same length."""
    h, s = words(heard), words(said)
    if not h:
        return 0.0
    stretches = [s[i : i + len(h)] for i in range(max(1, len(s) - len(h) + 1))]
    return min(word_error_rate(" ".join(st), " ".join(h)) for st in stretches)


def texts(call: Call, role: str) -> str:
    return " ".join(t.text for t in call.turns if t.role == role)


async def test_a_booking_call_leaves_its_record_summary_and_desk_email(
    fleet: Fleet, jobs: Jobs
) -> None:
    report = await place_scripted_call(
        fleet, BOOKING, pace=2.0, transcriber=Transcriber(), quiet_s=3.0
    )
    sid = report.session_id
    artifacts = Path("artifacts") / "e2e-aftercall"
    (artifacts / "call.txt").write_text(format_report(report))

    # The call itself, end to end.
    greeting, *caller_turns = report.turns
    assert greeting.caller_said is None
    assert greeting.agent_answered, "the LLM greeted the caller on [CALL_STARTED]"
    assert len(caller_turns) == len(BOOKING)
    for turn in caller_turns:
        assert turn.caller_said is not None
        assert word_error_rate(turn.caller_said, turn.stt_heard) < 0.2, turn
        assert turn.agent_answered, turn
        assert turn.latency is not None, "the gateway published the turn's stage timings"
        assert turn.latency.stages_ms["total"] > 0
    for turn in report.turns:
        # what the caller heard transcribes back to what the agent said
        assert word_error_rate(turn.agent_answered, turn.caller_heard) < 0.2, turn
    phone = report.call
    assert phone.protocol_errors == []
    assert phone.outbound_media_sizes, "the gateway played audio"
    assert all(size > 0 and size % 160 == 0 for size in phone.outbound_media_sizes)
    assert all(size <= 400 for size in phone.outbound_media_sizes)
    marked = [seg for seg in phone.heard_segments if seg.mark_name]
    assert marked, "one mark per sentence"
    assert all(seg.mark_echoed_at is not None for seg in marked), "every mark came back"

    # What it left behind.
    call = await record_of(fleet, sid)
    (artifacts / "record.txt").write_text(
        "\n".join(
            [f"{call.outcome} {call.end_reason} {call.duration_s}s", f"summary: {call.summary}"]
            + [f"{t.role}: {t.text}" for t in call.turns]
        )
        + "\n"
    )

    assert call.outcome == "booked"
    assert call.end_reason == "hangup"
    assert call.caller_phone == CALLER_NUMBER
    assert call.duration_s is not None and call.duration_s > 5
    assert call.recorded_at is not None and call.ended_at is not None
    # What the caller said, as the record has it (Whisper may word it a little apart).
    assert word_error_rate(" ".join(BOOKING), texts(call, "caller")) < 0.2, texts(call, "caller")
    # What the agent said, against what the caller heard on the phone: each reply as
    # heard is in the record (a reply cut short by a barge-in is recorded as heard).
    agent_text = texts(call, "agent")
    for turn in report.turns:
        assert turn.caller_heard, turn
        assert heard_in(turn.caller_heard, agent_text) < 0.3, (turn.caller_heard, agent_text)
    # A barge-in keeps the part that was heard: the start of what the agent generated.
    interrupted = [t for t in call.turns if t.interrupted]
    assert call.barge_ins == len(interrupted)
    generated = [normalise(t.agent_answered) for t in report.turns]
    for t in interrupted:
        assert any(g.startswith(normalise(t.text)) and g != normalise(t.text) for g in generated)
    assert call.turns[0].role == "agent", "the greeting comes first"
    assert len(call.latency) >= len(BOOKING), "one latency entry per answered turn"
    assert any(a["action"] == "booked" for a in call.appointments)
    # The summary is the LLM's, from this call's transcript.
    first_caller = next(t.text for t in call.turns if t.role == "caller")
    assert call.summary and first_caller.strip() in call.summary

    async with asyncio.timeout(10):
        while not [j for j in jobs.emails if j.session_id == sid]:
            await asyncio.sleep(0.1)
    (job,) = [j for j in jobs.emails if j.session_id == sid]
    assert job.key == f"{sid}:desk-email"
    assert job.to == "service@sunrisemotors.example"
    assert call.summary in job.body
    assert CALLER_NUMBER in job.body
    assert f"{fleet.url('dashboard-api')}/#/calls/{sid}" in job.body
    assert "Oil Change" in job.body
    delivery = await delivery_of(fleet, job.key)  # the notifier took it off DL_NOTIFY
    assert delivery.session_id == sid


async def test_a_forged_incoming_webhook_is_refused(fleet: Fleet) -> None:
    async with PhoneSimulator(fleet.gateway_url, fleet.public_url, fleet.auth_token) as sim:
        params = sim.incoming_call_params(new_sid("CA"), CALLER_NUMBER, DEALER_NUMBER)
        forged = await sim.post_webhook("/api/voice/incoming", params, forged=True)
        assert forged.status_code == 403
        genuine = await sim.post_webhook("/api/voice/incoming", params)
        assert genuine.status_code == 200


async def test_a_call_whose_agent_is_killed_mid_call_still_gets_its_record(
    fleet: Fleet, jobs: Jobs
) -> None:
    async with PhoneSimulator(
        fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=2.0
    ) as sim:
        await sim.prepare(FIRST, SECOND)
        call = await sim.place_call(CALLER_NUMBER, DEALER_NUMBER)
        async with call:
            await call.wait_until_quiet(1.5, 90)  # the greeting
            await call.say(FIRST)
            await call.wait_until_quiet(1.5, 90)  # the agent answers ...
            fleet.kill("agent")  # ... then its process dies mid-call
            await call.say(SECOND)
            await asyncio.sleep(3.0)  # nobody answers; the caller hangs up
        sid = call.custom_parameters["session_id"]
    record = await record_of(fleet, sid)
    assert record.end_reason == "hangup"
    assert record.outcome == "answered", "the first question was answered before the crash"
    assert word_error_rate(FIRST, texts(record, "caller")) < 0.2
    assert record.turns[0].role == "agent" and record.turns[-1].role == "agent"
    assert record.caller_phone == CALLER_NUMBER, "from the state store the agent wrote"
    assert record.summary, "the summary does not need the agent"
    assert not [j for j in jobs.emails if j.session_id == sid], "not a desk outcome"
    await fleet.restart("agent")  # leave the fleet whole
