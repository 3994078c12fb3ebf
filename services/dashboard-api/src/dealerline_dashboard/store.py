"""The dashboard's reads and writes of the dealership database: staff, the call log and
transcripts, today's appointments and callback requests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from dealerline_common.db.models import (
    Appointment,
    Call,
    CallbackRequest,
    CallbackStatus,
    DealershipProfile,
    Staff,
    TranscriptTurn,
)
from dealerline_common.logs import mask_phone

from .accounts import normalize_email
from .masking import mask_all


@dataclass(frozen=True)
class Viewer:
    """Who asks, as far as what they may see is concerned."""

    staff_id: int
    role: str
    full_numbers: bool
    own_phone: str | None = None  # theirs is never masked for them

    def mask(self, value: Any) -> Any:
        """``value`` (decoded JSON) as this viewer may see it: every number in every
        string masked (:func:`mask_all`) unless they see whole numbers."""
        if self.full_numbers:
            return value
        return mask_all(value, keep=(self.own_phone,) if self.own_phone else ())

    def phone(self, number: str | None, owner_id: int | None = None) -> str | None:
        if number is None:
            return None
        if self.full_numbers or (owner_id is not None and owner_id == self.staff_id):
            return number
        return mask_phone(number)


def epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def staff_json(staff: Staff, viewer: Viewer) -> dict[str, Any]:
    return {
        "id": staff.id,
        "name": staff.name,
        "role": staff.role,
        "email": staff.email,
        "on_duty": staff.on_duty,
        "hunt_order": staff.hunt_order,
        "phone": viewer.phone(staff.phone, staff.id),
    }


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Store:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], fallback_tz: str) -> None:
        self.sessions = sessions
        self.fallback_tz = fallback_tz

    # ------------------------------------------------------------------ dealership

    async def timezone(self) -> ZoneInfo:
        async with self.sessions() as session:
            name = (
                await session.execute(
                    select(DealershipProfile.timezone).order_by(DealershipProfile.id).limit(1)
                )
            ).scalar_one_or_none()
        try:
            return ZoneInfo(name or self.fallback_tz)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(self.fallback_tz)

    async def today_bounds(self) -> tuple[datetime, datetime, ZoneInfo]:
        """The dealership's today as [start, end) in UTC, and its zone."""
        tz = await self.timezone()
        today = datetime.now(tz).date()
        start = datetime.combine(today, time.min, tzinfo=tz)
        end = datetime.combine(today + timedelta(days=1), time.min, tzinfo=tz)
        return start.astimezone(UTC), end.astimezone(UTC), tz

    # ------------------------------------------------------------------ staff

    async def staff_by_id(self, staff_id: int) -> Staff | None:
        async with self.sessions() as session:
            return await session.get(Staff, staff_id)

    async def staff_by_email(self, email: str) -> Staff | None:
        async with self.sessions() as session:
            return (
                await session.execute(
                    select(Staff).where(func.lower(Staff.email) == normalize_email(email))
                )
            ).scalar_one_or_none()

    async def list_staff(self) -> list[Staff]:
        async with self.sessions() as session:
            rows = await session.execute(select(Staff).order_by(Staff.hunt_order, Staff.id))
            return list(rows.scalars())

    async def update_staff(
        self,
        staff_id: int,
        *,
        on_duty: bool | None = None,
        hunt_order: int | None = None,
        role: str | None = None,
    ) -> tuple[Staff, bool] | None:
        """Change a staff row; returns it and whether its duty changed (None: no such id)."""
        async with self.sessions() as session, session.begin():
            staff = await session.get(Staff, staff_id, with_for_update=True)
            if staff is None:
                return None
            duty_changed = on_duty is not None and on_duty != staff.on_duty
            if on_duty is not None:
                staff.on_duty = on_duty
            if hunt_order is not None:
                staff.hunt_order = hunt_order
            if role is not None:
                staff.role = role
        return staff, duty_changed

    # ------------------------------------------------------------------ calls

    def _search(self, q: str | None, outcome: str | None) -> Select[Call]:
        stmt = select(Call)
        if outcome:
            stmt = stmt.where(Call.outcome == outcome)
        if q and q.strip():
            text = q.strip()
            pattern = _like(text)
            clauses = [
                func.lower(Call.customer_name).like(pattern, escape="\\"),
                func.lower(Call.summary).like(pattern, escape="\\"),
                Call.session_id == text,
                Call.id.in_(
                    select(TranscriptTurn.call_id).where(
                        func.lower(TranscriptTurn.text).like(pattern, escape="\\")
                    )
                ),
            ]
            digits = re.sub(r"\D", "", text)
            if len(digits) >= 3:
                clauses.append(Call.caller_phone.like(f"%{digits}%"))
            stmt = stmt.where(or_(*clauses))
        return stmt

    async def search_calls(
        self, q: str | None, outcome: str | None, limit: int, offset: int
    ) -> tuple[list[Call], int]:
        stmt = self._search(q, outcome)
        async with self.sessions() as session:
            total = (
                await session.execute(select(func.count()).select_from(stmt.subquery()))
            ).scalar_one()
            rows = await session.execute(
                stmt.order_by(Call.started_at.desc(), Call.id.desc()).limit(limit).offset(offset)
            )
            return list(rows.scalars()), int(total)

    async def call(self, session_id: str) -> Call | None:
        async with self.sessions() as session:
            return (
                await session.execute(
                    select(Call)
                    .where(Call.session_id == session_id)
                    .options(selectinload(Call.turns))
                )
            ).scalar_one_or_none()

    # ------------------------------------------------------------------ appointments

    async def appointments_today(self) -> list[dict[str, Any]]:
        start, end, tz = await self.today_bounds()
        async with self.sessions() as session:
            rows = await session.execute(
                select(Appointment)
                .where(Appointment.start_at >= start, Appointment.start_at < end)
                .options(
                    selectinload(Appointment.customer),
                    selectinload(Appointment.vehicle),
                    selectinload(Appointment.service_type),
                    selectinload(Appointment.bay),
                )
                .order_by(Appointment.start_at, Appointment.id)
            )
            out = []
            for a in rows.scalars():
                vehicle = a.vehicle.describe() if a.vehicle else a.vehicle_description
                out.append(
                    {
                        "id": a.id,
                        "start": a.start_at.astimezone(tz).isoformat(),
                        "end": a.end_at.astimezone(tz).isoformat(),
                        "service": a.service_type.name,
                        "customer_name": a.customer.name,
                        "vehicle": vehicle,
                        "status": a.status.value,
                        "bay": a.bay.name,
                    }
                )
            return out

    # ------------------------------------------------------------------ callbacks

    async def callbacks(self, status: str | None) -> list[CallbackRequest]:
        stmt = select(CallbackRequest)
        if status:
            stmt = stmt.where(CallbackRequest.status == status)
        async with self.sessions() as session:
            rows = await session.execute(
                stmt.order_by(CallbackRequest.created_at.desc(), CallbackRequest.id.desc())
            )
            return list(rows.scalars())

    async def callback_done(self, callback_id: int, staff_id: int) -> CallbackRequest | None:
        """Mark done (idempotent: a callback done already keeps who and when)."""
        async with self.sessions() as session, session.begin():
            row = await session.get(CallbackRequest, callback_id, with_for_update=True)
            if row is None:
                return None
            if row.status != CallbackStatus.DONE.value:
                row.status = CallbackStatus.DONE.value
                row.done_at = datetime.now(UTC)
                row.done_by = staff_id
        return row

    async def staff_names(self, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        async with self.sessions() as session:
            rows = await session.execute(select(Staff.id, Staff.name).where(Staff.id.in_(ids)))
            return {row.id: row.name for row in rows}


def callback_json(row: CallbackRequest, viewer: Viewer, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "session_id": row.session_id,
        "name": row.name,
        "phone": viewer.phone(row.phone),
        "preferred_window": row.preferred_window,
        "reason": row.reason,
        "status": row.status,
        "created_at": epoch(row.created_at),
        "done_at": epoch(row.done_at),
        "done_by": row.done_by,
        "done_by_name": names.get(row.done_by) if row.done_by is not None else None,
    }


def call_summary_json(call: Call, viewer: Viewer) -> dict[str, Any]:
    return {
        "session_id": call.session_id,
        "caller": viewer.phone(call.caller_phone),
        "customer_name": call.customer_name,
        "started_at": epoch(call.started_at),
        "ended_at": epoch(call.ended_at),
        "duration_s": call.duration_s,
        "outcome": call.outcome,
        "summary": call.summary,
    }
