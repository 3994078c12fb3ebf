"""The gateway asks the agent for a call's greetings as durable jobs (``call.<sid>.agent_job``
on ``DL_AGENT_JOBS``), through a real gateway on a real nats-server: the incoming webhook
stores a ``CallIncoming`` job (once, however often Twilio retries the webhook) and the
stream's start a ``StreamStarted`` job saying the greeting is held; the same messages
still go out on the control subject for every agent replica."""

from __future__ import annotations

import httpx
from gw_testkit import (
    Running,
    call_params,
    collect,
    next_of,
    post_signed,
    running_gateway,
    start_call,
    twilio_stream,
)
from nats.aio.msg import Msg

from dealerline_common import subjects
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    CallIncoming,
    StreamStarted,
    agent_job_id,
    parse_agent_job,
)

CALL = "CA0123456789abcdef0123456789abcd42"


async def stored_jobs(run: Running, sid: str) -> list[Msg]:
    """The jobs ``DL_AGENT_JOBS`` holds for ``sid`` (no agent runs here to take them)."""
    psub = await run.probe.js.pull_subscribe(
        subjects.agent_job(sid), durable=f"check-{sid}", stream=subjects.STREAM_AGENT_JOBS
    )
    out: list[Msg] = []
    try:
        while True:
            try:
                out += await psub.fetch(10, timeout=1.0)
            except TimeoutError:
                return out
    finally:
        await psub.unsubscribe()


async def test_the_greetings_are_asked_for_as_durable_jobs(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        params = await start_call(run, CALL)
        sid = params["session_id"]
        # Twilio retries the webhook: the same answer, no second job.
        async with httpx.AsyncClient(base_url=run.base) as client:
            again = await post_signed(client, "/api/voice/incoming", call_params(CALL))
        assert again.status_code == 200
        announced = await next_of(control, CallIncoming)  # everyone hears of it too
        assert announced.session_id == sid
        async with twilio_stream(run, CALL) as fake:
            await fake.start(params)
            started = await next_of(control, StreamStarted)
            assert started.greeting_prefetched
            jobs = await stored_jobs(run, sid)
        parsed = [parse_agent_job(m.data) for m in jobs]
        assert [type(j) for j in parsed] == [CallIncoming, StreamStarted]
        incoming, start = parsed
        assert isinstance(incoming, CallIncoming) and isinstance(start, StreamStarted)
        assert incoming.call_sid == CALL and incoming.from_number == announced.from_number
        assert start.stream_sid == started.stream_sid and start.greeting_prefetched
        assert [(m.headers or {}).get("Nats-Msg-Id") for m in jobs] == [
            agent_job_id(incoming),
            agent_job_id(start),
        ]
        assert all(m.subject == subjects.agent_job(sid) for m in jobs)
