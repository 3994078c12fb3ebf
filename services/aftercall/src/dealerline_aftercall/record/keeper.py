"""The record keeper: one durable record per call, from the bus and the state store.

- A durable JetStream consumer (``aftercall-record``, explicit ack) reads every call's
  events from ``DL_EVENTS`` and writes each into the database before acking it
  (:class:`~.repo.CallRepo`, idempotent), so a crash of this process, or of any other,
  loses nothing: what was acked is in the database, what was not comes back.
- ``call_ended`` schedules the finalize ``end_grace_s`` later (late events land first). A
  sweeper does the same for ended calls nobody finalized (this process restarted in
  between), closes calls silent for ``stale_after_s`` with no end as ``stream_lost``, and
  retries missing summaries.
- Finalize reads the state store for what the bus may lack (the caller's number, the
  customer, turns whose events were never published), decides the outcome, asks the LLM
  for a summary (the record is written without one if it fails), enqueues the service
  desk's email, writes the record once (``recorded_at`` under the row lock) and announces
  it with ``call_recorded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dealerline_common import subjects
from dealerline_common.bus import Bus, Reject, WorkConsumer
from dealerline_common.db.models import Call, CallOutcome
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import (
    CallEndedEvent,
    CallRecordedEvent,
    NotificationJob,
    parse_event,
)
from dealerline_common.metrics import Metrics
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore

from ..settings import AftercallSettings
from .draft import Draft
from .facts import (
    DESK_OUTCOMES,
    CallFacts,
    Turn,
    decide_outcome,
    desk_email,
    summary_request,
)
from .recovery import known_facts, turns_from_state
from .repo import CallRepo, Dealer, utc
from .summary import Summarizer

log = get_logger(__name__)

DURABLE = "aftercall-record"
DEFAULT_DEALER = Dealer("the dealership", "UTC", None)


def desk_email_key(session_id: str) -> str:
    return f"{session_id}:desk-email"


class RecordKeeper:
    def __init__(
        self,
        settings: AftercallSettings,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        store: StateStore,
        *,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.repo = CallRepo(sessions)
        self.store = store
        if summarizer is None and Summarizer.available(settings):
            summarizer = Summarizer(settings)
        self.summarizer = summarizer
        self.records_written = metrics.counter(
            "aftercall_records_written_total", "Call records written, by outcome", ["outcome"]
        )
        self.finalize_seconds = metrics.histogram(
            "aftercall_finalize_seconds",
            "End of the call to its record written",
            buckets=(0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0, 300.0, 1800.0, 7200.0),
        )
        self.summary_failures = metrics.counter(
            "aftercall_summary_failures_total", "Summary requests that failed (after retries)"
        )
        self.events_written = metrics.counter(
            "aftercall_record_events_total", "Events written into call records", ["type"]
        )
        self.consumer: WorkConsumer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._scheduled: set[str] = set()
        self._summary_next: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        self.consumer = await self.bus.work(
            subjects.ALL_EVENTS,
            stream=subjects.STREAM_EVENTS,
            durable=DURABLE,
            handler=self._on_event,
            concurrency=1,  # in order: a call's barge-in lands after its turn
            ack_wait_s=s.record_ack_wait_s,
            max_deliver=s.record_max_deliver,
            retry_delay_s=lambda attempt: min(30.0, 0.5 * 2**attempt),
        )
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="aftercall-sweeper")
        if self.summarizer is None:
            log.warning("no LLM endpoint configured: call records get no summary")

    async def stop(self) -> None:
        """Stop sweeping and finalizing (the consumer is stopped with the bus); work cut
        short here is picked up again by the next start's sweep."""
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None
        self._tasks.clear()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ events

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = parse_event(msg.data)
        except (ValidationError, ValueError) as exc:
            raise Reject(f"not an event: {exc}") from exc
        seq = msg.metadata.sequence.stream if msg.metadata else None
        await self.repo.apply(event, seq)
        self.events_written.labels(event.type.split(".")[2]).inc()
        if isinstance(event, CallEndedEvent):
            self.schedule(event.session_id)

    def schedule(self, session_id: str, delay_s: float | None = None) -> None:
        """Finalize ``session_id`` after the grace period (once, however often asked)."""
        if session_id in self._scheduled:
            return
        self._scheduled.add(session_id)
        wait = self.settings.end_grace_s if delay_s is None else delay_s

        async def later() -> None:
            try:
                await asyncio.sleep(wait)
                await self.finalize(session_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("finalize failed; the sweeper retries", session_id=session_id)
            finally:
                self._scheduled.discard(session_id)

        self._spawn(later(), f"finalize:{session_id}")

    # ------------------------------------------------------------------ sweeper

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("record sweep failed")
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def sweep_once(self) -> None:
        s = self.settings
        now = datetime.now(UTC)
        for sid in await self.repo.ended_unrecorded(now - timedelta(seconds=s.end_grace_s)):
            if sid not in self._scheduled:
                log.info("finalizing an ended call nobody recorded", session_id=sid)
                self.schedule(sid, 0.0)
        if await self._caught_up():
            for sid, last in await self.repo.open_calls():
                if (now - last).total_seconds() >= s.stale_after_s:
                    await self.close_stale(sid, last)
        if self.summarizer is not None:
            since = now - timedelta(seconds=s.summary_give_up_after_s)
            for sid in await self.repo.without_summary(since):
                if self._summary_next.get(sid, 0.0) <= time.monotonic():
                    self._summary_next[sid] = time.monotonic() + s.summary_retry_after_s
                    await self.retry_summary(sid)

    async def _caught_up(self) -> bool:
        """Whether every stored event has been written: a call looks silent while its
        later events still wait in the backlog (after downtime), so none is closed then."""
        if self.consumer is None:
            return False
        try:
            info = await self.consumer.psub.consumer_info()
        except Exception:
            return False
        return not info.num_pending

    async def close_stale(self, session_id: str, last: datetime) -> None:
        """A call that went silent with no end (its gateway died): closed at its last
        event, as ``stream_lost``, and announced so the dashboard stops showing it live."""
        ended = CallEndedEvent(session_id=session_id, reason="stream_lost", at=last.timestamp())
        await self.repo.apply(ended)
        log.warning("call went silent with no end: closing it", session_id=session_id)
        with contextlib.suppress(Exception):
            await self.bus.publish_durable(
                subjects.events(session_id), ended, msg_id=f"{session_id}:stale-ended"
            )
        self.schedule(session_id, 0.0)

    # ------------------------------------------------------------------ finalize

    async def finalize(self, session_id: str) -> bool:
        """Write the call's record; False if it was recorded already (by us before a
        restart, or by another replica)."""
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        try:
            async with lock:
                return await self._finalize(session_id)
        finally:
            if not lock.locked():
                self._locks.pop(session_id, None)

    async def _finalize(self, session_id: str) -> bool:
        loaded = await self._load_recovering(session_id)
        if loaded is None:
            return False
        call, state = loaded
        draft = await self._draft(session_id, call, state)
        dealer = await self.repo.dealer() or DEFAULT_DEALER
        draft.summary = await self._summary(
            session_id, dealer, draft.outcome, draft.customer_name, draft.facts
        )
        if draft.outcome in DESK_OUTCOMES:
            await self._enqueue_desk_email(session_id, dealer, **draft.desk_facts())
        if not await self.repo.complete(session_id, draft.write, draft.customer_id):
            return False
        self._recorded(session_id, draft)
        await self._announce(session_id, draft.outcome.value, draft.summary, draft.duration_s, "")
        return True

    async def _load_recovering(
        self, session_id: str
    ) -> tuple[Call, ConversationState | None] | None:
        """The call's row (None once recorded) and its state, with the turns only the
        state's history has added to the row first."""
        call = await self.repo.load(session_id)
        if call is None or call.recorded_at is not None:
            return None
        state = await self._state(session_id)
        if state is not None and state.messages:
            missing = turns_from_state(state.messages, call)
            if missing and await self.repo.add_turns(session_id, missing):
                log.info("turns recovered from the state store", session_id=session_id)
                call = await self.repo.load(session_id) or call
        return call, state

    async def _draft(self, session_id: str, call: Call, state: ConversationState | None) -> Draft:
        """Everything the record gets but its summary."""
        known = known_facts(call, state)
        callbacks = await self._callbacks(session_id, known.escalation)
        customer_name = known.customer_name or next(
            (c["customer_name"] for c in callbacks if c.get("customer_name")), None
        )
        facts = CallFacts(
            turns=[Turn(t.role, t.text, t.at, t.interrupted) for t in call.turns],
            appointments=known.appointments,
            escalation=known.escalation,
            callbacks=callbacks,
        )
        ended_at = call.ended_at or datetime.now(UTC)
        return Draft(
            facts=facts,
            outcome=decide_outcome(facts),
            customer_name=customer_name,
            caller_phone=known.caller_phone,
            customer_id=known.customer_id,
            started_at=call.started_at,
            ended_at=ended_at,
            end_reason=call.end_reason or "stream_lost",
            duration_s=round(max(0.0, (ended_at - call.started_at).total_seconds()), 1),
        )

    def _recorded(self, session_id: str, draft: Draft) -> None:
        self.records_written.labels(draft.outcome.value).inc()
        self.finalize_seconds.observe(
            max(0.0, (datetime.now(UTC) - draft.ended_at).total_seconds())
        )
        log.info(
            "call recorded",
            session_id=session_id,
            caller=mask_phone(draft.caller_phone),
            outcome=draft.outcome.value,
            end_reason=draft.end_reason,
            duration_s=draft.duration_s,
            turns=len(draft.facts.turns),
            summary=draft.summary is not None,
        )

    async def _state(self, session_id: str) -> ConversationState | None:
        try:
            state, _ = await self.store.get_state_with_version(session_id)
        except Exception:
            log.exception("state store unavailable; recording from the bus alone")
            return None
        return state

    async def _callbacks(
        self, session_id: str, escalation: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Callback requests from the events, and from the table the agent writes (its
        event may never have been published)."""
        found: dict[Any, dict[str, Any]] = {}
        for e in escalation:
            if e.get("kind") == "callback_requested":
                found[e.get("callback_id")] = e
        for row in await self.repo.callbacks(session_id):
            found.setdefault(
                row.id,
                {
                    "kind": "callback_requested",
                    "callback_id": row.id,
                    "preferred_window": row.preferred_window,
                    "reason": row.reason,
                    "customer_name": row.name,
                    "at": row.created_at.timestamp() if row.created_at else None,
                },
            )
        return list(found.values())

    async def _summary(
        self,
        session_id: str,
        dealer: Dealer,
        outcome: CallOutcome,
        customer_name: str | None,
        facts: CallFacts,
    ) -> str | None:
        if self.summarizer is None:
            return None
        text = summary_request(
            outcome=outcome,
            customer_name=customer_name,
            appointments=facts.appointments,
            callbacks=facts.callbacks,
            turns=facts.turns,
            timezone=dealer.timezone,
        )
        try:
            return await self.summarizer.summarize(dealer.name, text)
        except Exception as exc:
            self.summary_failures.inc()
            log.warning(
                "summary failed; the record is written without it",
                session_id=session_id,
                error=repr(exc),
            )
            self._summary_next[session_id] = time.monotonic() + self.settings.summary_retry_after_s
            return None

    async def retry_summary(self, session_id: str) -> bool:
        """Fill in the summary of a record written without one."""
        call = await self.repo.load(session_id)
        if call is None or call.summary is not None or call.recorded_at is None:
            return False
        dealer = await self.repo.dealer() or DEFAULT_DEALER
        escalation = list(call.escalation or [])
        facts = CallFacts(
            turns=[Turn(t.role, t.text, t.at, t.interrupted) for t in call.turns],
            appointments=list(call.appointments or []),
            escalation=escalation,
            callbacks=await self._callbacks(session_id, escalation),
        )
        outcome = CallOutcome(call.outcome) if call.outcome else decide_outcome(facts)
        summary = await self._summary(session_id, dealer, outcome, call.customer_name, facts)
        if summary is None or not await self.repo.fill_summary(session_id, summary):
            return False
        self._summary_next.pop(session_id, None)
        log.info("summary filled in later", session_id=session_id)
        await self._announce(session_id, outcome.value, summary, call.duration_s, ":summary")
        return True

    async def _enqueue_desk_email(self, session_id: str, dealer: Dealer, **facts: Any) -> None:
        to = self.settings.desk_email or dealer.service_desk_email
        if not to:
            log.warning("no service desk email address configured", session_id=session_id)
            return
        subject, body = desk_email(
            session_id=session_id,
            dealership=dealer.name,
            timezone=dealer.timezone,
            dashboard_url=self.settings.dashboard_url,
            **facts,
        )
        job = NotificationJob(
            key=desk_email_key(session_id),
            channel="email",
            session_id=session_id,
            to=to,
            subject=subject[:300],
            body=body,
        )
        # Before the record is marked written: a crash in between sends the job again on
        # the retry, and its key makes that a no-op (stream dedupe, then the notifier).
        await self.bus.publish_durable(subjects.NOTIFY_EMAIL, job, msg_id=job.key)
        log.info("service desk email enqueued", session_id=session_id, outcome=facts["outcome"])

    async def _announce(
        self,
        session_id: str,
        outcome: str,
        summary: str | None,
        duration_s: float | None,
        suffix: str,
    ) -> None:
        try:
            await self.bus.publish_durable(
                subjects.events(session_id),
                CallRecordedEvent(
                    session_id=session_id, outcome=outcome, summary=summary, duration_s=duration_s
                ),
                msg_id=f"{session_id}:call-recorded{suffix}",
            )
        except Exception:
            log.exception("call_recorded not published (the record is written)")


__all__ = ["DURABLE", "RecordKeeper", "desk_email_key", "utc"]
