"""Read-only lookups for the call: FAQ answers to a caller's question, and the staff on
duty to ring for a hand-off."""

from __future__ import annotations

from sqlalchemy import select

from dealerline_common.db.models import FaqEntry, Staff
from dealerline_common.messages import StaffContact

from .. import faq
from ..views import FaqHit
from .store import Store

__all__ = ["FaqAndStaff"]


class FaqAndStaff:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def search_faq(self, query: str, limit: int = 3) -> list[FaqHit]:
        """The best ``limit`` FAQ entries for ``query``, best first (may be empty)."""
        async with self.store.reading() as session:
            rows = (await session.execute(select(FaqEntry).order_by(FaqEntry.id))).scalars()
            docs = [faq.FaqDocument(r.id, r.question, r.answer, tuple(r.tags or ())) for r in rows]
        return [
            FaqHit(d.id, d.question, d.answer, score) for d, score in faq.rank(query, docs, limit)
        ]

    async def on_duty_staff(self) -> list[StaffContact]:
        """Who to ring for a human hand-off, in hunt order."""
        async with self.store.reading() as session:
            rows = (
                await session.execute(
                    select(Staff).where(Staff.on_duty).order_by(Staff.hunt_order, Staff.id)
                )
            ).scalars()
            return [
                StaffContact(name=r.name, phone=r.phone, role=r.role, staff_id=r.id) for r in rows
            ]
