"""Publishing that rides out a NATS outage.

- Durable (:func:`publish_durable`): the JetStream publish is retried until a deadline
  while the connection is down (waiting on the bus's ``connected`` event, not spinning),
  while JetStream is not back yet (no responders, no stream response, 503), on timeouts
  and on a full reconnect buffer. Every try carries the same ``Nats-Msg-Id``, so a try
  whose ack was lost in the outage and its retry are stored once (within the streams'
  duplicate window).
- Core (:func:`publish_core`): while disconnected nats-py buffers publishes up to its
  pending buffer and then raises ``OutboundBufferLimitError``; such a message is dropped,
  counted by subject kind and logged once per outage, never raised into the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from ..logs import get_logger
from ..metrics import Metrics

__all__ = ["RETRYABLE", "DropCounter", "new_msg_id", "publish_durable", "subject_kind"]

log = get_logger(__name__)

# What a JetStream publish raises while NATS or JetStream is down or coming back.
RETRYABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
)

# One try's wait for the stream's ack (nats-py's default is 5 s too).
_ATTEMPT_TIMEOUT_S = 5.0
_LOG_EVERY_S = 5.0


def subject_kind(subject: str) -> str:
    """A label for metrics and logs that never carries a session id: ``call.<kind>`` for a
    per-call subject, otherwise the subject's first token."""
    parts = subject.split(".")
    if parts[0] == "call" and len(parts) == 3:
        return f"call.{parts[2]}"
    return parts[0]


def new_msg_id() -> str:
    return uuid.uuid4().hex


async def _wait_connected(nc: Client, connected: asyncio.Event, timeout_s: float) -> None:
    """Return once the connection is up (TimeoutError after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not nc.is_connected:
            if nc.is_closed:
                raise nats.errors.ConnectionClosedError
            # The event is set by the reconnected callback, which runs just after the
            # client is usable again: a short cap keeps the two from racing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connected.wait(), 1.0)
            if not nc.is_connected:
                await asyncio.sleep(0.05)


async def publish_durable(
    nc: Client,
    js: JetStreamContext,
    connected: asyncio.Event,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    *,
    deadline_s: float,
    metrics: Metrics | None = None,
) -> api.PubAck:
    """Publish to JetStream, retrying transient failures until ``deadline_s`` has passed;
    then the last error is raised. ``headers`` must hold the message's ``Nats-Msg-Id``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    delay = 0.05
    tries = 0
    logged_at = 0.0
    while True:
        remaining = end - loop.time()
        try:
            if not nc.is_connected:
                await _wait_connected(nc, connected, max(remaining, 0.0))
                remaining = end - loop.time()
            return await js.publish(
                subject,
                payload,
                timeout=max(0.1, min(_ATTEMPT_TIMEOUT_S, remaining)),
                headers=headers,
            )
        except RETRYABLE as exc:
            tries += 1
            if metrics is not None:
                metrics.bus_publish_retries.labels(subject_kind(subject)).inc()
            if loop.time() + delay >= end:
                log.error(
                    "durable publish gave up",
                    kind=subject_kind(subject),
                    tries=tries,
                    deadline_s=deadline_s,
                    error=repr(exc),
                )
                raise
            if time.monotonic() - logged_at >= _LOG_EVERY_S:
                logged_at = time.monotonic()
                log.warning(
                    "durable publish retrying",
                    kind=subject_kind(subject),
                    tries=tries,
                    error=repr(exc),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class DropCounter:
    """Counts core messages dropped because the reconnect buffer was full; logs the first
    drop of each outage (:meth:`reset` on reconnect)."""

    def __init__(self, bus: str, metrics: Metrics | None) -> None:
        self.bus = bus
        self.metrics = metrics
        self.dropped = 0
        self._logged = False

    def drop(self, subject: str) -> None:
        self.dropped += 1
        kind = subject_kind(subject)
        if self.metrics is not None:
            self.metrics.bus_publish_dropped.labels(kind).inc()
        if not self._logged:
            self._logged = True
            log.warning("bus buffer full while disconnected: dropping", bus=self.bus, kind=kind)

    def reset(self) -> None:
        self._logged = False
