"""The call record in the dealership database: each event written as it arrives.

Every write is idempotent, so a redelivered event changes nothing: transcript lines are
keyed by ``(call, turn_id, role)`` (the table's unique constraint), the JSON lists
(latency, escalation timeline, appointments) by the natural key of their entries (see
:mod:`.entries`), and the first ``call_ended`` wins. ``recorded_at`` is set once, under
the row's lock, by the one finalize that wins (:meth:`CallRepo.complete`).

One write transaction per event (``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE``
on PostgreSQL), so replicas of the service never interleave updates of one row.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from dealerline_common.db.engine import writing
from dealerline_common.db.models import (
    Call,
    CallbackRequest,
    Customer,
    DealershipProfile,
    TranscriptTurn,
)
from dealerline_common.messages import (
    AppointmentEvent,
    CallbackRequestedEvent,
    CallEndedEvent,
    CallStartedEvent,
    EventMessage,
    HumanStatusEvent,
    LatencyEvent,
    StateUpdateEvent,
    TranscriptEvent,
)

from .entries import (
    add_entry,
    appointment_entry,
    appointment_from_state,
    callback_entry,
    escalation_key,
    human_status_entry,
    latency_entry,
    latency_key,
    merge_appointment,
)
from .facts import end_reason

ROLES = {"user": "caller", "assistant": "agent"}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True)
class Dealer:
    name: str
    timezone: str
    service_desk_email: str | None


@dataclass(frozen=True)
class NewTurn:
    role: str
    text: str
    at: datetime
    turn_id: str
    interrupted: bool = False


class CallRepo:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    def _writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a write transaction (``dealerline_common.db.engine.writing``)."""
        return writing(self.sessions)

    async def _row(self, session: AsyncSession, session_id: str, at: datetime) -> Call:
        """The session's call row, locked for this transaction; created if absent."""
        query = select(Call).where(Call.session_id == session_id).with_for_update()
        row = (await session.execute(query)).scalar()
        if row is None:
            row = Call(session_id=session_id, started_at=at, latency=[], escalation=[])
            row.appointments = []
            session.add(row)
            await session.flush()
        return row

    # ------------------------------------------------------------------ events

    async def apply(self, event: EventMessage, seq: int | None = None) -> None:
        """Write one event into its call's record (idempotent)."""
        try:
            await self._apply(event, seq)
        except IntegrityError:
            # Another replica created the row (or the turn) first: the retry sees it.
            await self._apply(event, seq)

    async def _apply(self, event: EventMessage, seq: int | None) -> None:
        at = utc(event.at)
        async with self._writing() as session:
            row = await self._row(session, event.session_id, at)
            if isinstance(event, CallStartedEvent):
                row.started_at = at
                row.call_sid = event.call_sid
            elif at < row.started_at and row.call_sid is None:
                row.started_at = at  # no call_started yet: the earliest event so far
            if isinstance(event, TranscriptEvent):
                turn_id = event.turn_id or f"seq-{seq}"
                await self._transcript(session, row, event, turn_id, at)
            elif isinstance(event, StateUpdateEvent):
                await self._state(session, row, event.state, event.at)
            else:
                _keep_fact(row, event, at)

    async def _transcript(
        self, session: AsyncSession, row: Call, event: TranscriptEvent, turn_id: str, at: datetime
    ) -> None:
        role = ROLES[event.role]
        existing = (
            await session.execute(
                select(TranscriptTurn).where(
                    TranscriptTurn.call_id == row.id,
                    TranscriptTurn.turn_id == turn_id,
                    TranscriptTurn.role == role,
                )
            )
        ).scalar()
        if existing is None:
            session.add(
                TranscriptTurn(
                    call_id=row.id,
                    role=role,
                    text=event.text,
                    at=at,
                    turn_id=turn_id,
                    interrupted=event.interrupted,
                )
            )
        elif event.interrupted and not existing.interrupted:
            # A barge-in: the caller heard only this part of the turn.
            existing.text = event.text
            existing.interrupted = True

    async def _state(
        self, session: AsyncSession, row: Call, state: dict[str, Any], at: float
    ) -> None:
        customer = state.get("customer") or {}
        if isinstance(customer, dict):
            if customer.get("name"):
                row.customer_name = str(customer["name"])[:200]
            if isinstance(customer.get("id"), int):
                await self.set_customer(session, row, customer["id"])
        appointment = state.get("confirmed_appointment")
        if isinstance(appointment, dict):
            row.appointments = merge_appointment(
                row.appointments, appointment_from_state(appointment, at)
            )

    @staticmethod
    async def set_customer(session: AsyncSession, row: Call, customer_id: int) -> None:
        if row.customer_id == customer_id:
            return
        customer = await session.get(Customer, customer_id)
        if customer is not None:  # a state naming a deleted customer must not break the FK
            row.customer_id = customer_id

    # ------------------------------------------------------------------ reads

    async def load(self, session_id: str) -> Call | None:
        async with self.sessions() as session:
            return (
                await session.execute(
                    select(Call)
                    .where(Call.session_id == session_id)
                    .options(selectinload(Call.turns))
                )
            ).scalar()

    async def callbacks(self, session_id: str) -> list[CallbackRequest]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(CallbackRequest)
                .where(CallbackRequest.session_id == session_id)
                .order_by(CallbackRequest.id)
            )
            return list(rows.scalars())

    async def dealer(self) -> Dealer | None:
        async with self.sessions() as session:
            row = (
                await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))
            ).scalar()
            if row is None:
                return None
            return Dealer(row.name, row.timezone, row.service_desk_email)

    async def ended_unrecorded(self, before: datetime) -> list[str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(Call.session_id).where(
                    Call.recorded_at.is_(None), Call.ended_at.is_not(None), Call.ended_at <= before
                )
            )
            return list(rows.scalars())

    async def open_calls(self) -> list[tuple[str, datetime]]:
        """Calls with no end: each with the time of its last event."""
        async with self.sessions() as session:
            calls = (
                await session.execute(
                    select(Call).where(Call.recorded_at.is_(None), Call.ended_at.is_(None))
                )
            ).scalars()
            out = []
            for call in calls:
                last_turn = (
                    await session.execute(
                        select(func.max(TranscriptTurn.at)).where(TranscriptTurn.call_id == call.id)
                    )
                ).scalar()
                stamps = [call.started_at] + ([last_turn] if last_turn else [])
                for entries in (call.latency, call.escalation, call.appointments):
                    stamps += [utc(e["at"]) for e in entries or [] if e.get("at")]
                out.append((call.session_id, max(stamps)))
            return out

    async def without_summary(self, since: datetime) -> list[str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(Call.session_id).where(
                    Call.recorded_at.is_not(None), Call.recorded_at >= since, Call.summary.is_(None)
                )
            )
            return list(rows.scalars())

    # ------------------------------------------------------------------ finalize

    async def add_turns(self, session_id: str, turns: list[NewTurn]) -> int:
        """Transcript lines only the state store still had (their events were never
        published: the process died first); those already there are skipped."""
        added = 0
        async with self._writing() as session:
            row = await self._row(session, session_id, turns[0].at if turns else datetime.now(UTC))
            for t in turns:
                exists = (
                    await session.execute(
                        select(TranscriptTurn.id).where(
                            TranscriptTurn.call_id == row.id,
                            TranscriptTurn.turn_id == t.turn_id,
                            TranscriptTurn.role == t.role,
                        )
                    )
                ).scalar()
                if exists is None:
                    session.add(
                        TranscriptTurn(
                            call_id=row.id,
                            role=t.role,
                            text=t.text,
                            at=t.at,
                            turn_id=t.turn_id,
                            interrupted=t.interrupted,
                        )
                    )
                    added += 1
        return added

    async def complete(
        self, session_id: str, write: Callable[[Call], None], customer_id: int | None
    ) -> bool:
        """Apply the finalize's ``write`` and set ``recorded_at``, unless another finalize
        got there first (False). This is what makes one record per call."""
        async with self._writing() as session:
            row = (
                await session.execute(
                    select(Call).where(Call.session_id == session_id).with_for_update()
                )
            ).scalar()
            if row is None or row.recorded_at is not None:
                return False
            write(row)
            if customer_id is not None:
                await self.set_customer(session, row, customer_id)
            row.recorded_at = datetime.now(UTC)
            return True

    async def fill_summary(self, session_id: str, summary: str) -> bool:
        async with self._writing() as session:
            row = (
                await session.execute(
                    select(Call).where(Call.session_id == session_id).with_for_update()
                )
            ).scalar()
            if row is None or row.summary is not None:
                return False
            row.summary = summary
            return True


# --------------------------------------------------------------------------- facts


def _keep_fact(row: Call, event: EventMessage, at: datetime) -> None:
    """Keep what an event (but a transcript line or a state update) adds to its row."""
    if isinstance(event, HumanStatusEvent):
        entry, key = human_status_entry(event)
        row.escalation = add_entry(row.escalation, entry, key, escalation_key)
    elif isinstance(event, CallbackRequestedEvent):
        entry, key = callback_entry(event)
        row.escalation = add_entry(row.escalation, entry, key, escalation_key)
        row.customer_name = row.customer_name or event.customer_name
    elif isinstance(event, AppointmentEvent):
        row.appointments = merge_appointment(row.appointments, appointment_entry(event))
        row.customer_name = row.customer_name or event.customer_name
    elif isinstance(event, LatencyEvent):
        row.latency = add_entry(row.latency, latency_entry(event), event.turn_id, latency_key)
    elif isinstance(event, CallEndedEvent) and row.ended_at is None:
        row.ended_at = at
        row.end_reason = end_reason(event.reason)
    # StreamStartedEvent: the row exists now; nothing else to keep
