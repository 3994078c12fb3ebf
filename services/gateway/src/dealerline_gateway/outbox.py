"""One call's ordered lane onto the bus: utterances and dashboard events are queued
without waiting (the frame loop never blocks on NATS) and published one at a time, in
order, by the stream's ``outbox`` task. Messages that must not wait behind a slow
JetStream ack (barge-in, turn played, key presses) are published directly instead."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from dealerline_common import tracing
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.messages import UtteranceMeta, Wire

log = get_logger(__name__)


@dataclass
class Publish:
    subject: str
    data: bytes | Wire
    headers: dict[str, str] | None = None
    msg_id: str | None = None
    durable: bool = True
    meta: UtteranceMeta | None = None  # its header is stamped with the send time
    trace_ctx: tracing.Context | None = None  # published as a child of this


class Outbox:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Publish] = asyncio.Queue()
        self.pending_audio = 0  # bytes of utterance audio queued, not yet being published

    def put(self, item: Publish) -> None:
        if item.meta is not None and isinstance(item.data, bytes):
            self.pending_audio += len(item.data)
        self._queue.put_nowait(item)

    def emit(self, subject: str, event: Wire, trace_ctx: tracing.Context | None) -> None:
        """A durable event, e.g. for the dashboards."""
        self.put(Publish(subject, event, trace_ctx=trace_ctx))

    async def run(self) -> None:
        """Publish what is queued, in order, until cancelled; a failed publish is logged."""
        while True:
            item = await self._queue.get()
            if item.meta is not None and isinstance(item.data, bytes):
                self.pending_audio -= len(item.data)
            try:
                await self._publish(item)
            except Exception:
                log.exception("publish failed", subject=item.subject)
            finally:
                self._queue.task_done()

    async def flush(self, timeout_s: float) -> None:
        """Until everything queued was published (or ``timeout_s`` passed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    async def _publish(self, item: Publish) -> None:
        headers = item.headers
        if item.meta is not None:
            item.meta.timings.utterance_published = time.time()
            headers = item.meta.header()
        with tracing.attached(item.trace_ctx):
            if item.durable:
                await self._bus.publish_durable(item.subject, item.data, headers, item.msg_id)
            else:
                await self._bus.publish(item.subject, item.data, headers)
