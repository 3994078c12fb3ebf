"""The bus client against a real nats-server started by the test."""

import asyncio

import pytest
from nats.aio.msg import Msg

from dealerline_common import subjects
from dealerline_common.bus import Bus, BusConnectError, Reject
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import Say, loads
from dealerline_common.metrics import Metrics


async def _bus(server: NatsServer, name: str = "t", metrics: Metrics | None = None) -> Bus:
    bus = Bus(server.url, name, metrics, file_storage=False)
    await bus.connect()
    return bus


async def test_publish_subscribe_with_headers_and_queue_groups(nats_server: NatsServer) -> None:
    bus = await _bus(nats_server)
    got: dict[str, list[bytes]] = {"a": [], "b": [], "plain": []}
    headers_seen: list[dict[str, str]] = []

    def collect(key: str):  # type: ignore[no-untyped-def]
        async def handler(msg: Msg) -> None:
            got[key].append(msg.data)
            headers_seen.append(dict(msg.headers or {}))

        return handler

    await bus.subscribe("call.s1.audio", collect("a"), queue="gw")
    await bus.subscribe("call.s1.audio", collect("b"), queue="gw")
    await bus.subscribe("call.s1.audio", collect("plain"))
    for i in range(20):
        await bus.publish("call.s1.audio", bytes([i]), headers={"Dl-Meta": f"{i}"})
    await bus.nc.flush()
    await asyncio.sleep(0.1)
    assert len(got["a"]) + len(got["b"]) == 20  # the queue group shares the work
    assert len(got["plain"]) == 20  # a plain subscriber sees everything
    assert {h["Dl-Meta"] for h in headers_seen} == {str(i) for i in range(20)}
    await bus.close()


async def test_handler_errors_do_not_kill_the_subscription(nats_server: NatsServer) -> None:
    bus = await _bus(nats_server)
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise RuntimeError("bad message")
        seen.append(msg.data)

    await bus.subscribe("x", handler)
    await bus.publish("x", b"boom")
    await bus.publish("x", b"ok")
    await bus.nc.flush()
    await asyncio.sleep(0.1)
    assert seen == [b"ok"]
    await bus.close()


async def test_streams_are_created_idempotently(nats_server: NatsServer) -> None:
    bus = await _bus(nats_server)
    await bus.ensure_streams()
    await bus.ensure_streams()
    other = await _bus(nats_server, "other")
    await other.ensure_streams()
    names = {info.config.name for info in await bus.js.streams_info()}
    assert {subjects.STREAM_UTTERANCES, subjects.STREAM_EVENTS, subjects.STREAM_SAY} <= names
    await bus.close()
    await other.close()


def _say(seq: int) -> Say:
    return Say(session_id="s1", turn_id="t1", seq=seq, text=f"sentence {seq}")


async def test_durable_publish_deduplicates_and_work_is_shared(nats_server: NatsServer) -> None:
    bus = await _bus(nats_server)
    await bus.ensure_streams()
    for seq in range(6):
        await bus.publish_durable(subjects.say("s1"), _say(seq), msg_id=f"t1:{seq}")
        await bus.publish_durable(subjects.say("s1"), _say(seq), msg_id=f"t1:{seq}")  # duplicate
    handled: list[tuple[str, int]] = []

    def worker(name: str):  # type: ignore[no-untyped-def]
        async def handler(msg: Msg) -> None:
            handled.append((name, loads(Say, msg.data).seq))

        return handler

    w1 = await bus.work(
        subjects.ALL_SAY, stream=subjects.STREAM_SAY, durable="tts", handler=worker("w1")
    )
    w2 = await bus.work(
        subjects.ALL_SAY, stream=subjects.STREAM_SAY, durable="tts", handler=worker("w2")
    )
    async with asyncio.timeout(10):
        while len(handled) < 6:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert sorted(seq for _, seq in handled) == list(range(6))  # once each, duplicates dropped
    await w1.stop(1)
    await w2.stop(1)
    await bus.close()


async def test_a_job_whose_worker_dies_is_redelivered(nats_server: NatsServer) -> None:
    metrics = Metrics()
    dying = await _bus(nats_server, "dying")
    await dying.ensure_streams()
    await dying.publish_durable(subjects.say("s1"), _say(0), msg_id="t1:0")
    started = asyncio.Event()

    async def hang(msg: Msg) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes: the process "dies" below

    consumer = await dying.work(
        subjects.ALL_SAY, stream=subjects.STREAM_SAY, durable="tts", handler=hang, ack_wait_s=1.0
    )
    await asyncio.wait_for(started.wait(), 10)
    for task in consumer._tasks:  # simulate a crash: no ack, no nak, connection gone
        task.cancel()
    await asyncio.gather(*consumer._tasks, return_exceptions=True)
    await dying.nc.close()

    survivor = await _bus(nats_server, "survivor", metrics)
    done: list[Say] = []

    async def finish(msg: Msg) -> None:
        done.append(loads(Say, msg.data))

    w = await survivor.work(
        subjects.ALL_SAY, stream=subjects.STREAM_SAY, durable="tts", handler=finish, ack_wait_s=1.0
    )
    async with asyncio.timeout(15):
        while not done:
            await asyncio.sleep(0.05)
    assert done[0].seq == 0
    assert b'dealerline_bus_redelivered_total{subject_kind="tts"} 1.0' in metrics.render()
    await w.stop(1)
    await survivor.close()


async def test_rejected_jobs_are_not_retried(nats_server: NatsServer) -> None:
    bus = await _bus(nats_server)
    await bus.ensure_streams()
    attempts: list[bytes] = []

    async def handler(msg: Msg) -> None:
        attempts.append(msg.data)
        if msg.data == b"poison":
            raise Reject("cannot parse")

    w = await bus.work(
        subjects.ALL_SAY, stream=subjects.STREAM_SAY, durable="tts", handler=handler, ack_wait_s=0.5
    )
    await bus.publish_durable(subjects.say("s1"), b"poison")
    await bus.publish_durable(subjects.say("s1"), b"fine")
    async with asyncio.timeout(10):
        while b"fine" not in attempts:
            await asyncio.sleep(0.02)
    await asyncio.sleep(1.5)  # longer than ack_wait: a retried job would come back
    assert attempts.count(b"poison") == 1
    await w.stop(1)
    await bus.close()


async def test_reconnects_after_the_server_restarts(nats_server: NatsServer) -> None:
    metrics = Metrics()
    bus = await _bus(nats_server, "t", metrics)
    got: list[bytes] = []

    async def handler(msg: Msg) -> None:
        got.append(msg.data)

    await bus.subscribe("ping", handler)
    await asyncio.to_thread(nats_server.restart)
    async with asyncio.timeout(15):
        while metrics.bus_reconnects._value.get() < 1:
            await asyncio.sleep(0.05)
    await bus.publish("ping", b"after restart")
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.02)
    assert got == [b"after restart"]
    assert b"dealerline_bus_reconnects_total 1.0" in metrics.render()
    await bus.close()


async def test_connect_waits_for_a_server_that_starts_late() -> None:
    server = NatsServer()
    bus = Bus(server.url, "late", connect_timeout_s=15)
    connecting = asyncio.create_task(bus.connect(), name="connect")
    await asyncio.sleep(0.5)
    server.start()
    try:
        await asyncio.wait_for(connecting, 15)
        assert bus.is_connected
    finally:
        await bus.close()
        server.cleanup()


@pytest.mark.parametrize("servers", ["nats://127.0.0.1:1"])
async def test_connect_gives_up_with_a_clear_error(servers: str) -> None:
    bus = Bus(servers, "nobody", connect_timeout_s=1)
    with pytest.raises(BusConnectError, match="could not connect to NATS at nats://127.0.0.1:1"):
        await bus.connect()
    assert not bus.is_connected
