"""JetStream work consumers: the pull loops of one durable consumer, each job run in its
own consumer span, kept alive while it runs and settled afterwards (ack, nak with a
retry delay, term for :class:`Reject` or the last attempt, or handed back to another
replica on a drain).

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
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .. import tracing
from ..logs import get_logger
from ..metrics import Metrics
from .received import delivery_attempt

__all__ = ["Handler", "Reject", "WorkConsumer", "default_retry_delay"]

log = get_logger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


class Reject(Exception):
    """Raised by a work handler for a message that can never succeed (it is terminated)."""


def default_retry_delay(attempt: int) -> float:
    """Seconds before a failed job's next attempt: a short linear backoff."""
    return min(2.0, 0.25 * attempt)


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
