"""The bus client every service uses: nats-py with reconnect, headers, queue groups,
JetStream work consumers with explicit ack, and streams created idempotently at start.

Two lanes:
- core NATS (``publish`` / ``subscribe``) for what is live and may be lost with the call:
  audio to the gateway, control messages;
- JetStream (``publish_durable`` / ``work``) for work that must survive a worker dying:
  utterances, transcripts, sentences to speak, escalation requests, dashboard events.

Trace context rides in the headers (see :mod:`.tracing`): every publish carries the
``traceparent`` of the span active at the time, every handler runs with the context its
message carried, and each work job gets a consumer span, so a handler's spans and
publishes continue the call's trace without any code of its own. With tracing off none
of this runs.

Drain (``stop_consuming``): work loops stop pulling, a job that arrives on a pull already
in flight is handed straight back (nak without delay, so another replica takes it now,
not after ``ack_wait``), jobs in progress get until the deadline to finish, and those
still running then are cancelled and handed back too.
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
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from . import subjects, tracing
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
    StreamSpec(subjects.STREAM_NOTIFY, [subjects.ALL_NOTIFY], True, 7 * 86400),
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
        self._queue_subs: list[Subscription] = []
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
        """Connect, retrying until ``connect_timeout_s`` (the server may start after us).

        Also configures the process's tracing from ``OTEL_*`` if nothing did yet (the
        bus is the one thing every service has, so none can forget)."""
        tracing.setup_tracing(self.name)

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
        if tracing.enabled():
            headers = tracing.inject(dict(headers or {}))
        await self.nc.publish(subject, payload, headers=headers or None)

    async def subscribe(
        self,
        subject: str,
        handler: Handler,
        queue: str = "",
        *,
        pending_msgs_limit: int = 4096,
    ) -> Subscription:
        """Subscribe with a handler whose errors are logged, never raised into nats-py.

        The handler runs with the trace context its message carried. A queue-group
        subscription is work shared with other replicas: each message it takes gets a
        consumer span (``process <subject>``), like a work job, and :meth:`stop_consuming`
        drains it (no new messages, those already received are handled)."""

        async def guarded(msg: Msg) -> None:
            token = None
            if tracing.enabled():
                token = otel_context.attach(tracing.extract(msg.headers) or Context())
            try:
                if queue and tracing.enabled():
                    with tracing.span(
                        f"process {subject}",
                        kind=tracing.SpanKind.CONSUMER,
                        attributes={
                            "messaging.system": "nats",
                            "messaging.operation.type": "process",
                            "messaging.destination.name": msg.subject,
                            "messaging.consumer.group.name": queue,
                            "dealerline.service": self.name,
                        },
                    ):
                        await handler(msg)
                else:
                    await handler(msg)
            except Exception:
                log.exception("subscription handler failed", subject=msg.subject)
            finally:
                if token is not None:
                    otel_context.detach(token)

        sub = await self.nc.subscribe(
            subject, queue=queue, cb=guarded, pending_msgs_limit=pending_msgs_limit
        )
        if queue:
            self._queue_subs.append(sub)
        return sub

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
        tracing.inject(hdrs)
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
        retry_delay_s: Callable[[int], float] | None = None,
    ) -> WorkConsumer:
        """Consume ``subject`` as one member of the ``durable`` group with explicit ack.

        Each of ``concurrency`` loops pulls one message only when it is free, so a busy
        worker never hoards jobs another replica could run. While a handler runs the
        message is kept alive with in-progress acks; if the process dies, the message is
        redelivered to another member ``ack_wait_s`` later; if it drains, see
        :meth:`stop_consuming`. A handler that raises is retried after
        ``retry_delay_s(attempt)`` seconds (default: a short linear backoff) until
        ``max_deliver`` attempts, then terminated. Each job runs in a consumer span
        (``process <subject>``) whose parent is the publisher's span.
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
            subject=subject,
            service=self.name,
            handler=handler,
            concurrency=concurrency,
            ack_wait_s=ack_wait_s,
            max_deliver=max_deliver,
            name=name or durable,
            metrics=self.metrics,
            retry_delay_s=retry_delay_s or _default_retry_delay,
        )
        consumer.start()
        self._consumers.append(consumer)
        return consumer

    # ----------------------------------------------------------------- shutdown

    async def stop_consuming(self, timeout_s: float, *, hand_back: bool = True) -> None:
        """Stop taking new work and let jobs in flight finish, up to ``timeout_s``.

        Work loops stop pulling and queue-group subscriptions are drained. Jobs still
        running at the deadline are cancelled and, with ``hand_back``, nak'ed so another
        replica takes them at once; ``hand_back=False`` plays a crash (they come back
        only after ``ack_wait``).
        """
        queue_subs, self._queue_subs = self._queue_subs, []
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(
            *(c.stop(timeout_s, hand_back=hand_back) for c in consumers),
            *(self._drain_sub(sub, timeout_s) for sub in queue_subs),
        )

    async def _drain_sub(self, sub: Subscription, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(sub.drain(), max(timeout_s, 0.01))  # type: ignore[no-untyped-call]
        except Exception:  # already unsubscribed, connection closed, or the deadline
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Drain the connection (handlers finish what they hold, publishes flush), at most
        ``timeout_s``, then close it. Work consumers still running are stopped first, their
        jobs in flight handed back (call :meth:`stop_consuming` before to let them finish)."""
        if self._nc is None:
            return
        if self._consumers:
            await self.stop_consuming(0.0)
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.drain(), timeout_s)
        with contextlib.suppress(Exception):
            await self._nc.close()
        self._nc = None
        self._js = None
        self.connected.clear()


@dataclass
class WorkConsumer:
    """The pull loops of one durable consumer in this process (see :meth:`Bus.work`)."""

    psub: JetStreamContext.PullSubscription
    handler: Handler
    concurrency: int
    ack_wait_s: float
    max_deliver: int
    name: str
    subject: str = ""
    service: str = ""
    metrics: Metrics | None = None
    fetch_timeout_s: float = 1.0
    retry_delay_s: Callable[[int], float] = field(default=lambda n: _default_retry_delay(n))
    in_flight: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _hand_back_cancelled: bool = True

    def start(self) -> None:
        self._idle.set()
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"work:{self.name}:{i}")
            for i in range(self.concurrency)
        ]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self.psub.fetch(1, timeout=self.fetch_timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except Exception as exc:
                log.warning("fetch failed", consumer=self.name, error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                if self._stopping.is_set() and not _last_attempt(msg, self.max_deliver):
                    # Pulled by a request made before the drain began: not ours to start.
                    await self._hand_back(msg, "draining")
                else:
                    await self._handle(msg)

    async def _keepalive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.ack_wait_s / 3))
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _handle(self, msg: Msg) -> None:
        self.in_flight += 1
        self._idle.clear()
        try:
            if tracing.enabled():
                with tracing.span(
                    f"process {self.subject or self.name}",
                    context=tracing.extract(msg.headers) or tracing.Context(),
                    kind=tracing.SpanKind.CONSUMER,
                    attributes={
                        "messaging.system": "nats",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": msg.subject,
                        "messaging.consumer.group.name": self.name,
                        "messaging.message.id": (msg.headers or {}).get("Nats-Msg-Id"),
                        "dealerline.service": self.service or None,
                        "dealerline.delivery_attempt": _attempt(msg),
                    },
                ) as sp:
                    outcome = await self._run(msg, sp)
                    sp.set_attribute("dealerline.job.outcome", outcome)
            else:
                await self._run(msg, None)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _run(self, msg: Msg, sp: tracing.Span | None) -> str:
        """Run the handler and settle the message: ``ack``, ``nak`` (retry), ``term``
        (never again), or ``handed_back`` when the drain deadline cancelled it."""
        delivered = _attempt(msg)
        if delivered > 1:
            log.info("redelivered job", consumer=self.name, subject=msg.subject, attempt=delivered)
            if self.metrics:
                self.metrics.jobs_redelivered.labels(self.name).inc()
        keepalive = asyncio.create_task(self._keepalive(msg), name=f"keepalive:{self.name}")
        try:
            await self.handler(msg)
        except Reject as exc:
            log.error("rejected job", consumer=self.name, subject=msg.subject, reason=str(exc))
            if sp is not None:
                tracing.record_error(sp, exc)
            with contextlib.suppress(Exception):
                await msg.term()
            return "term"
        except asyncio.CancelledError:
            if self._hand_back_cancelled and self._stopping.is_set():
                # The drain deadline: give the job back now rather than after ack_wait.
                await self._hand_back(msg, "deadline")
            raise
        except Exception as exc:
            last = delivered >= self.max_deliver
            log.exception(
                "job failed", consumer=self.name, subject=msg.subject, attempt=delivered, final=last
            )
            if sp is not None:
                tracing.record_error(sp, exc)
            with contextlib.suppress(Exception):
                await (msg.term() if last else msg.nak(delay=self.retry_delay_s(delivered)))
            return "term" if last else "nak"
        else:
            with contextlib.suppress(Exception):
                await msg.ack()
            return "ack"
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _hand_back(self, msg: Msg, reason: str) -> None:
        """Nak without delay: the job goes to another member of the group at once."""
        with contextlib.suppress(Exception):
            await msg.nak()
        if self.metrics:
            self.metrics.jobs_handed_back.labels(self.name, reason).inc()
        log.info("job handed back", consumer=self.name, subject=msg.subject, reason=reason)

    async def stop(self, timeout_s: float, *, hand_back: bool = True) -> None:
        """Stop pulling; jobs in flight get ``timeout_s`` to finish (see
        :meth:`Bus.stop_consuming`)."""
        self._stopping.set()
        self._hand_back_cancelled = hand_back
        if self._tasks and timeout_s > 0:
            # A loop ends once its job is done, or once its open pull returns (within
            # ``fetch_timeout_s``): waiting for that, rather than cancelling the pull,
            # means no job is delivered to a request nobody reads any more.
            await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hand_back:
            await self._hand_back_pending()
        # A pull request still open at cancel time can leave a status message queued on the
        # subscription, and nats-py's drain would then wait out its whole timeout on it.
        with contextlib.suppress(Exception):
            await self.psub.unsubscribe()

    async def _hand_back_pending(self) -> None:
        """A job that reached the subscription just as a pull timed out sits unread in
        its queue; hand it back instead of leaving it to ``ack_wait``."""
        for _ in range(64):
            try:
                if self.psub.pending_msgs <= 0:
                    return
                msgs = await self.psub.fetch(1, timeout=0.05)
            except Exception:
                return
            for msg in msgs:
                await self._hand_back(msg, "draining")


def _default_retry_delay(attempt: int) -> float:
    return min(2.0, 0.25 * attempt)


def _attempt(msg: Msg) -> int:
    return msg.metadata.num_delivered if msg.metadata else 1


def _last_attempt(msg: Msg, max_deliver: int) -> bool:
    """A nak on the last allowed delivery would drop the job, so it is run instead."""
    return _attempt(msg) >= max_deliver


def published_at(msg: Msg) -> float | None:
    """When JetStream stored a work message (wall-clock seconds), for queue-wait metrics."""
    try:
        stamp = msg.metadata.timestamp if msg.metadata else None
    except Exception:  # not a JetStream message
        return None
    return stamp.timestamp() if stamp is not None else None


def headers_of(msg: Msg) -> dict[str, str]:
    return dict(msg.headers or {})


def msg_payload(msg: Msg) -> bytes:
    data: Any = msg.data
    return bytes(data)
