"""Callback requests: the open requests the sales team works from, one per request even
when the request is repeated."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dealerline_common.db.models import CallbackRequest, CallbackStatus
from dealerline_common.logs import get_logger

from ..views import CallbackRequestInfo
from .cleaning import clean_phone
from .errors import InvalidInput
from .store import Store

__all__ = ["Callbacks"]

log = get_logger(__name__)


class Callbacks:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def request_callback(
        self,
        session_id: str,
        *,
        preferred_window: str,
        reason: str,
        customer_id: int | None = None,
        name: str | None = None,
        phone: str | None = None,
        idempotency_key: str | None = None,
    ) -> CallbackRequestInfo:
        """Write an open callback request for the sales team.

        ``preferred_window`` is when the caller wants the call, in their words ("tomorrow
        morning"). With ``idempotency_key``, a repeated request (a replayed turn) returns
        the row the first one wrote (``created=False``), even when two copies race (the
        unique constraint decides).
        """
        row = _new_request(session_id, preferred_window, reason, customer_id, name, phone)
        row.idempotency_key = idempotency_key
        if idempotency_key:
            existing = await self._by_key(idempotency_key)
            if existing is not None:
                return existing
        try:
            async with self.store.writing() as session:
                session.add(row)
                await session.flush()
                info = _callback_info(row, created=True)
        except IntegrityError:
            if idempotency_key:
                twin = await self._by_key(idempotency_key)
                if twin is not None:
                    return twin
            raise
        log.info("callback requested", callback_id=info.id, session_id=session_id)
        return info

    async def _by_key(self, key: str) -> CallbackRequestInfo | None:
        async with self.store.reading() as session:
            row = (
                await session.execute(
                    select(CallbackRequest).where(CallbackRequest.idempotency_key == key)
                )
            ).scalar()
            return None if row is None else _callback_info(row, created=False)


def _new_request(
    session_id: str,
    preferred_window: str,
    reason: str,
    customer_id: int | None,
    name: str | None,
    phone: str | None,
) -> CallbackRequest:
    """An open request row from what the caller said, checked and tidied."""
    window = " ".join((preferred_window or "").split())
    if not window:
        raise InvalidInput("when to call back is missing; ask the caller when suits them")
    if len(window) > 200:
        raise InvalidInput("that callback time is too long; ask for a shorter one")
    about = " ".join((reason or "").split())
    if not about:
        raise InvalidInput("what the callback is about is missing; ask the caller")
    return CallbackRequest(
        session_id=session_id,
        customer_id=customer_id,
        name=" ".join((name or "").split())[:200] or None,
        phone=clean_phone(phone),
        preferred_window=window,
        reason=about,
        status=CallbackStatus.OPEN.value,
    )


def _callback_info(row: CallbackRequest, *, created: bool) -> CallbackRequestInfo:
    return CallbackRequestInfo(
        id=row.id,
        session_id=row.session_id,
        preferred_window=row.preferred_window,
        reason=row.reason,
        name=row.name,
        phone=row.phone,
        created=created,
    )
