"""Reading the dashboard events (``call.<sid>.events`` in the ``DL_EVENTS`` stream) and
turning them into WebSocket frames.

:class:`EventReader` reads one filter subject in stream order with an ephemeral pull
consumer (no acks: the stream keeps every event for 7 days whoever reads it). It starts at
the first event, at a point in time or at a sequence number, and when its consumer is lost
(a long disconnect, a NATS restart) it makes a new one starting after the last sequence it
returned, so a reader never skips or repeats an event.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.logs import get_logger
from dealerline_common.messages import EventMessage, parse_event

from .masking import mask_all

log = get_logger(__name__)


def event_name(event: EventMessage) -> str:
    """``dealerline.event.call_started.v1`` → ``call_started``."""
    return event.type.split(".")[2]


@dataclass
class Frame:
    """One message to the sockets, serialised once per audience (whole numbers, masked)."""

    body: dict[str, Any]
    _full: str | None = field(default=None, repr=False)
    _masked: str | None = field(default=None, repr=False)

    def text(self, full_numbers: bool) -> str:
        if full_numbers:
            if self._full is None:
                self._full = json.dumps(self.body, separators=(",", ":"))
            return self._full
        if self._masked is None:  # every number in every string (:func:`mask_all`)
            self._masked = json.dumps(mask_all(self.body), separators=(",", ":"))
        return self._masked


def event_frame(seq: int, event: EventMessage) -> Frame:
    data = event.model_dump(mode="json", exclude={"type"})
    return Frame(
        {
            "seq": seq,
            "type": event_name(event),
            "session_id": event.session_id,
            "at": event.at,
            "data": data,
        }
    )


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    pending: int  # events of this reader's subject still after this one (at delivery)
    event: EventMessage


class EventReader:
    """The events of ``subject`` in stream order (see the module docs)."""

    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        *,
        start_time: datetime | None = None,
        batch: int = 256,
        inactive_threshold_s: float = 120.0,
    ) -> None:
        self.js = js
        self.subject = subject
        self.start_time = start_time
        self.batch = batch
        self.inactive_threshold_s = inactive_threshold_s
        self.last_seq = 0  # the last stream sequence returned (or skipped as unreadable)
        self.pending = 0  # events still to deliver after the last one read
        self._psub: JetStreamContext.PullSubscription | None = None

    def _config(self) -> api.ConsumerConfig:
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self.subject,
            inactive_threshold=self.inactive_threshold_s,
            mem_storage=True,
            max_deliver=1,
        )
        if self.last_seq:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.last_seq + 1
        elif self.start_time is not None:
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = self.start_time
        else:
            config.deliver_policy = api.DeliverPolicy.ALL
        return config

    async def open(self) -> int:
        """Create the consumer; returns how many events it has to deliver right now."""
        await self._close_consumer()
        self._psub = await self.js.pull_subscribe(
            self.subject, stream=subjects.STREAM_EVENTS, config=self._config()
        )
        info = await self._psub.consumer_info()
        self.pending = int(info.num_pending or 0)
        return self.pending

    async def fetch(self, timeout_s: float = 1.0) -> list[StoredEvent]:
        """The next events (up to ``batch``), or none once ``timeout_s`` passed without one."""
        if self._psub is None:
            await self.open()
        assert self._psub is not None
        try:
            msgs = await self._psub.fetch(self.batch, timeout=timeout_s)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            raise
        except Exception as exc:
            # Most likely the consumer is gone (inactive through a long disconnect, or the
            # server restarted): go on from the next sequence with a new one. If NATS is
            # unreachable this raises, and the caller tries again later.
            log.info("event consumer lost; recreating", subject=self.subject, error=repr(exc))
            await self.open()
            return []
        out: list[StoredEvent] = []
        for msg in msgs:
            stored = self._parse(msg)
            if stored is not None:
                out.append(stored)
        return out

    def _parse(self, msg: Msg) -> StoredEvent | None:
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        if seq <= self.last_seq:
            return None  # a redelivery after a consumer was recreated
        self.last_seq = seq
        self.pending = int(meta.num_pending)
        try:
            event = parse_event(msg.data)
        except (ValidationError, ValueError) as exc:
            log.warning(
                "unreadable event skipped",
                subject=msg.subject,
                seq=seq,
                error=str(exc).splitlines()[0],
            )
            return None
        return StoredEvent(seq, int(meta.num_pending), event)

    async def _close_consumer(self) -> None:
        psub, self._psub = self._psub, None
        if psub is None:
            return
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.js.delete_consumer(subjects.STREAM_EVENTS, psub._consumer)

    async def close(self) -> None:
        await self._close_consumer()


async def read_all(js: JetStreamContext, subject: str, batch: int = 256) -> list[StoredEvent]:
    """Every event of ``subject`` stored now (one call's history for the REST API)."""
    reader = EventReader(js, subject, batch=batch)
    out: list[StoredEvent] = []
    try:
        await reader.open()
        while reader.pending > 0:
            before = reader.last_seq
            out.extend(await reader.fetch(timeout_s=2.0))
            if reader.last_seq == before:  # nothing came: the stream lost them (age limit)
                break
    finally:
        await reader.close()
    return out
