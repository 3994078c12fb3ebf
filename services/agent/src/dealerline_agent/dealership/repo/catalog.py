"""The services the dealership offers: listing them and finding one by what the caller
called it."""

from __future__ import annotations

import difflib

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from dealerline_common.db.models import ServiceType

from .. import faq
from ..views import ServiceInfo
from .errors import InvalidInput, NotFound
from .store import Store

__all__ = ["Catalog", "service_info"]


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def services(self) -> list[ServiceInfo]:
        """Active services, by name."""
        async with self.store.reading() as session:
            rows = (
                await session.execute(
                    select(ServiceType)
                    .where(ServiceType.active)
                    .options(selectinload(ServiceType.bays))
                    .order_by(ServiceType.name)
                )
            ).scalars()
            return [service_info(r) for r in rows]

    async def resolve(self, service: str | ServiceInfo) -> ServiceInfo:
        """``service`` itself when it is a ServiceInfo, else :meth:`find_service`."""
        return service if isinstance(service, ServiceInfo) else await self.find_service(service)

    async def find_service(self, name: str) -> ServiceInfo:
        """The active service called ``name``: exact (any case), else the one service whose
        name contains it or that it closely resembles; NotFound names the choices."""
        wanted = " ".join((name or "").lower().split())
        if not wanted:
            raise InvalidInput("no service named; ask which service the caller needs")
        services = await self.services()
        by_name = {s.name.lower(): s for s in services}
        if wanted in by_name:
            return by_name[wanted]
        partial = [s for s in services if wanted in s.name.lower() or s.name.lower() in wanted]
        if len(partial) == 1:
            return partial[0]
        wanted_words = set(faq.tokens(wanted))
        overlapping = [s for s in services if wanted_words & set(faq.tokens(s.name))]
        close = difflib.get_close_matches(wanted, list(by_name), n=3, cutoff=0.75)
        if len(close) == 1 and not partial:
            return by_name[close[0]]
        if len(overlapping) == 1 and not partial:
            return overlapping[0]
        choices = partial or overlapping or [by_name[c] for c in close]
        if choices:
            names = ", ".join(s.name for s in choices)
            raise NotFound(f"'{name}' could mean several services: {names}; ask which one")
        names = ", ".join(s.name for s in services)
        raise NotFound(f"no service called '{name}'; the services are: {names}")


def service_info(row: ServiceType) -> ServiceInfo:
    """A service row (its bays loaded) as plain data."""
    return ServiceInfo(
        id=row.id,
        name=row.name,
        description=row.description,
        duration_minutes=row.duration_minutes,
        price_min_cents=row.price_min_cents,
        price_max_cents=row.price_max_cents,
        bays=tuple(b.name for b in row.bays),
    )
