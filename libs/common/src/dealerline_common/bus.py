"""The bus client every service uses: nats-py with reconnect, headers, queue groups,
JetStream work consumers with explicit ack, and streams created idempotently at start.

Two lanes:
- core NATS (``publish`` / ``subscribe``) for what is live and may be lost with the call:
  audio to the gateway, control messages;
- JetStream (``publish_durable`` / ``work``) for work that must survive a worker dying:
  utterances, transcripts, sentences to speak, escalation requests, dashboard events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from . import subjects
from .logs import get_logger
from .messages import Wire
from .metrics import Metrics

log = get_logger(__name__)

Handler = Callable[[Msg], Awaitable[None]]

MiB = 1024 * 1024


class BusConnectError(ConnectionError):
    """NATS could not be reached at start-up."""


class Reject(Exception):
    """Raised by a work handler for a message that can never succeed (it is terminated)."""


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    work_queue: bool
    max_age_s: float
    max_msg_size: int = 2 * MiB


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(subjects.STREAM_UTTERANCES, [subjects.ALL_UTTERANCES], True, 300),
    StreamSpec(subjects.STREAM_TRANSCRIPTS, [subjects.ALL_TRANSCRIPTS], True, 300),
    StreamSpec(subjects.STREAM_SAY, [subjects.ALL_SAY], True, 120),
    StreamSpec(subjects.STREAM_EVENTS, [subjects.ALL_EVENTS], False, 7 * 86400),
    StreamSpec(subjects.STREAM_ESCALATIONS, [subjects.ESCALATION_REQUEST], True, 3600),
)

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
)


class Bus:
    """One NATS connection for a service."""

    def __init__(
        self,
        servers: str,
        name: str,
        metrics: Metrics | None = None,
        *,
        file_storage: bool = True,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.name = name
        self.metrics = metrics
        self.file_storage = file_storage
        self.connect_timeout_s = connect_timeout_s
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._consumers: list[WorkConsumer] = []
        self._closing = False
        self.connected = asyncio.Event()

    # ----------------------------------------------------------------- connection

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus is not connected")
        return self._js

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        """Connect, retrying until ``connect_timeout_s`` (the server may start after us)."""

        async def disconnected() -> None:
            self.connected.clear()
            if self._closing:
                return
            if self.metrics:
                self.metrics.bus_disconnects.inc()
            log.warning("bus disconnected", bus=self.name)

        async def reconnected() -> None:
            self.connected.set()
            if self.metrics:
                self.metrics.bus_reconnects.inc()
            log.info("bus reconnected", bus=self.name)

        async def error(exc: Exception) -> None:
            if self.connected.is_set():
                log.warning("bus error", bus=self.name, error=repr(exc))

        # nats-py retries the first connection itself (max_reconnect_attempts=-1 applies to
        # it too), so the whole attempt is bounded here and turned into one clear error.
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=self.servers,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int; any number works
                    connect_timeout=2,
                    ping_interval=10,
                    max_outstanding_pings=3,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                ),
                self.connect_timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise BusConnectError(
                f"could not connect to NATS at {','.join(self.servers)} "
                f"within {self.connect_timeout_s:.0f}s"
            ) from exc
        self._nc = nc
        self._js = self.nc.jetstream(timeout=5.0)
        self.connected.set()
        log.info("bus connected", bus=self.name)

    async def ensure_streams(self, specs: tuple[StreamSpec, ...] = STREAMS) -> None:
        """Create every stream, or update one whose settings changed; safe to run often."""
        storage = api.StorageType.FILE if self.file_storage else api.StorageType.MEMORY
        for spec in specs:
            config = api.StreamConfig(
                name=spec.name,
                subjects=spec.subjects,
                retention=api.RetentionPolicy.WORK_QUEUE
                if spec.work_queue
                else api.RetentionPolicy.LIMITS,
                storage=storage,
                max_age=spec.max_age_s,
                max_msg_size=spec.max_msg_size,
                duplicate_window=120.0,
                discard=api.DiscardPolicy.OLD,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # name in use with another configuration
                    raise
                current = await self.js.stream_info(spec.name)
                config.storage = current.config.storage  # storage cannot change in place
                await self.js.update_stream(config)

    async def kv(self, bucket: str, ttl_s: float) -> KeyValue:
        try:
            return await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self.js.create_key_value(
                api.KeyValueConfig(
                    bucket=bucket,
                    ttl=ttl_s,
                    history=1,
                    storage=api.StorageType.FILE if self.file_storage else api.StorageType.MEMORY,
                )
            )

    # ----------------------------------------------------------------- core lane

    async def publish(
        self, subject: str, data: bytes | Wire, headers: dict[str, str] | None = None
    ) -> None:
        payload = data.dumps() if isinstance(data, Wire) else data
        await self.nc.publish(subject, payload, headers=headers)

    async def subscribe(
        self,
        subject: str,
        handler: Handler,
        queue: str = "",
        *,
        pending_msgs_limit: int = 4096,
    ) -> Subscription:
        """Subscribe with a handler whose errors are logged, never raised into nats-py."""

        async def guarded(msg: Msg) -> None:
            try:
                await handler(msg)
            except Exception:
                log.exception("subscription handler failed", subject=msg.subject)

        return await self.nc.subscribe(
            subject, queue=queue, cb=guarded, pending_msgs_limit=pending_msgs_limit
        )

    # ----------------------------------------------------------------- durable lane

    async def publish_durable(
        self,
        subject: str,
        data: bytes | Wire,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
    ) -> api.PubAck:
        """Publish to JetStream and wait for the stream's ack; ``msg_id`` deduplicates."""
        payload = data.dumps() if isinstance(data, Wire) else data
        hdrs = dict(headers or {})
        if msg_id:
            hdrs["Nats-Msg-Id"] = msg_id
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(_TRANSIENT),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                ack = await self.js.publish(subject, payload, headers=hdrs or None)
        # nats-py waits for the ack with asyncio.wait_for, which on 3.11 can swallow a
        # cancel that lands as the ack arrives; a cancelled turn must still stop here.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return ack

    async def work(
        self,
        subject: str,
        *,
        stream: str,
        durable: str,
        handler: Handler,
        concurrency: int = 1,
        ack_wait_s: float = 10.0,
        max_deliver: int = 5,
        name: str | None = None,
    ) -> WorkConsumer:
        """Consume ``subject`` as one member of the ``durable`` group with explicit ack.

        Each of ``concurrency`` loops pulls one message only when it is free, so a busy
        worker never hoards jobs another replica could run. While a handler runs the
        message is kept alive with in-progress acks; if the process dies, the message is
        redelivered to another member ``ack_wait_s`` later.
        """
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            filter_subject=subject,
            max_ack_pending=10_000,
        )
        psub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        consumer = WorkConsumer(
            psub=psub,
            handler=handler,
            concurrency=concurrency,
            ack_wait_s=ack_wait_s,
            max_deliver=max_deliver,
            name=name or durable,
            metrics=self.metrics,
        )
        consumer.start()
        self._consumers.append(consumer)
        return consumer

    # ----------------------------------------------------------------- shutdown

    async def stop_consuming(self, timeout_s: float) -> None:
        """Stop taking new work and wait (up to ``timeout_s``) for jobs in flight."""
        await asyncio.gather(*(c.stop(timeout_s) for c in self._consumers))

    async def close(self) -> None:
        if self._nc is None:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            await self._nc.drain()
        with contextlib.suppress(Exception):
            await self._nc.close()
        self._nc = None
        self._js = None
        self.connected.clear()


@dataclass
class WorkConsumer:
    psub: JetStreamContext.PullSubscription
    handler: Handler
    concurrency: int
    ack_wait_s: float
    max_deliver: int
    name: str
    metrics: Metrics | None = None
    in_flight: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self._idle.set()
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"work:{self.name}:{i}")
            for i in range(self.concurrency)
        ]

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self.psub.fetch(1, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except Exception as exc:
                log.warning("fetch failed", consumer=self.name, error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _keepalive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.ack_wait_s / 3))
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _handle(self, msg: Msg) -> None:
        self.in_flight += 1
        self._idle.clear()
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        if delivered > 1:
            log.info("redelivered job", consumer=self.name, subject=msg.subject, attempt=delivered)
            if self.metrics:
                self.metrics.jobs_redelivered.labels(self.name).inc()
        keepalive = asyncio.create_task(self._keepalive(msg), name=f"keepalive:{self.name}")
        try:
            await self.handler(msg)
        except Reject as exc:
            log.error("rejected job", consumer=self.name, subject=msg.subject, reason=str(exc))
            with contextlib.suppress(Exception):
                await msg.term()
        except Exception:
            last = delivered >= self.max_deliver
            log.exception(
                "job failed", consumer=self.name, subject=msg.subject, attempt=delivered, final=last
            )
            with contextlib.suppress(Exception):
                await (msg.term() if last else msg.nak(delay=min(2.0, 0.25 * delivered)))
        else:
            with contextlib.suppress(Exception):
                await msg.ack()
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def stop(self, timeout_s: float) -> None:
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A pull request still open at cancel time can leave a status message queued on the
        # subscription, and nats-py's drain would then wait out its whole timeout on it.
        with contextlib.suppress(Exception):
            await self.psub.unsubscribe()


def headers_of(msg: Msg) -> dict[str, str]:
    return dict(msg.headers or {})


def msg_payload(msg: Msg) -> bytes:
    data: Any = msg.data
    return bytes(data)
