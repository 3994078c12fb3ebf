"""The database handle every part of the repository shares: the session factory, the
clock, and write transactions.

Every read opens its own short session, so one repository serves every call the agent
handles at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dealerline_common.db.engine import writing

__all__ = ["Store", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Store:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.session_factory = session_factory
        self.clock = clock

    def now(self) -> datetime:
        """The clock's time in UTC (the clock must return an aware datetime)."""
        now = self.clock()
        if now.tzinfo is None:
            raise RuntimeError("the dealership clock must return an aware datetime")
        return now.astimezone(UTC)

    def reading(self) -> AsyncSession:
        """A short session for reads (use as ``async with``)."""
        return self.session_factory()

    def writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a write transaction (``dealerline_common.db.engine.writing``)."""
        return writing(self.session_factory)

    async def close(self) -> None:
        """Dispose of the engine behind the session factory (closes pooled connections)."""
        bind = self.session_factory.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            await bind.dispose()
