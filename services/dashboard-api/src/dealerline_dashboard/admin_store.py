"""A manager's changes to the dealership database, one transaction each, written at once
(the agent reads these tables on every call, so the next call uses them; nothing restarts).

Every change is audited in the log (``admin change``: who by staff id, what, which row and
the fields written; a phone number only masked). What the database would refuse is
answered first with a message a person can act on: a name or date taken already is a 409,
a row other rows still need (a bay or service with appointments, a staff member who closed
callback requests) is a 409 that says what to do instead, an unknown bay is a 422."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from dealerline_common.db.engine import writing
from dealerline_common.db.models import (
    Appointment,
    Base,
    DealershipProfile,
    FaqEntry,
    Holiday,
    OpeningHours,
    ServiceBay,
    ServiceType,
    service_type_bays,
)
from dealerline_common.logs import get_logger, mask_phone

log = get_logger(__name__)

AUDIT_TEXT_CHARS = 60  # long texts (an FAQ answer, the persona) are cut in the log

Check = Callable[[AsyncSession, Any], Awaitable[None]]


def not_found(what: str, row_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} with id {row_id}")


def conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail)


def invalid(detail: str) -> HTTPException:
    return HTTPException(422, detail)


def _logged(field: str, value: Any) -> Any:
    if field == "password_hash":
        return "(set)" if value else "(removed)"
    if value is None or isinstance(value, bool | int | float):
        return value
    if field == "phone" or field.endswith("_phone"):
        return mask_phone(str(value))
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= AUDIT_TEXT_CHARS else text[: AUDIT_TEXT_CHARS - 1] + "…"


def audit(
    by: int, action: str, entity: str, row_id: int | None, changes: Mapping[str, Any]
) -> None:
    """The audit line of one change (``by`` is the manager's staff id)."""
    log.info(
        "admin change",
        by=by,
        action=action,
        entity=entity,
        id=row_id,
        changes={k: _logged(k, v) for k, v in changes.items()},
    )


def apply(row: Base, values: Mapping[str, Any]) -> dict[str, Any]:
    """Write the values that differ into ``row``; those written."""
    changed = {}
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed[key] = value
    return changed


def required(values: Mapping[str, Any], *fields: str) -> None:
    """A PATCH may not clear a field the row cannot be without."""
    for field in fields:
        if field in values and values[field] is None:
            raise invalid(f"{field} cannot be empty")


@dataclass(frozen=True)
class Table:
    """One table the admin pages edit row by row: how rows are named in messages and
    which columns must be unique."""

    entity: str  # "holiday", in messages and the audit log
    model: type[Any]
    unique: tuple[str, ...]
    order_by: tuple[Any, ...]

    async def taken(
        self, session: AsyncSession, values: Mapping[str, Any], row_id: int | None
    ) -> None:
        """409 when another row already has one of the unique values."""
        for column in self.unique:
            if values.get(column) is None:
                continue
            attr = getattr(self.model, column)
            clause: ColumnElement[bool] = (
                func.lower(attr) == str(values[column]).lower()
                if isinstance(values[column], str)
                else attr == values[column]
            )
            other = (
                await session.execute(select(self.model.id).where(clause, self.model.id != row_id))
            ).scalar()
            if other is not None:
                raise conflict(
                    f"another {self.entity} (id {other}) already has the {column} "
                    f"{values[column]!s}; choose another or change that one"
                )


HOLIDAYS = Table("holiday", Holiday, ("date",), (Holiday.date,))
BAYS = Table("bay", ServiceBay, ("name",), (ServiceBay.id,))
SERVICES = Table("service", ServiceType, ("name",), (ServiceType.name,))
FAQ = Table("FAQ entry", FaqEntry, ("question",), (FaqEntry.id,))


async def appointments_of(session: AsyncSession, column: Any, row_id: int) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).select_from(Appointment).where(column == row_id)
            )
        ).scalar_one()
    )


class AdminStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction; what the database still refuses (a race with another
        change) is a 409, not a 500."""
        try:
            async with writing(self.sessions) as session:
                yield session
        except IntegrityError as exc:
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            log.info("admin change refused by the database", reason=reason)
            raise conflict(
                f"the database refused the change ({reason}); reload and try again"
            ) from None

    async def rows(self, table: Table) -> list[Any]:
        async with self.sessions() as session:
            return list(
                (await session.execute(select(table.model).order_by(*table.order_by))).scalars()
            )

    async def create(self, table: Table, values: dict[str, Any], by: int) -> Any:
        async with self.write() as session:
            await table.taken(session, values, None)
            row = table.model(**values)
            session.add(row)
            await session.flush()
        audit(by, "create", table.entity, row.id, values)
        return row

    async def update(
        self,
        table: Table,
        row_id: int,
        values: dict[str, Any],
        by: int,
        *,
        must: tuple[str, ...],
        check: Check | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Change the fields of ``values`` (``check`` may refuse first); the row and the
        fields that really changed."""
        required(values, *must)
        async with self.write() as session:
            row = await session.get(table.model, row_id, with_for_update=True)
            if row is None:
                raise not_found(table.entity, row_id)
            await table.taken(session, values, row_id)
            if check is not None:
                await check(session, row)
            changed = apply(row, values)
        if changed:
            audit(by, "update", table.entity, row_id, changed)
        return row, changed

    async def delete(self, table: Table, row_id: int, by: int, check: Check | None = None) -> None:
        async with self.write() as session:
            row = await session.get(table.model, row_id, with_for_update=True)
            if row is None:
                raise not_found(table.entity, row_id)
            if check is not None:
                await check(session, row)
            await session.execute(delete(table.model).where(table.model.id == row_id))
        audit(by, "delete", table.entity, row_id, {})

    # ------------------------------------------------------------------ profile

    async def profile(self) -> DealershipProfile | None:
        async with self.sessions() as session:
            return (
                await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))
            ).scalar()

    async def update_profile(self, values: dict[str, Any], by: int) -> DealershipProfile:
        """The one profile row changed (made, when the database has none yet: then it needs
        a name and a timezone)."""
        required(values, "name", "timezone", "assistant_name")
        async with self.write() as session:
            row = (
                await session.execute(
                    select(DealershipProfile).order_by(DealershipProfile.id).with_for_update()
                )
            ).scalar()
            if row is None:
                if not values.get("name") or not values.get("timezone"):
                    raise invalid("the dealership has no profile yet: give a name and a timezone")
                row = DealershipProfile(**values)
                session.add(row)
                changed = dict(values)
            else:
                changed = apply(row, values)
        if changed:
            audit(by, "update", "profile", row.id, changed)
        return row

    # ------------------------------------------------------------------ hours

    async def hours(self) -> dict[int, OpeningHours]:
        async with self.sessions() as session:
            rows = (await session.execute(select(OpeningHours))).scalars()
            return {r.weekday: r for r in rows}

    async def set_hours(self, weekday: int, values: dict[str, Any], by: int) -> OpeningHours:
        """One weekday's hours (a weekday without a row is closed; the row is made)."""
        async with self.write() as session:
            row = (
                await session.execute(
                    select(OpeningHours).where(OpeningHours.weekday == weekday).with_for_update()
                )
            ).scalar()
            if row is None:
                row = OpeningHours(weekday=weekday, **values)
                session.add(row)
                changed = dict(values)
            else:
                changed = apply(row, values)
        if changed:
            audit(by, "update", "hours", weekday, changed)
        return row

    # ------------------------------------------------------------------ bays

    async def delete_bay(self, bay_id: int, by: int) -> None:
        async def check(session: AsyncSession, bay: ServiceBay) -> None:
            booked = await appointments_of(session, Appointment.bay_id, bay_id)
            if booked:
                raise conflict(
                    f"{bay.name} has {booked} appointment(s) in its history and cannot be "
                    "deleted; rename it or leave it without services instead"
                )
            needing = (
                await session.execute(
                    select(ServiceType)
                    .join(service_type_bays)
                    .where(service_type_bays.c.bay_id == bay_id, ServiceType.active)
                    .options(selectinload(ServiceType.bays))
                )
            ).scalars()
            only_here = [s.name for s in needing if len(s.bays) == 1]
            if only_here:
                raise conflict(
                    f"{', '.join(only_here)} can only be done in {bay.name}; give "
                    "them another bay (or deactivate them) before deleting it"
                )

        await self.delete(BAYS, bay_id, by, check)

    # ------------------------------------------------------------------ services

    async def services(self) -> list[ServiceType]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(ServiceType)
                .options(selectinload(ServiceType.bays))
                .order_by(ServiceType.name, ServiceType.id)
            )
            return list(rows.scalars())

    async def _bays(self, session: AsyncSession, bay_ids: list[int]) -> list[ServiceBay]:
        wanted = list(dict.fromkeys(bay_ids))
        found = {
            b.id: b
            for b in (
                await session.execute(select(ServiceBay).where(ServiceBay.id.in_(wanted)))
            ).scalars()
        }
        unknown = [i for i in wanted if i not in found]
        if unknown:
            raise invalid(
                f"unknown bay id(s) {', '.join(map(str, unknown))}; add the bay first or "
                "choose one of the bays listed"
            )
        return [found[i] for i in wanted]

    async def save_service(
        self, service_id: int | None, values: dict[str, Any], by: int
    ) -> ServiceType:
        """Create (``service_id`` None) or change a service; its bays by id; the price
        range checked on the row as it will be."""
        if service_id is None and values.get("price_max_cents") is None:
            values["price_max_cents"] = values["price_min_cents"]  # one price, not a range
        required(values, "name", "duration_minutes", "price_min_cents", "price_max_cents", "active")
        bay_ids = values.pop("bay_ids", None)
        async with self.write() as session:
            await SERVICES.taken(session, values, service_id)
            bays = await self._bays(session, bay_ids) if bay_ids is not None else None
            if service_id is None:
                row = ServiceType(**values, bays=bays or [])
                session.add(row)
                changed = dict(values)
            else:
                row = await self._service(session, service_id)
                changed = apply(row, values)
                if bays is not None and [b.id for b in row.bays] != [b.id for b in bays]:
                    row.bays = bays
            if bays is not None:
                changed["bay_ids"] = [b.id for b in bays]
            low, high = row.price_min_cents, row.price_max_cents
            if high < low:
                raise invalid(f"price_max_cents ({high}) must be at least price_min_cents ({low})")
            await session.flush()
        if changed:
            audit(by, "create" if service_id is None else "update", "service", row.id, changed)
        return row

    async def _service(self, session: AsyncSession, service_id: int) -> ServiceType:
        row = (
            await session.execute(
                select(ServiceType)
                .where(ServiceType.id == service_id)
                .options(selectinload(ServiceType.bays))
                .with_for_update()
            )
        ).scalar()
        if row is None:
            raise not_found("service", service_id)
        return row

    async def delete_service(self, service_id: int, by: int) -> None:
        async def check(session: AsyncSession, service: ServiceType) -> None:
            booked = await appointments_of(session, Appointment.service_type_id, service_id)
            if booked:
                raise conflict(
                    f"{service.name} has {booked} appointment(s) in its history and cannot "
                    "be deleted; deactivate it instead (callers can then no longer book it)"
                )

        await self.delete(SERVICES, service_id, by, check)
