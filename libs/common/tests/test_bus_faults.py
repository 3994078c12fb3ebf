"""The bus through faults, against a real nats-server the tests stop and restart (its store
kept across restarts): a worker that dies, a worker cut off or stalled while it holds a
job, a consumer whose settings changed, publishing through an outage, a server that comes
up after the service, and one that comes back without its memory-stored streams.

No assertion is about how fast: each waits for what must happen, with generous
deadlines; "within the short ack wait" is shown by an old ack wait far longer than the
deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionReconnectingError

from dealerline_common import subjects
from dealerline_common.bus import Bus, BusAuthError, BusConnectError, NatsAuth, WorkConsumer
from dealerline_common.local_nats import NatsServer
from dealerline_common.metrics import Metrics
from dealerline_common.net import free_port
from dealerline_common.service import BusService
from dealerline_common.settings import ServiceSettings

SAY = subjects.say("s1")


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(f"dealerline_{name}", labels or None)
    return found or 0.0


async def _until(check, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


async def _bus(
    url: str, name: str, metrics: Metrics | None = None, *, file_storage: bool = False
) -> Bus:
    bus = Bus(url, name, metrics, file_storage=file_storage)
    await bus.connect()
    await bus.ensure_streams()
    return bus


async def _work(bus: Bus, handler, ack_wait_s: float = 2.0) -> WorkConsumer:  # type: ignore[no-untyped-def]
    return await bus.work(
        subjects.ALL_SAY,
        stream=subjects.STREAM_SAY,
        durable="tts",
        handler=handler,
        ack_wait_s=ack_wait_s,
    )


async def _messages_in(bus: Bus, stream: str) -> int:
    info = await bus.js.stream_info(stream)
    return int(info.state.messages)


class CutProxy:
    """A TCP relay between one client and the server that the test can cut: the client is
    disconnected and cannot reconnect (its port refuses), while the server runs on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst), name="proxy-pump")
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if server is not None:  # since Python 3.12.1 this waits for the relayed connections
            await server.wait_closed()


@pytest.fixture
def stored_server():  # type: ignore[no-untyped-def]
    """A server with file storage whose store survives its restarts."""
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_a_killed_workers_job_comes_back_under_the_updated_short_ack_wait(
    nats_server: NatsServer,
) -> None:
    """The durable was made with ack_wait 30 s; a restart with 2 s updates it (it used to be
    left as it was), and the job a killed worker held comes back long before 30 s."""
    dying = await _bus(nats_server.url, "dying")
    await dying.publish_durable(SAY, b"job", msg_id="t1:0")
    started = asyncio.Event()

    async def hang(msg: Msg) -> None:
        started.set()
        await asyncio.Event().wait()

    await _work(dying, hang, ack_wait_s=30.0)
    info = await dying.js.consumer_info(subjects.STREAM_SAY, "tts")
    assert info.config.ack_wait == 30.0
    await asyncio.wait_for(started.wait(), 30)
    await dying.stop_consuming(0.0, hand_back=False)  # a crash: no ack, no nak
    await dying.nc.close()

    metrics = Metrics()
    survivor = await _bus(nats_server.url, "survivor", metrics)
    done: list[bytes] = []

    async def finish(msg: Msg) -> None:
        done.append(msg.data)

    await _work(survivor, finish, ack_wait_s=2.0)
    info = await survivor.js.consumer_info(subjects.STREAM_SAY, "tts")
    assert info.config.ack_wait == 2.0
    await _until(lambda: done, timeout_s=20.0)  # the old 30 s wait would not bring it back
    assert done == [b"job"]
    assert _value(metrics, "bus_redelivered_total", subject_kind="tts") == 1.0
    await survivor.close()


async def test_a_cut_off_worker_lets_go_of_its_job_and_the_new_owner_runs_it_once(
    nats_server: NatsServer,
) -> None:
    proxy = CutProxy(nats_server.port)
    await proxy.start()
    old_metrics = Metrics()
    old = await _bus(proxy.url, "old", old_metrics)
    effects: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()
    old_cancelled: list[bool] = []

    async def slow(msg: Msg) -> None:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            old_cancelled.append(True)
            raise
        effects.append("old")

    await _work(old, slow)
    await old.publish_durable(SAY, b"job", msg_id="t1:0")
    await asyncio.wait_for(started.wait(), 30)
    await proxy.cut()  # no heartbeat can reach the server from here on

    new = await _bus(nats_server.url, "new")

    async def quick(msg: Msg) -> None:
        effects.append("new")

    await _work(new, quick)
    await _until(lambda: "new" in effects and old_cancelled)
    release.set()  # had the old owner kept the job, it would finish now
    await _until(lambda: _value(old_metrics, "bus_lease_lost_total", subject_kind="tts") == 1)
    await asyncio.sleep(0.5)
    assert effects == ["new"]
    await _until_async(lambda: _messages_in(new, subjects.STREAM_SAY), 0)
    await new.close()
    await old.close(0.5)


async def _until_async(read, wanted: int, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while await read() != wanted:
            await asyncio.sleep(0.1)


async def test_a_stalled_worker_lets_go_of_its_job_and_the_new_owner_runs_it_once(
    nats_server: NatsServer,
) -> None:
    """The event loop is blocked longer than ack_wait: no heartbeat goes out, the server
    gives the job to the other consumer, and the stalled one, once it runs again, is
    cancelled at its next await instead of finishing too."""
    metrics = Metrics()
    stalled = await _bus(nats_server.url, "stalled", metrics)
    effects: list[str] = []
    deliveries: list[int] = []

    async def handler(msg: Msg) -> None:
        attempt = msg.metadata.num_delivered
        deliveries.append(attempt)
        if attempt == 1:
            time.sleep(3.0)  # a stalled loop (3 s > ack_wait 2 s)  # noqa: ASYNC251
            await asyncio.sleep(0.2)  # the next step of the job: I/O
            effects.append("stalled")
        else:
            effects.append("new")

    await _work(stalled, handler)
    other = await _bus(nats_server.url, "other")
    await _work(other, handler)
    await stalled.publish_durable(SAY, b"job", msg_id="t1:0")
    await _until(lambda: "new" in effects)
    await _until(lambda: _value(metrics, "bus_lease_lost_total", subject_kind="tts") == 1)
    await asyncio.sleep(0.5)
    assert effects == ["new"]
    assert deliveries == [1, 2]
    await other.close()
    await stalled.close()


async def test_a_job_in_flight_through_a_server_restart_finishes_once(
    stored_server: NatsServer,
) -> None:
    """File storage: the job is pending on the consumer across the restart. The worker cut
    off longer than its lease cancels it; the server gives it out again after its
    restart, and it is finished once."""
    metrics = Metrics()
    bus = await _bus(stored_server.url, "w", metrics, file_storage=True)
    started = asyncio.Event()
    finished: list[int] = []
    cancelled: list[int] = []

    async def handler(msg: Msg) -> None:
        attempt = msg.metadata.num_delivered
        started.set()
        if attempt == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(attempt)
                raise
        finished.append(attempt)

    await _work(bus, handler)
    await bus.publish_durable(SAY, b"job", msg_id="t1:0")
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.to_thread(stored_server.stop)
    await _until(lambda: cancelled == [1])  # the lease ran out while the server was down
    await asyncio.to_thread(stored_server.start)
    await _until(lambda: finished)
    await asyncio.sleep(0.5)
    assert finished == [2]
    assert _value(metrics, "bus_lease_lost_total", subject_kind="tts") == 1
    await _until_async(lambda: _messages_in(bus, subjects.STREAM_SAY), 0)
    await bus.close()


async def test_a_durable_publish_rides_out_a_long_outage_and_is_stored_once(
    stored_server: NatsServer,
) -> None:
    metrics = Metrics()
    bus = Bus(stored_server.url, "pub", metrics, file_storage=True, publish_timeout_s=120)
    await bus.connect()
    await bus.ensure_streams()
    await asyncio.to_thread(stored_server.stop)
    await _until(lambda: not bus.is_connected)
    publishing = asyncio.create_task(bus.publish_durable(SAY, b"kept", msg_id="t1:0"))
    # Core publishes fill nats-py's reconnect buffer; the rest are dropped and counted.
    for _ in range(64):
        await bus.publish(subjects.audio("s1"), b"\x00" * 65536)
    await asyncio.sleep(10.5)
    assert not publishing.done()
    await asyncio.to_thread(stored_server.start)
    ack = await asyncio.wait_for(publishing, 60)
    assert ack.stream == subjects.STREAM_SAY
    again = await bus.publish_durable(SAY, b"kept", msg_id="t1:0")
    assert again.duplicate
    assert await _messages_in(bus, subjects.STREAM_SAY) == 1
    assert _value(metrics, "bus_publish_dropped_total", subject_kind="call.audio") > 0
    await bus.close()


async def test_a_durable_publish_gives_up_at_its_deadline() -> None:
    server = NatsServer().start()
    try:
        bus = Bus(server.url, "pub", publish_timeout_s=1.0, file_storage=False)
        await bus.connect()
        await asyncio.to_thread(server.stop)
        with pytest.raises(Exception):  # noqa: B017  the last transient error
            await bus.publish_durable(SAY, b"lost", msg_id="t1:0")
        await bus.close(0.5)
    finally:
        server.cleanup()


async def test_confirm_says_whether_the_server_has_what_was_published() -> None:
    """A core publish has no ack: ``confirm`` is the worker's proof before it acks its job.
    With the server up it returns; with the server gone (nats-py reconnecting, its own flush
    would only push its buffer and return), it raises instead of letting the job be acked
    for audio nobody will get."""
    server = NatsServer().start()
    try:
        bus = Bus(server.url, "confirmer", file_storage=False)
        await bus.connect()
        await bus.publish("call.s1.audio", b"sentence")
        await bus.confirm()
        await asyncio.to_thread(server.stop)
        await _until(lambda: not bus.is_connected)
        await bus.publish("call.s1.audio", b"into the void")
        with pytest.raises(ConnectionReconnectingError):
            await bus.confirm(timeout_s=1.0)
        await bus.close(0.5)
    finally:
        server.cleanup()


async def test_start_waits_for_a_server_that_comes_up_late() -> None:
    server = NatsServer()
    bus = Bus(server.url, "late", file_storage=False)
    starting = asyncio.create_task(bus.start(90.0), name="start")
    await asyncio.sleep(1.5)
    assert not starting.done()  # still waiting, not failed
    server.start()
    try:
        await asyncio.wait_for(starting, 90)
        names = {info.config.name for info in await bus.js.streams_info()}
        assert subjects.STREAM_SAY in names
    finally:
        await bus.close()
        server.cleanup()


async def test_start_gives_up_with_a_clear_error_at_its_deadline() -> None:
    bus = Bus(f"nats://127.0.0.1:{free_port()}", "nobody", file_storage=False)
    with pytest.raises(BusConnectError, match="NATS not ready after"):
        await bus.start(1.5)


async def test_start_does_not_wait_out_refused_credentials() -> None:
    """Waiting cannot fix a wrong password: the first refusal ends the start (a plain
    BusConnectError would mean it waited out the whole deadline)."""
    config = 'authorization { users = [ {user: "gateway", password: "right"} ] }'
    with NatsServer(config=config) as server:
        wrong = NatsAuth(user="gateway", password="wrong")
        bus = Bus(server.url, "gateway", file_storage=False, auth=wrong)
        with pytest.raises(BusAuthError, match="Authorization Violation"):
            await bus.start(60.0)


async def test_a_server_back_without_its_streams_gets_them_and_the_consumer_again(
    nats_server: NatsServer,
) -> None:
    """Memory storage: a restarted server has lost the stream and the consumer. The work
    loop's fetch errors lead it to recreate both, and work flows again."""
    bus = await _bus(nats_server.url, "mem")
    done: list[bytes] = []

    async def handler(msg: Msg) -> None:
        done.append(msg.data)

    await _work(bus, handler)
    await asyncio.to_thread(nats_server.restart)
    await bus.publish_durable(SAY, b"after", msg_id="t1:1")  # retried until the stream is back
    await _until(lambda: done == [b"after"])
    info = await bus.js.consumer_info(subjects.STREAM_SAY, "tts")
    assert info.config.ack_wait == 2.0
    await bus.close()


async def test_a_job_keeps_its_owner_through_a_short_server_restart(
    stored_server: NatsServer,
) -> None:
    """Heartbeats resume as soon as the connection is back: a restart shorter than the
    lease leaves the job with its owner (no second delivery to the idle loop beside it),
    even after the restarted server's own ack wait has passed."""
    metrics = Metrics()
    bus = await _bus(stored_server.url, "w", metrics, file_storage=True)
    deliveries: list[int] = []
    release = asyncio.Event()

    async def handler(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        await release.wait()

    await bus.work(
        subjects.ALL_SAY,
        stream=subjects.STREAM_SAY,
        durable="tts",
        handler=handler,
        ack_wait_s=8.0,
        concurrency=2,
    )
    await bus.publish_durable(SAY, b"job", msg_id="t1:0")
    await _until(lambda: deliveries == [1])
    reconnects = _value(metrics, "bus_reconnects_total")
    await asyncio.to_thread(stored_server.restart)
    await _until(lambda: _value(metrics, "bus_reconnects_total") > reconnects)
    await asyncio.sleep(12.0)  # past ack_wait from the restart: only heartbeats kept it
    release.set()
    await _until_async(lambda: _messages_in(bus, subjects.STREAM_SAY), 0)
    assert deliveries == [1]
    assert _value(metrics, "bus_lease_lost_total", subject_kind="tts") == 0
    await bus.close()


class _LateSettings(ServiceSettings):
    nats_start_timeout_s: float = 90.0


async def test_a_service_started_before_nats_comes_up_with_it() -> None:
    server = NatsServer()
    settings = _LateSettings(nats_url=server.url, http_port=0, js_file_storage=False)
    service = BusService(settings)
    assert service.start_timeout_s == 90.0
    starting = asyncio.create_task(service.start(), name="service-start")
    await asyncio.sleep(1.5)
    assert not starting.done() and not service.health.ready
    server.start()
    try:
        await asyncio.wait_for(starting, 90)
        assert service.health.ready
    finally:
        await service.drain()
        server.cleanup()
