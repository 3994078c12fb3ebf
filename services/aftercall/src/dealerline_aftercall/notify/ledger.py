"""The ``deliveries`` table as the notifier's ledger: one row per idempotency key.

A job is claimed before anything is sent (the row is inserted ``pending``, or the row a
previous delivery left is read), marked ``sent`` with the provider's id right after the
provider accepted it, and marked ``dead`` (the dead-letter record) when it can never be
sent. The unique ``key`` makes two claims of one key meet on one row, whichever process
and whichever delivery of the job they come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from dealerline_common.db.engine import SQLITE_IMMEDIATE
from dealerline_common.db.models import Delivery, DeliveryStatus
from dealerline_common.messages import NotificationJob

# What the ledger keeps instead of a secret job's body (a one-time code).
WITHHELD = "[withheld: one-time secret]"

_ERROR_MAX = 2000


@dataclass(frozen=True)
class Claim:
    """What the ledger says about a key at the start of one attempt."""

    status: DeliveryStatus
    attempts: int  # sends tried before this one
    created_at: datetime
    provider_id: str | None = None


class Ledger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def claim(self, job: NotificationJob) -> Claim:
        """The row of ``job.key``, inserted ``pending`` if there is none yet."""
        try:
            async with self.sessions() as session, session.begin():
                # SQLite: take the write lock first; a read-then-write transaction would
                # fail at once ("database is locked") when another claim got there first.
                await session.connection(execution_options={SQLITE_IMMEDIATE: True})
                row = await self._row(session, job.key)
                if row is None:
                    row = Delivery(
                        key=job.key,
                        channel=job.channel,
                        session_id=job.session_id,
                        recipient=job.to,
                        subject=job.subject,
                        body=WITHHELD if job.secret else job.body,
                        status=DeliveryStatus.PENDING.value,
                        attempts=0,
                    )
                    session.add(row)
                    await session.flush()
                return _claim(row)
        except IntegrityError:
            # Another consumer inserted the same key between our read and our insert.
            async with self.sessions() as session:
                row = await self._row(session, job.key)
                if row is None:  # pragma: no cover - the unique key guarantees it exists
                    raise
                return _claim(row)

    async def get(self, key: str) -> Delivery | None:
        async with self.sessions() as session:
            return await self._row(session, key)

    async def attempt(self, key: str) -> None:
        """Count a send about to be tried (``attempts`` > 0 later means one may have
        reached the provider even if the row says nothing about it)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.key == key, Delivery.status == DeliveryStatus.PENDING.value)
                .values(attempts=Delivery.attempts + 1)
            )

    async def mark_sent(self, key: str, provider_id: str) -> None:
        """Record the send; retried briefly, since a lost update here is the one way a
        later redelivery could send the same thing again."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(5), wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True
        ):
            with attempt:
                async with self.sessions() as session, session.begin():
                    await session.execute(
                        update(Delivery)
                        .where(Delivery.key == key)
                        .values(
                            status=DeliveryStatus.SENT.value,
                            provider_id=provider_id[:200],
                            sent_at=datetime.now(UTC),
                            last_error=None,
                        )
                    )

    async def mark_failed(self, key: str, error: str, *, dead: bool) -> None:
        """Keep the last error; ``dead`` makes the row the job's dead-letter record."""
        values: dict[str, object] = {"last_error": error[:_ERROR_MAX]}
        if dead:
            values["status"] = DeliveryStatus.DEAD.value
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.key == key, Delivery.status == DeliveryStatus.PENDING.value)
                .values(**values)
            )

    @staticmethod
    async def _row(session: AsyncSession, key: str) -> Delivery | None:
        row: Delivery | None = await session.scalar(select(Delivery).where(Delivery.key == key))
        return row


def _claim(row: Delivery) -> Claim:
    return Claim(
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
        provider_id=row.provider_id,
    )
