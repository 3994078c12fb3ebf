"""The gateway process on the shared BusService lifecycle: ready once the bus and its
buckets are up; a drain refuses new calls, closes the streams still open at the
deadline (the call ends: StreamStopped and CallEndedEvent go out) and leaves nothing."""

from __future__ import annotations

import asyncio

import httpx
from gw_testkit import Running, collect, make_settings, start_call, twilio_stream

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import CallIncoming, StreamStarted, StreamStopped, parse_control
from dealerline_gateway.service import GatewayService, streams_budget_s


def test_the_streams_get_the_drain_timeout_less_the_closing_share() -> None:
    assert streams_budget_s(60.0) == 58.0
    assert streams_budget_s(4.0) == 3.0


async def test_start_ready_and_drain_closes_open_streams(nats_server: NatsServer) -> None:
    settings = make_settings(nats_server.url, drain_timeout_s=2.0)
    service = GatewayService(settings)
    await service.start()
    probe = Bus(settings.nats_url, "probe", file_storage=False)
    await probe.connect()
    run = Running(service.app, settings, service.bus, probe, service.http)
    try:
        async with httpx.AsyncClient(base_url=run.base) as client:
            assert (await client.get("/readyz")).status_code == 200
        control = await collect(probe, subjects.ALL_CONTROL)
        async with twilio_stream(run) as fake:
            params = await start_call(run, fake.call_sid)
            await fake.start(params)
            incoming = parse_control((await control.get()).data)  # the webhook's
            assert isinstance(incoming, CallIncoming)
            started = parse_control((await control.get()).data)
            assert isinstance(started, StreamStarted)
            drained = asyncio.create_task(service.drain())
            await asyncio.wait_for(fake.closed.wait(), 10)  # closed at the deadline
            await asyncio.wait_for(drained, 10)
        stopped = parse_control((await control.get()).data)
        assert isinstance(stopped, StreamStopped)
        assert stopped.session_id == params["session_id"]
        assert not service.gateway.sessions
        assert service.health.draining
    finally:
        await probe.close()
