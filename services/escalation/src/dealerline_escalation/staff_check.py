"""Only staff are rung: every number is checked against the dealership database at dial
time.

An ``escalation.request`` (or a claim from the dashboard) names people with their numbers,
but anything that can publish on the bus could name any number and have the dealership's
Twilio account ring it (toll fraud, or a stranger connected to a customer). So the bus is
not trusted: before each call, :class:`StaffDirectory` looks the person up by staff id in
the database, and :func:`refusal` says why they may not be rung, if so: no staff id, no
such staff member, off duty, or a number that is not theirs. A refused person's attempt
fails at once (the next person is rung; with nobody left the escalation ends
``exhausted``), is logged with the number masked and counted in
``dealerline_escalation_dial_refusals_total{reason}``. When the database cannot be read,
nobody is rung (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dealerline_common.db import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_common.messages import StaffContact

from .hunt import e164

__all__ = ["DbStaffDirectory", "StaffDirectory", "StaffRecord", "refusal"]


@dataclass(frozen=True)
class StaffRecord:
    """One staff member as the database has them."""

    staff_id: int
    name: str
    phone: str
    on_duty: bool


class StaffDirectory(Protocol):
    async def lookup(self, staff_id: int) -> StaffRecord | None:
        """The staff member with this id, or None; raises when the database is unreachable."""
        ...

    async def close(self) -> None: ...


class DbStaffDirectory:
    """Staff looked up in the dealership database (PostgreSQL in production)."""

    def __init__(self, url: str) -> None:
        self._engine: AsyncEngine = create_engine_from_url(url, pool_pre_ping=True)
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(self._engine)

    async def lookup(self, staff_id: int) -> StaffRecord | None:
        async with self._sessions() as session:
            row = (
                await session.execute(select(Staff).where(Staff.id == staff_id))
            ).scalar_one_or_none()
            if row is None:
                return None
            return StaffRecord(row.id, row.name, row.phone, row.on_duty)

    async def close(self) -> None:
        await self._engine.dispose()


def refusal(person: StaffContact, record: StaffRecord | None) -> str | None:
    """Why ``person`` may not be rung (a metric label), or None when they may."""
    if person.staff_id is None:
        return "no_staff_id"
    if record is None:
        return "unknown_staff"
    if not record.on_duty:
        return "off_duty"
    number = e164(person.phone)
    if number is None or number != e164(record.phone):
        return "not_their_number"
    return None
