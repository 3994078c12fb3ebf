"""The aftercall service process: the record keeper and the notifier on one bus
connection, one database engine and one state store (see the package's parts).

Start: the bus and its streams (``BusService``), then the database and the state store,
then the record keeper (its durable consumer on ``DL_EVENTS`` and its sweeper) and the
notifier (its ``DL_NOTIFY`` work queues). Drain: both stop taking work, the bus finishes
the jobs in flight, then the engine and the store are closed. ``kill`` plays a crash:
nothing is acked that was not written, so the next process picks everything up again.
"""

from __future__ import annotations

import contextlib

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dealerline_common.db.engine import (
    create_engine_from_url,
    database_url_from_env,
    display_url,
    session_factory,
)
from dealerline_common.logs import get_logger
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health
from dealerline_common.service import BusService
from dealerline_common.state_store import StateStore, state_store_from_url

from .notify import Notifier
from .record import RecordKeeper
from .settings import AftercallSettings

log = get_logger(__name__)


class Service(BusService):
    name = "aftercall"

    def __init__(
        self,
        settings: AftercallSettings,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.ac_settings = settings
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.store: StateStore | None = None
        self.keeper: RecordKeeper | None = None
        self.notifier: Notifier | None = None

    async def on_start(self) -> None:
        s = self.ac_settings
        url = s.database_url or database_url_from_env()
        self.engine = create_engine_from_url(url)
        self.sessions = session_factory(self.engine)
        self.store = state_store_from_url(s.state_url, namespace=s.state_namespace)
        self.keeper = RecordKeeper(s, self.bus, self.sessions, self.metrics, self.store)
        await self.keeper.start()
        self.notifier = Notifier(s, self.bus, self.sessions, self.metrics, self.store)
        await self.notifier.start()
        log.info(
            "aftercall started",
            database=display_url(url),
            state="redis" if s.state_url else "memory",
            summaries=self.keeper.summarizer is not None,
        )

    async def on_drain(self) -> None:
        await self._stop_parts()

    async def drain(self) -> None:
        await super().drain()
        await self._close_stores()

    async def kill(self) -> None:
        await super().kill()
        await self._stop_parts()
        await self._close_stores()

    async def _stop_parts(self) -> None:
        if self.keeper is not None:
            await self.keeper.stop()
        if self.notifier is not None:
            await self.notifier.stop()

    async def _close_stores(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
            self.store = None
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
