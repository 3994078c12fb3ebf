"""The :class:`Bus`: one NATS connection for a service, with reconnect, headers, queue
groups, JetStream publishing with dedup and retry through an outage (:mod:`.publish`),
and work consumers (:mod:`.work`) whose settings follow the service's (:mod:`.consumers`).

:meth:`Bus.start` waits for NATS and JetStream (a service that starts before them comes
up once they are there, instead of exiting).

Trace context rides in the headers (see :mod:`dealerline_common.tracing`): every publish
carries the ``traceparent`` of the span active at the time, every handler runs with the
context its message carried, and each work job or queue-group message gets a consumer
span. With tracing off none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from .. import tracing
from ..logs import get_logger
from ..messages import Wire
from ..metrics import Metrics
from .auth import NatsAuth, inbox_prefix
from .consumers import ensure_consumer
from .publish import DropCounter, new_msg_id
from .publish import publish_durable as _publish_durable
from .startup import BusAuthError, BusConnectError, retry_until
from .streams import STREAMS, StreamSpec, ensure_streams, key_value
from .work import Handler, WorkConsumer, default_retry_delay

__all__ = ["Bus", "BusConnectError"]

log = get_logger(__name__)

# One connection try within Bus.start, so that its progress is logged between tries.
_CONNECT_TRY_S = 5.0


def _refused_credentials(error: Exception | None) -> bool:
    """The server said no to who we are (nats-py reports it as a plain Error)."""
    if isinstance(error, nats.errors.AuthorizationError):
        return True
    return error is not None and "authorization violation" in str(error).lower()


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
        auth: NatsAuth | None = None,
        publish_timeout_s: float = 30.0,
    ) -> None:
        """``publish_timeout_s``: how long :meth:`publish_durable` keeps trying through an
        outage before it raises."""
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.name = name
        self.auth = auth or NatsAuth()
        self.metrics = metrics
        self.file_storage = file_storage
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self._drops = DropCounter(name, metrics)
        self._last_error: Exception | None = None
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

    async def connect(self, timeout_s: float | None = None) -> None:
        """Connect, retrying until ``timeout_s`` (default ``connect_timeout_s``; the server
        may start after us).

        Also configures the process's tracing from ``OTEL_*`` if nothing did yet (the
        bus is the one thing every service has, so none can forget)."""
        tracing.setup_tracing(self.name)

        # nats-py retries the first connection itself (max_reconnect_attempts=-1 applies to
        # it too), so the whole attempt is bounded here and turned into one clear error.
        timeout_s = self.connect_timeout_s if timeout_s is None else timeout_s
        nc = Client()
        options = self.auth.connect_options()
        if self.auth.identified:
            # A user's replies come to its own inbox prefix (see .permissions).
            options["inbox_prefix"] = inbox_prefix(self.name)
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
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                    **options,
                ),
                timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            refused = self._last_error
            raise (BusAuthError if _refused_credentials(refused) else BusConnectError)(
                f"could not connect to NATS at {','.join(self.servers)} within {timeout_s:.0f}s"
                + (f" ({refused!r})" if refused is not None else "")
            ) from exc
        self._nc = nc
        self._js = self.nc.jetstream(timeout=5.0)
        self.connected.set()
        log.info("bus connected", bus=self.name, user=self.auth.user, tls=self.auth.tls)

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        if self._closing:
            return
        if self.metrics:
            self.metrics.bus_disconnects.inc()
        log.warning("bus disconnected", bus=self.name)

    async def start(self, timeout_s: float, specs: tuple[StreamSpec, ...] = STREAMS) -> None:
        """Connect and create the streams, waiting up to ``timeout_s`` for NATS and for
        JetStream to be ready (a progress line every few seconds), then
        :class:`BusConnectError`."""
        end = asyncio.get_running_loop().time() + timeout_s

        async def connect(left: float) -> None:
            if self._nc is None:
                await self.connect(min(left, _CONNECT_TRY_S))

        async def streams(_: float) -> None:
            await self.ensure_streams(specs)

        await retry_until(connect, "NATS", self.name, end)
        await retry_until(streams, "JetStream", self.name, end)

    async def _on_reconnected(self) -> None:
        self.connected.set()
        self._drops.reset()
        if self.metrics:
            self.metrics.bus_reconnects.inc()
        log.info("bus reconnected", bus=self.name)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if self.connected.is_set():
            log.warning("bus error", bus=self.name, error=repr(exc))

    async def ensure_streams(self, specs: tuple[StreamSpec, ...] = STREAMS) -> None:
        """Create every stream, or update one whose settings changed; safe to run often.
        Logged in as a service's user, only the streams that service owns are updated."""
        updater = self.name if self.auth.identified else None
        await ensure_streams(self.js, specs, file_storage=self.file_storage, updater=updater)

    async def kv(self, bucket: str, ttl_s: float) -> KeyValue:
        return await key_value(self.js, bucket, ttl_s, file_storage=self.file_storage)

    # ----------------------------------------------------------------- core lane

    async def publish(
        self, subject: str, data: bytes | Wire, headers: dict[str, str] | None = None
    ) -> None:
        """Core NATS: while disconnected nats-py buffers up to its pending buffer; beyond
        that the message is dropped and counted (``bus_publish_dropped_total``), not raised."""
        payload = data.dumps() if isinstance(data, Wire) else data
        if tracing.enabled():
            headers = tracing.inject(dict(headers or {}))
        try:
            await self.nc.publish(subject, payload, headers=headers or None)
        except nats.errors.OutboundBufferLimitError:
            self._drops.drop(subject)

    async def confirm(self, timeout_s: float = 5.0) -> None:
        """Return once the server has everything published so far (a PING answered after
        it); raise if it does not answer in ``timeout_s``. A worker that publishes its result
        on core NATS confirms before acking its job: a message written to a connection the
        server had already dropped (a restart) then fails the job, which is retried, instead
        of being acked and lost."""
        nc = self.nc
        # While reconnecting, nats-py's flush only pushes its buffer and returns: no proof.
        if not nc.is_connected:
            raise nats.errors.ConnectionReconnectingError
        await nc.flush(timeout=max(1, round(timeout_s)))

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
        """Publish to JetStream and wait for the stream's ack; ``msg_id`` deduplicates.

        Through an outage it keeps trying (see :mod:`.publish`) for up to
        ``publish_timeout_s``, then raises the last error. Without a ``msg_id`` one is made,
        so the tries of one call are stored once."""
        payload = data.dumps() if isinstance(data, Wire) else data
        hdrs = dict(headers or {})
        hdrs["Nats-Msg-Id"] = msg_id or new_msg_id()
        tracing.inject(hdrs)
        ack = await _publish_durable(
            self.nc,
            self.js,
            self.connected,
            subject,
            payload,
            hdrs,
            deadline_s=self.publish_timeout_s,
            metrics=self.metrics,
        )
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
        ack_wait_s: float = 2.0,
        max_deliver: int = 5,
        name: str | None = None,
        retry_delay_s: Callable[[int], float] | None = None,
    ) -> WorkConsumer:
        """Consume ``subject`` as one member of the ``durable`` group with explicit ack.

        Each of ``concurrency`` loops pulls one message only when it is free, so a busy
        worker never hoards jobs another replica could run. While a handler runs the
        message is kept alive with answered in-progress acks every ``ack_wait_s / 4``; if
        the process dies, the message is redelivered to another member ``ack_wait_s``
        later; a job whose heartbeats go unanswered for ``3/4 ack_wait_s`` is cancelled here
        (see :mod:`.lease`); if it drains, see :meth:`stop_consuming`. The durable is
        created, or updated to these settings if it exists with others (:mod:`.consumers`). A handler that raises is retried after
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

        async def recover() -> None:
            await self.ensure_streams()
            await ensure_consumer(self.js, stream, config)

        await ensure_consumer(self.js, stream, config)
        psub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
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
            retry_delay_s=retry_delay_s or default_retry_delay,
            nc=self.nc,
            connected=self.connected,
            recover=recover,
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
