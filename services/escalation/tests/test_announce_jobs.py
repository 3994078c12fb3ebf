"""The escalation service gives the agent the statuses it speaks as durable jobs
(``call.<sid>.agent_job`` on ``DL_AGENT_JOBS``), through a real nats-server: a person
accepting and the whole escalation failing are jobs (once each, however often they are
announced), a ringing phone or one person of the list failing is not; every status still
goes out on ``call.<sid>.escalation`` for the gateway and the dashboard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    EscalationStatus,
    HumanCallStatus,
    agent_job_id,
    loads,
    parse_agent_job,
)
from dealerline_common.metrics import Metrics
from dealerline_common.state_store import MemoryStateStore
from dealerline_escalation.announce import Announcer
from dealerline_escalation.changes import Change
from dealerline_escalation.metrics import EscalationMetrics

SID = "sess_esc_jobs"
S = HumanCallStatus


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(nats_server.url, "escalation", file_storage=False)
    await bus.connect()
    await bus.ensure_streams()
    yield bus
    await bus.close()


def change(status: HumanCallStatus, attempt: int, *, final: bool = False, **kw: str) -> Change:
    return Change(
        session_id=SID,
        task_id="task_9",
        attempt=attempt,
        previous=S.RINGING,
        status=status,
        reason=kw.get("reason"),
        final=final,
        changed=True,
        staff_name="Dana",
        human_call_sid=None,
        call_sid="CA9",
    )


async def stored_jobs(bus: Bus) -> list[EscalationStatus]:
    psub = await bus.js.pull_subscribe(
        subjects.agent_job(SID), durable="check", stream=subjects.STREAM_AGENT_JOBS
    )
    out = []
    try:
        while True:
            try:
                msgs = await psub.fetch(10, timeout=1.0)
            except TimeoutError:
                return out
            for m in msgs:
                job = parse_agent_job(m.data)
                assert isinstance(job, EscalationStatus)
                assert (m.headers or {}).get("Nats-Msg-Id") == agent_job_id(job)
                out.append(job)
    finally:
        await psub.unsubscribe()


async def test_the_statuses_the_agent_speaks_are_its_durable_jobs(bus: Bus) -> None:
    heard: list[EscalationStatus] = []

    async def on_status(msg: object) -> None:
        heard.append(loads(EscalationStatus, msg.data))  # type: ignore[attr-defined]

    await bus.subscribe(subjects.escalation(SID), on_status)
    announcer = Announcer(MemoryStateStore(), bus, EscalationMetrics(Metrics()), time.time)
    await announcer.announce(change(S.RINGING, 1))
    await announcer.announce(change(S.FAILED, 1, reason="no_answer"))  # the next one is rung
    await announcer.announce(change(S.CONFIRMED, 2))
    await announcer.announce(change(S.CONFIRMED, 2))  # announced again: one job
    await announcer.announce(change(S.FAILED, 2, final=True, reason="human_ended"))
    await bus.nc.flush()
    jobs = await stored_jobs(bus)
    assert [(j.status, j.attempt, j.final) for j in jobs] == [
        (S.CONFIRMED, 2, False),
        (S.FAILED, 2, True),
    ]
    assert all(j.task_id == "task_9" and j.spoken for j in jobs)
    for _ in range(500):  # every status on the core subject too
        if len(heard) >= 5:
            break
        await asyncio.sleep(0.02)
    assert [h.status for h in heard] == [S.RINGING, S.FAILED, S.CONFIRMED, S.CONFIRMED, S.FAILED]
