"""The dealership's own data in and out: one YAML file or a folder of CSV files
(docs/dealership-data.md).

- :func:`import_dealership` makes the database match the file: it adds, updates (rows are
  matched by their natural key: weekday, holiday date, bay name, service name, staff phone
  or else email, FAQ question) and, with ``remove=True``, removes the rows of those tables
  that the file does not list. The file is validated as a whole first, and everything is
  written in one transaction, so a refused file changes nothing.
- :func:`export_dealership` writes the same format (YAML when the path ends ``.yaml`` or
  ``.yml``, else a CSV folder); export → import into an empty database → export gives the
  same bytes.

Removal never deletes operational data: customers, vehicles, appointments, calls and
callback requests are never removed. A service that appointments name is kept, inactive; a
bay that appointments name is refused (the error says which and how many); a staff member
who closed callback requests is kept, off duty and without a dashboard login (as the
dashboard's admin pages do), so the requests still say who closed them.
A section (YAML) or file (CSV) that is absent leaves its table untouched; an empty one
empties it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from .dealership_csv import read_csv_folder, write_csv_folder
from .engine import create_engine_from_url, session_factory
from .models import (
    Appointment,
    CallbackRequest,
    DealershipProfile,
    FaqEntry,
    Holiday,
    OpeningHours,
    ServiceBay,
    ServiceType,
    Staff,
)
from .seed import apply_file, dealership_today, in_one_transaction
from .seed_file import WEEKDAY_NAMES, SeedError, SeedFile, load_seed_file
from .seed_report import SeedReport
from .seed_tables import match_staff

__all__ = [
    "DealershipDataError",
    "Report",
    "export_dealership",
    "import_dealership",
    "load_dealership",
]

DealershipDataError = SeedError
"""A file that cannot be read, validated or applied; the message names the file, the row
(line) and the column or field."""

Report = SeedReport
"""Rows added, updated, unchanged and removed per table (``report["staff"].removed``),
plus ``notes`` (``report.lines()`` prints it all)."""

YAML_SUFFIXES = (".yaml", ".yml")


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in YAML_SUFFIXES


def load_dealership(path: str | Path) -> SeedFile:
    """Read and validate a YAML file or a CSV folder (nothing is written)."""
    path = Path(path)
    if _is_yaml(path):
        return load_seed_file(path)
    if path.is_dir():
        return read_csv_folder(path)
    if not path.exists():
        raise DealershipDataError(f"{path} does not exist")
    raise DealershipDataError(
        f"{path}: give a .yaml/.yml file or a folder of CSV files (profile.csv, hours.csv, ...)"
    )


# ----------------------------------------------------------------------------- import


async def import_dealership(
    database_url: str,
    path: str | Path,
    *,
    remove: bool = True,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Make the (migrated) database at ``database_url`` hold the dealership in ``path``.

    ``remove``: also delete the rows of the file's tables that the file does not list
    (see the module docs for what is never deleted). ``today`` (default: today in the
    dealership's timezone) expands yearly holiday rules (this year and next) and places
    a YAML file's ``appointments``.
    """
    spec = load_dealership(path)
    say = progress or (lambda _line: None)
    tz, today = dealership_today(spec, today)
    report = Report()

    async def work(session: AsyncSession) -> None:
        if remove:
            await _remove_absent(session, spec, today, report)
        await apply_file(session, spec, today, tz, report, say)

    try:
        await in_one_transaction(database_url, work)
    except IntegrityError as exc:
        raise DealershipDataError(
            f"{Path(path).name}: the database refused the data ({exc.orig}); nothing was changed"
        ) from None
    return report


def _given(spec: SeedFile, section: str) -> bool:
    """Whether the file has ``section`` (absent: the table is left as it is)."""
    return section in spec.model_fields_set


async def _remove_absent(
    session: AsyncSession, spec: SeedFile, today: date, report: Report
) -> None:
    """Delete the rows the file no longer lists; refuse (before writing anything) what
    cannot go."""
    bays: list[ServiceBay] = []
    if _given(spec, "bays"):
        names = {b.name for b in spec.bays}
        bays = [
            b for b in (await session.execute(select(ServiceBay))).scalars() if b.name not in names
        ]
        await _refuse_booked_bays(session, bays)
    if _given(spec, "holidays"):
        dates = {d for h in spec.holidays for d in h.dates((today.year, today.year + 1))}
        holidays = (await session.execute(select(Holiday))).scalars()
        await _delete(session, Holiday, [r.id for r in holidays if r.date not in dates], report)
    if _given(spec, "service_types"):
        await _remove_services(session, {s.name for s in spec.service_types}, report)
    await _delete(session, ServiceBay, [b.id for b in bays], report)
    if _given(spec, "staff"):
        await _remove_staff(session, spec, report)
    if _given(spec, "faq"):
        questions = {f.question for f in spec.faq}
        faq = (await session.execute(select(FaqEntry))).scalars()
        await _delete(session, FaqEntry, [r.id for r in faq if r.question not in questions], report)
    # Deleted rows may still sit in loaded collections (a service's bays): read afresh.
    await session.flush()
    session.expire_all()


async def _delete(session: AsyncSession, model: Any, ids: list[int], report: Report) -> None:
    """Delete ``model``'s rows ``ids`` (link rows go with them: ON DELETE CASCADE)."""
    if ids:
        await session.execute(
            delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
        )
        report[model.__tablename__].removed += len(ids)


async def _appointment_counts(session: AsyncSession, column: Any) -> dict[int, int]:
    rows = await session.execute(select(column, func.count()).group_by(column))
    return {key: count for key, count in rows.all()}


async def _refuse_booked_bays(session: AsyncSession, bays: list[ServiceBay]) -> None:
    counts = await _appointment_counts(session, Appointment.bay_id)
    booked = [f"{b.name!r} ({counts[b.id]} appointments)" for b in bays if counts.get(b.id)]
    if booked:
        raise DealershipDataError(
            f"cannot remove bay(s) {', '.join(booked)}: appointments are booked in them. Keep "
            "the bay in the file with no service naming it (nothing new is booked there), "
            "or cancel/move those appointments first; nothing was changed"
        )


async def _remove_services(session: AsyncSession, names: set[str], report: Report) -> None:
    counts = await _appointment_counts(session, Appointment.service_type_id)
    gone = []
    for row in (await session.execute(select(ServiceType).order_by(ServiceType.id))).scalars():
        if row.name in names:
            continue
        if not counts.get(row.id):
            gone.append(row.id)
            continue
        report.notes.append(
            f"service {row.name!r} is kept, inactive: {counts[row.id]} appointments name it"
        )
        if row.active:
            row.active = False
            report["service_types"].updated += 1
    await _delete(session, ServiceType, gone, report)


async def _remove_staff(session: AsyncSession, spec: SeedFile, report: Report) -> None:
    """Staff the file no longer lists are deleted, except a person who closed callback
    requests (deleting them would erase who did, as the dashboard's admin pages refuse too):
    they are kept, off duty and without a dashboard login, and the report says so."""
    rows = list((await session.execute(select(Staff).order_by(Staff.id))).scalars())
    kept = {id(r) for r in match_staff(spec, rows) if r is not None}
    absent = [r for r in rows if id(r) not in kept]
    if not absent:
        return
    closed = dict(
        (
            await session.execute(
                select(CallbackRequest.done_by, func.count())
                .where(CallbackRequest.done_by.in_([r.id for r in absent]))
                .group_by(CallbackRequest.done_by)
            )
        ).all()
    )
    gone = []
    for row in absent:
        if not closed.get(row.id):
            gone.append(row.id)
            continue
        report.notes.append(
            f"staff member {row.name!r} is kept, off duty and without a login: they closed "
            f"{closed[row.id]} callback request(s)"
        )
        if row.on_duty or row.password_hash is not None:
            row.on_duty = False
            row.password_hash = None
            report["staff"].updated += 1
    await _delete(session, Staff, gone, report)


# ----------------------------------------------------------------------------- export


def _money(cents: int) -> int | float:
    return cents // 100 if cents % 100 == 0 else cents / 100


def _hhmm(value: Any) -> str:
    return f"{value:%H:%M}"


class _Flow(dict[str, Any]):
    """A mapping written on one line (``{name: Express Bay, capacity: 2}``)."""


class _FlowList(list[Any]):
    """A list written on one line (``[Express Bay, General Repair Bay]``)."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # list items indented under their key


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)
_Dumper.add_representer(str, _str)
_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _profile(row: DealershipProfile) -> dict[str, Any]:
    keys = ("name", "timezone", "address", "phone", "service_desk_email")
    out = {k: getattr(row, k) for k in keys if getattr(row, k) is not None}
    out["assistant_name"] = row.assistant_name
    out |= {k: getattr(row, k) for k in ("persona", "voice") if getattr(row, k) is not None}
    return out


async def _export_data(session: AsyncSession) -> dict[str, Any]:
    """The database as the YAML file says it (plain values; see :func:`_dump_yaml`)."""
    profile = (
        await session.execute(select(DealershipProfile).order_by(DealershipProfile.id))
    ).scalar()
    if profile is None:
        raise DealershipDataError(
            "the database has no dealership profile to export (import one first)"
        )
    hours = {r.weekday: r for r in (await session.execute(select(OpeningHours))).scalars()}

    def day(weekday: int) -> Any:
        r = hours.get(weekday)
        if r is None or r.closed or r.opens_at is None or r.closes_at is None:
            return "closed"
        return _Flow(open=_hhmm(r.opens_at), close=_hhmm(r.closes_at))

    def all_of(model: Any, *order: Any) -> Any:
        return session.execute(select(model).order_by(*order))

    services = await session.execute(
        select(ServiceType).options(selectinload(ServiceType.bays)).order_by(ServiceType.id)
    )
    return {
        "dealership": _profile(profile),
        "hours": {name: day(i) for i, name in enumerate(WEEKDAY_NAMES)},
        "holidays": [
            _Flow(date=h.date, name=h.name) for h in (await all_of(Holiday, Holiday.date)).scalars()
        ],
        "bays": [
            _Flow(name=b.name, capacity=b.capacity)
            for b in (await all_of(ServiceBay, ServiceBay.id)).scalars()
        ],
        "service_types": [_service(s) for s in services.scalars()],
        "staff": [
            _Flow(_staff(s)) for s in (await all_of(Staff, Staff.hunt_order, Staff.id)).scalars()
        ],
        "faq": [
            {"question": f.question, "answer": f.answer, "tags": _FlowList(f.tags)}
            for f in (await all_of(FaqEntry, FaqEntry.id)).scalars()
        ],
    }


def _service(s: ServiceType) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name}
    if s.description is not None:
        out["description"] = s.description
    return out | {
        "duration_minutes": s.duration_minutes,
        "price": _Flow(min=_money(s.price_min_cents), max=_money(s.price_max_cents)),
        "bays": _FlowList(b.name for b in s.bays),
        "active": s.active,
    }


def _staff(s: Staff) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "role": s.role, "phone": s.phone}
    if s.email is not None:
        out["email"] = s.email
    return out | {"hunt_order": s.hunt_order, "on_duty": s.on_duty}


_YAML_HEADER = (
    "# The dealership's data (format: docs/dealership-data.md).\n"
    "# Load it with `dealerline import <this file>`: rows are added, updated and, when\n"
    "# missing here, removed (customers and appointments are never removed).\n"
)


def _dump_yaml(data: dict[str, Any]) -> str:
    parts = [
        yaml.dump(
            {key: value},
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            width=1000,  # long answers stay on one line
            default_flow_style=False,
        )
        for key, value in data.items()
    ]
    return _YAML_HEADER + "\n" + "\n".join(parts)


async def export_dealership(database_url: str, path: str | Path) -> dict[str, int]:
    """Write the dealership at ``database_url`` to ``path``: one YAML file when it ends
    ``.yaml``/``.yml``, else a folder of CSV files (made if missing; the seven files are
    overwritten). Returns the rows written per section."""
    path = Path(path)
    engine = create_engine_from_url(database_url)
    try:
        async with session_factory(engine)() as session:
            data = await _export_data(session)
    finally:
        await engine.dispose()
    if _is_yaml(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump_yaml(data), encoding="utf-8")
    else:
        write_csv_folder(path, data)
    return {key: 1 if key == "dealership" else len(value) for key, value in data.items()}
