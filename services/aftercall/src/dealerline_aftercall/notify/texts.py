"""Confirmation texts: an ``AppointmentEvent`` (booked, moved, cancelled) becomes an SMS
job on the notify work queue.

The event names the appointment; the words come from the database (the dealership's name
and timezone, the service when the event lacks it) and the number from the caller ID the
conversation state kept, or else the customer's number on file. The job's key
``<session>:sms:<appointment>:<action>`` (also its ``Nats-Msg-Id``) makes a redelivered
event enqueue nothing new, and the ledger makes a redelivered job send nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from dealerline_common.db.models import Appointment, DealershipProfile
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import AppointmentEvent, NotificationJob
from dealerline_common.state_store import StateStore

log = get_logger(__name__)


def when(start: datetime) -> str:
    """``Tue Dec 1 at 9:00 AM`` (no leading zeros, as people write it)."""
    hour = start.hour % 12 or 12
    return f"{start:%a %b} {start.day} at {hour}:{start:%M} {start:%p}"


def confirmation_text(
    dealership: str, action: str, service: str | None, start: datetime | None
) -> str:
    """The text a caller gets after the agent booked, moved or cancelled ``service`` at
    ``start`` (already in the dealership's local time)."""
    what = f"your {service}" if service else "your service appointment"
    at = when(start) if start is not None else None
    if action == "booked":
        body = f"{what} is booked for {at}" if at else f"{what} is booked"
        return f"{dealership}: {body}. Reply or call us to change it."
    if action == "rescheduled":
        body = f"{what} has been moved to {at}" if at else f"{what} has been moved"
        return f"{dealership}: {body}. Reply or call us to change it."
    if action == "cancelled":
        body = f"{what} on {at} is cancelled" if at else f"{what} is cancelled"
        return f"{dealership}: {body}. Call us any time to book again."
    raise ValueError(f"unknown appointment action {action!r}")


def text_key(event: AppointmentEvent) -> str:
    return f"{event.session_id}:sms:{event.appointment_id}:{event.action}"


@dataclass(frozen=True)
class _Facts:
    dealership: str
    timezone: ZoneInfo
    service: str | None
    start: datetime | None  # UTC-aware
    customer_phone: str | None


class ConfirmationTexts:
    """Builds the SMS job of an appointment event (None when there is nobody to text)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], store: StateStore | None
    ) -> None:
        self.sessions = sessions
        self.store = store

    async def job_for(self, event: AppointmentEvent) -> NotificationJob | None:
        facts = await self._facts(event)
        phone = await self._caller_phone(event.session_id) or facts.customer_phone
        if not phone:
            log.warning(
                "no number for the confirmation text",
                session_id=event.session_id,
                appointment_id=event.appointment_id,
            )
            return None
        start = _parse_start(event.start) or facts.start
        local = start.astimezone(facts.timezone) if start is not None else None
        body = confirmation_text(
            facts.dealership, event.action, event.service or facts.service, local
        )
        log.info(
            "confirmation text",
            session_id=event.session_id,
            appointment_id=event.appointment_id,
            action=event.action,
            to=mask_phone(phone),
        )
        return NotificationJob(
            key=text_key(event), channel="sms", session_id=event.session_id, to=phone, body=body
        )

    async def _caller_phone(self, session_id: str) -> str | None:
        if self.store is None:
            return None
        try:
            state, _ = await self.store.get_state_with_version(session_id)
        except Exception as exc:  # the store is a help here, the DB a fallback
            log.warning("state store unavailable", session_id=session_id, error=repr(exc))
            return None
        return state.caller_phone if state is not None else None

    async def _facts(self, event: AppointmentEvent) -> _Facts:
        async with self.sessions() as session:
            profile = await session.scalar(
                select(DealershipProfile).order_by(DealershipProfile.id).limit(1)
            )
            appt = await session.scalar(
                select(Appointment)
                .where(Appointment.id == event.appointment_id)
                .options(selectinload(Appointment.customer), selectinload(Appointment.service_type))
            )
        if profile is None:
            raise LookupError("the dealership table is empty: no name for the text")
        try:
            tz = ZoneInfo(profile.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise LookupError(f"dealership timezone {profile.timezone!r} is unknown") from exc
        return _Facts(
            dealership=profile.name,
            timezone=tz,
            service=appt.service_type.name if appt is not None else None,
            start=appt.start_at if appt is not None else None,
            customer_phone=appt.customer.phone if appt is not None else None,
        )


def _parse_start(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        log.warning("appointment start is not ISO 8601", start=value)
        return None
    return start if start.tzinfo is not None else start.replace(tzinfo=UTC)
