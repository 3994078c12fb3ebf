"""The notifier: service-desk emails and customer texts, each sent once as its recipient
sees it.

Jobs (:class:`~dealerline_common.messages.NotificationJob`) arrive on the ``DL_NOTIFY``
work queue (``notify.email``, ``notify.sms``), one durable consumer per channel, explicit
ack. Appointment events on ``DL_EVENTS`` become text jobs here too (see :mod:`.texts`).

One attempt at a job:

1. claim its key in ``deliveries`` (insert ``pending``, or read the row an earlier
   delivery left): ``sent`` → ack, send nothing, count a duplicate; ``dead`` → ack;
2. count the attempt on the row, then send;
3. on success mark the row ``sent`` with the provider's id (SMTP ``Message-ID``, Twilio
   message SID) at once; on a transient failure keep the error and nak with exponential
   backoff (``notify_backoff_base_s`` doubling up to ``notify_backoff_max_s``); on the
   last attempt (``notify_max_attempts``), or a permanent refusal, or a channel without
   settings, mark the row ``dead`` (the dead-letter record) and log an error.

The one window nothing can close is a crash (or a lost answer) after the provider took
the message and before the row says ``sent``: the next delivery would send again. It is
kept small and made visible: ``mark_sent`` follows the send directly and is retried; a
text whose row shows an earlier attempt is first looked up in Twilio's message list
(same recipient and body since the claim) and, if found, recorded instead of resent; an
email keeps one ``Message-ID`` derived from the key on every attempt, so a second copy
is the same message to the desk's mail system.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dealerline_common import subjects
from dealerline_common.bus import Bus, Reject, WorkConsumer
from dealerline_common.db.models import DeliveryStatus
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import AppointmentEvent, NotificationJob, loads, parse_event
from dealerline_common.metrics import Metrics
from dealerline_common.state_store import StateStore

from ..settings import AftercallSettings
from .ledger import Ledger
from .senders import EmailSender, PermanentSendError, Sender, SmsSender, TransientSendError
from .texts import ConfirmationTexts

__all__ = ["Notifier", "Outcome"]

log = get_logger(__name__)

EMAIL_DURABLE = "aftercall-email"
SMS_DURABLE = "aftercall-sms"
TEXTS_DURABLE = "aftercall-texts"
# Turning an event into a text job only publishes one (deduplicated by its key): a short
# wait, so a dead replica's event is picked up at once.
_TEXTS_ACK_WAIT_S = 2.0
_TEXTS_MAX_DELIVER = 10
_APPOINTMENT_TYPE = b'"dealerline.event.appointment.v1"'


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"  # the key was sent already: nothing sent
    RETRY = "retry"  # failed, will be tried again
    DEAD = "dead"  # dead-lettered now, or found dead


class _Retry(Exception):
    """Makes the bus nak the job with the consumer's backoff."""


class Notifier:
    def __init__(
        self,
        settings: AftercallSettings,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        store: StateStore | None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.ledger = Ledger(sessions)
        self.texts = ConfirmationTexts(sessions, store)
        self.senders: dict[str, Sender] = {
            "email": EmailSender(settings),
            "sms": SmsSender(settings),
        }
        self.sent = metrics.counter(
            "aftercall_notifications_sent_total", "Emails and texts sent", ["channel"]
        )
        self.retried = metrics.counter(
            "aftercall_notifications_retried_total",
            "Send attempts that failed and will be tried again",
            ["channel"],
        )
        self.failed = metrics.counter(
            "aftercall_notifications_failed_total",
            "Emails and texts dead-lettered (last retry failed, refused, or not configured)",
            ["channel"],
        )
        self.duplicates = metrics.counter(
            "aftercall_notifications_duplicates_total",
            "Jobs whose key was sent already (redeliveries): nothing sent",
            ["channel"],
        )
        self._consumers: list[WorkConsumer] = []

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the two send queues and the appointment-event consumer (the bus must be
        connected and its streams ensured)."""
        for sender in self.senders.values():
            if sender.missing:
                log.error(
                    "notifier channel not configured: its jobs will be dead-lettered",
                    channel=sender.channel,
                    missing=sender.missing,
                )
        s = self.settings
        for subject, durable, channel in (
            (subjects.NOTIFY_EMAIL, EMAIL_DURABLE, "email"),
            (subjects.NOTIFY_SMS, SMS_DURABLE, "sms"),
        ):
            self._consumers.append(
                await self.bus.work(
                    subject,
                    stream=subjects.STREAM_NOTIFY,
                    durable=durable,
                    handler=self._job_handler(channel),
                    # Texts one at a time, in the order they were queued: "booked" and
                    # then "moved" must not reach the caller the other way round.
                    concurrency=s.notify_concurrency if channel == "email" else 1,
                    # Long on purpose: an SMTP or Twilio send cannot be taken back, so a
                    # send must not be cancelled by a short NATS blip (the lease is 3/4
                    # of this) and sent again by another replica; a notice a minute late
                    # after a crash is harmless.
                    ack_wait_s=max(30.0, s.smtp_timeout_s, s.twilio_timeout_s) * 2,
                    # One spare delivery: a process that dies during the last attempt
                    # leaves the job to be dead-lettered (or sent) by the next one.
                    max_deliver=s.notify_max_attempts + 1,
                    retry_delay_s=self.retry_delay_s,
                )
            )
        await self._create_texts_consumer()
        self._consumers.append(
            await self.bus.work(
                subjects.ALL_EVENTS,
                stream=subjects.STREAM_EVENTS,
                durable=TEXTS_DURABLE,
                handler=self._on_event,
                concurrency=1,
                ack_wait_s=_TEXTS_ACK_WAIT_S,
                max_deliver=_TEXTS_MAX_DELIVER,
            )
        )
        log.info("notifier started", max_attempts=s.notify_max_attempts)

    async def _create_texts_consumer(self) -> None:
        """Create the appointment-event consumer, the first time, from *new* events on:
        ``DL_EVENTS`` keeps a week of events, and a first start must not text every
        caller of the past week. (``Bus.work`` binds to a durable that exists.)"""
        try:
            await self.bus.js.consumer_info(subjects.STREAM_EVENTS, TEXTS_DURABLE)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = api.ConsumerConfig(
            durable_name=TEXTS_DURABLE,
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=_TEXTS_ACK_WAIT_S,
            max_deliver=_TEXTS_MAX_DELIVER,
            filter_subject=subjects.ALL_EVENTS,
            max_ack_pending=10_000,
        )
        with contextlib.suppress(nats.js.errors.BadRequestError):  # another replica won
            await self.bus.js.add_consumer(subjects.STREAM_EVENTS, config)

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop consuming (sends in flight get ``timeout_s``, default the service's drain
        timeout, then go back to the queue) and close the HTTP client."""
        deadline = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(c.stop(deadline) for c in consumers))
        for sender in self.senders.values():
            with contextlib.suppress(Exception):
                await sender.close()

    def retry_delay_s(self, attempt: int) -> float:
        """Exponential backoff: base, 2×base, 4×base … capped at ``notify_backoff_max_s``."""
        s = self.settings
        return float(min(s.notify_backoff_max_s, s.notify_backoff_base_s * 2 ** (attempt - 1)))

    async def enqueue(self, job: NotificationJob) -> None:
        """Put ``job`` on the work queue (its key is the ``Nats-Msg-Id``, so a repeat
        inside the stream's duplicate window is dropped before any worker sees it)."""
        subject = subjects.NOTIFY_EMAIL if job.channel == "email" else subjects.NOTIFY_SMS
        await self.bus.publish_durable(subject, job, msg_id=job.key)

    # ----------------------------------------------------------------- jobs

    def _job_handler(self, channel: str) -> Callable[[Msg], Awaitable[None]]:
        async def handle(msg: Msg) -> None:
            try:
                job = loads(NotificationJob, msg.data)
            except ValidationError as exc:
                raise Reject(f"not a notification job: {exc.errors()[:1]}") from exc
            if job.channel != channel:
                raise Reject(f"a {job.channel} job on the {channel} queue")
            attempt = msg.metadata.num_delivered if msg.metadata else 1
            if await self.deliver(job, attempt) is Outcome.RETRY:
                raise _Retry(job.key)

        return handle

    async def deliver(self, job: NotificationJob, attempt: int = 1) -> Outcome:
        """One attempt at ``job`` (``attempt`` counts from 1); see the module."""
        channel = job.channel
        sender = self.senders[channel]
        claim = await self.ledger.claim(job)
        if claim.status is DeliveryStatus.SENT:
            self.duplicates.labels(channel).inc()
            log.info("already sent", channel=channel, key=job.key, provider_id=claim.provider_id)
            return Outcome.DUPLICATE
        if claim.status is DeliveryStatus.DEAD:
            log.info("already dead-lettered", channel=channel, key=job.key)
            return Outcome.DEAD
        if sender.missing:
            return await self._dead(
                job, f"{channel} not configured: set " + ", ".join(sender.missing)
            )
        try:
            if claim.attempts > 0 and isinstance(sender, SmsSender):
                # An earlier attempt may have reached Twilio before its answer was lost.
                found = await sender.find_sent(job, claim.created_at)
                if found is not None:
                    await self.ledger.mark_sent(job.key, found)
                    self.duplicates.labels(channel).inc()
                    log.warning("text was sent by an earlier attempt", key=job.key, sid=found)
                    return Outcome.DUPLICATE
            await self.ledger.attempt(job.key)
            provider_id = await sender.send(job)
        except PermanentSendError as exc:
            return await self._dead(job, str(exc))
        except TransientSendError as exc:
            if attempt >= self.settings.notify_max_attempts:
                return await self._dead(job, f"gave up after {attempt} attempts: {exc}")
            await self.ledger.mark_failed(job.key, str(exc), dead=False)
            self.retried.labels(channel).inc()
            log.warning(
                "send failed, will retry",
                channel=channel,
                key=job.key,
                attempt=attempt,
                retry_in_s=self.retry_delay_s(attempt),
                error=str(exc),
            )
            return Outcome.RETRY
        await self.ledger.mark_sent(job.key, provider_id)
        self.sent.labels(channel).inc()
        log.info(
            "notification sent",
            channel=channel,
            key=job.key,
            to=_masked(job),
            provider_id=provider_id,
            attempt=attempt,
        )
        return Outcome.SENT

    async def _dead(self, job: NotificationJob, error: str) -> Outcome:
        await self.ledger.mark_failed(job.key, error, dead=True)
        self.failed.labels(job.channel).inc()
        log.error(
            "notification dead-lettered",
            channel=job.channel,
            key=job.key,
            to=_masked(job),
            error=error,
        )
        return Outcome.DEAD

    # ----------------------------------------------------------------- appointment events

    async def _on_event(self, msg: Msg) -> None:
        if _APPOINTMENT_TYPE not in msg.data:  # transcripts, latencies…: not ours, cheaply
            return
        try:
            event = parse_event(msg.data)
        except ValidationError as exc:
            raise Reject(f"bad appointment event: {exc.errors()[:1]}") from exc
        if not isinstance(event, AppointmentEvent):
            return
        age_s = time.time() - event.at
        if age_s > self.settings.text_max_age_s:
            log.warning(
                "appointment event too old for a text",
                session_id=event.session_id,
                appointment_id=event.appointment_id,
                age_s=round(age_s),
            )
            return
        job = await self.texts.job_for(event)
        if job is not None:
            await self.enqueue(job)


def _masked(job: NotificationJob) -> str:
    return mask_phone(job.to) if job.channel == "sms" else job.to.partition("@")[2]
