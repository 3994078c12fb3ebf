"""JetStream work consumers: the pull loops of one durable consumer, each job run in its
own consumer span, kept alive while it runs and settled afterwards (ack, nak with a
retry delay, term for :class:`Reject` or the last attempt, or handed back to another
replica on a drain).

Each job holds a :class:`~.lease.Lease`: answered in-progress heartbeats every
``ack_wait / 4``; a job whose heartbeats went unanswered for ``3/4 ack_wait`` (the
connection is down, or the loop stalled) is cancelled, neither acked nor handed back, and
counted (``bus_lease_lost_total``): the server gives it to another replica at
``ack_wait``, and one job never has two owners working at once.

A fetch that fails while connected (the server restarted without its memory-stored
stream or consumer) calls ``recover`` (the bus recreates the streams and the consumer)
instead of failing forever; while disconnected the loops wait for the connection.

Drain (:meth:`WorkConsumer.stop`): loops stop pulling, a job that arrives on a pull
already in flight is handed straight back (nak without delay, so another replica takes it
now, not after ``ack_wait``), jobs in progress get until the deadline to finish, and those
still running then are cancelled and handed back too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .. import tracing
from ..logs import get_logger
from ..metrics import Metrics
from .lease import Lease
from .received import delivery_attempt

__all__ = ["Handler", "Reject", "WorkConsumer", "default_retry_delay"]

log = get_logger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


class Reject(Exception):
    """Raised by a work handler for a message that can never succeed (it is terminated)."""


def default_retry_delay(attempt: int) -> float:
    """Seconds before a failed job's next attempt: a short linear backoff."""
    return min(2.0, 0.25 * attempt)


async def _call(handler: Handler, msg: Msg) -> None:
    await handler(msg)


def _last_attempt(msg: Msg, max_deliver: int) -> bool:
    """A nak on the last allowed delivery would drop the job, so it is run instead."""
    return delivery_attempt(msg) >= max_deliver


@dataclass
class WorkConsumer:
    """The pull loops of one durable consumer in this process (see :meth:`dealerline_common.bus.Bus.work`)."""

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
    retry_delay_s: Callable[[int], float] = field(default=lambda n: default_retry_delay(n))
    nc: Client | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    # Recreate the streams and this consumer (a server that restarted without them).
    recover: Callable[[], Awaitable[None]] | None = None
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
        failures = 0
        while not self._stopping.is_set():
            if self.nc is not None and not self.nc.is_connected:
                # A pull sent now would only sit in the reconnect buffer.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), self.fetch_timeout_s)
                continue
            try:
                msgs = await self.psub.fetch(1, timeout=self.fetch_timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                failures = 0
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except Exception as exc:
                failures += 1
                await self._fetch_failed(exc, failures)
                continue
            failures = 0
            for msg in msgs:
                if self._stopping.is_set() and not _last_attempt(msg, self.max_deliver):
                    # Pulled by a request made before the drain began: not ours to start.
                    await self._hand_back(msg, "draining")
                else:
                    await self._handle(msg)

    async def _fetch_failed(self, exc: Exception, failures: int) -> None:
        """Back off; if still connected, the stream or the consumer may be gone (a server
        restarted with memory storage): recreate them."""
        log.warning("fetch failed", consumer=self.name, error=repr(exc), failures=failures)
        await asyncio.sleep(min(0.25 * failures, 2.0))
        if self.recover is None or self._stopping.is_set():
            return
        if self.nc is not None and not self.nc.is_connected:
            return
        try:
            await self.recover()
        except Exception as rexc:
            log.warning("consumer not recreated yet", consumer=self.name, error=repr(rexc))
        else:
            log.info("consumer recreated after fetch errors", consumer=self.name)

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
                        "dealerline.delivery_attempt": delivery_attempt(msg),
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
        delivered = delivery_attempt(msg)
        if delivered > 1:
            log.info("redelivered job", consumer=self.name, subject=msg.subject, attempt=delivered)
            if self.metrics:
                self.metrics.jobs_redelivered.labels(self.name).inc()
        # The handler runs as its own task so that a lost lease cancels it and nothing
        # else: the loop settles (or rather, does not settle) the job afterwards.
        job = asyncio.create_task(_call(self.handler, msg), name=f"job:{self.name}")
        lease = self._lease(msg, job)
        keepalive = asyncio.create_task(lease.keep(), name=f"lease:{self.name}")
        try:
            await job
        except Reject as exc:
            log.error("rejected job", consumer=self.name, subject=msg.subject, reason=str(exc))
            if sp is not None:
                tracing.record_error(sp, exc)
            if not lease.lost:
                with contextlib.suppress(Exception):
                    await msg.term()
            return "term"
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if lease.lost and (task is None or task.cancelling() == 0):
                return self._lease_lost(msg, lease)
            if self._hand_back_cancelled and self._stopping.is_set() and not lease.lost:
                # The drain deadline: give the job back now rather than after ack_wait.
                await self._hand_back(msg, "deadline")
            raise
        except Exception as exc:
            if lease.lost:
                return self._lease_lost(msg, lease)
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
            if lease.lost:  # the handler swallowed the cancel: still not ours to ack
                return self._lease_lost(msg, lease)
            with contextlib.suppress(Exception):
                await msg.ack()
            return "ack"
        finally:
            lease.stop()
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    def _lease(self, msg: Msg, job: asyncio.Task[None]) -> Lease:
        nc = self.nc if self.nc is not None else msg._client
        return Lease(msg, nc, self.connected, self.ack_wait_s, job)

    def _lease_lost(self, msg: Msg, lease: Lease) -> str:
        """Heartbeats went unanswered too long: another replica owns the job now."""
        if self.metrics:
            self.metrics.jobs_lease_lost.labels(self.name).inc()
        log.warning(
            "job lease lost: cancelled, left to another replica",
            consumer=self.name,
            subject=msg.subject,
            attempt=delivery_attempt(msg),
            heartbeats=lease.beats,
        )
        return "lease_lost"

    async def _hand_back(self, msg: Msg, reason: str) -> None:
        """Nak without delay: the job goes to another member of the group at once."""
        with contextlib.suppress(Exception):
            await msg.nak()
        if self.metrics:
            self.metrics.jobs_handed_back.labels(self.name, reason).inc()
        log.info("job handed back", consumer=self.name, subject=msg.subject, reason=reason)

    async def stop(self, timeout_s: float, *, hand_back: bool = True) -> None:
        """Stop pulling; jobs in flight get ``timeout_s`` to finish (see
        :meth:`dealerline_common.bus.Bus.stop_consuming`)."""
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
