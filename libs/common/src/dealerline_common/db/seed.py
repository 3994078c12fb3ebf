"""Load dealership data from a YAML file (the demo: ``demo_dealership.yaml``).

Idempotent by design: every row is matched by its natural key (weekday, holiday date,
bay/service name, customer/staff phone, VIN, FAQ question, appointment ``key``), only
differing fields are written, and nothing absent from the file is deleted, so seeding
twice changes nothing and seeding a live database never loses a real booking.

The file is validated as a whole before anything is written (:mod:`.seed_file`), and
everything is written in one transaction: the reference data by :mod:`.seed_tables`, the
appointments by :mod:`.seed_appointments`, each table's counts in a :class:`SeedReport`
(:mod:`.seed_report`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from .engine import SQLITE_IMMEDIATE, create_engine_from_url, session_factory
from .seed_appointments import seed_appointments
from .seed_file import DEMO_FILE, SeedError, SeedFile, load_seed_file
from .seed_report import SeedReport
from .seed_tables import (
    seed_bays,
    seed_customers,
    seed_faq,
    seed_holidays,
    seed_hours,
    seed_profile,
    seed_services,
    seed_staff,
)

__all__ = [
    "DEMO_FILE",
    "SeedError",
    "SeedFile",
    "SeedReport",
    "apply_file",
    "dealership_today",
    "in_one_transaction",
    "load_seed_file",
    "reset",
    "seed",
]


async def seed(
    url: str,
    path: str | Path | None = None,
    *,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Load ``path`` (default: the demo file) into the migrated database at ``url``.

    ``today`` (default: today in the dealership's timezone) anchors the relative dates.
    """
    spec = load_seed_file(path or DEMO_FILE)
    say = progress or (lambda _line: None)
    tz, today = dealership_today(spec, today)
    report = SeedReport()

    async def work(session: AsyncSession) -> None:
        await apply_file(session, spec, today, tz, report, say)

    await in_one_transaction(url, work)
    return report


def dealership_today(spec: SeedFile, today: date | None) -> tuple[ZoneInfo, date]:
    """The file's timezone, and ``today`` (default: today there)."""
    tz = ZoneInfo(spec.dealership.timezone)
    return tz, today or datetime.now(UTC).astimezone(tz).date()


async def in_one_transaction(url: str, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
    """Run ``work`` in one write transaction on the database at ``url`` (SQLite: BEGIN
    IMMEDIATE, so a concurrent writer waits instead of failing half way): committed when it
    returns, rolled back when it raises."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as session:
            await session.connection(execution_options={SQLITE_IMMEDIATE: True})
            try:
                await work(session)
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
    finally:
        await engine.dispose()


async def apply_file(
    session: AsyncSession,
    spec: SeedFile,
    today: date,
    tz: ZoneInfo,
    report: SeedReport,
    say: Callable[[str], None],
) -> None:
    """Add and update every row ``spec`` lists (nothing is removed), in ``session``."""
    await seed_profile(session, spec.dealership, report)
    say(f"dealership: {spec.dealership.name} ({spec.dealership.timezone})")
    await seed_hours(session, spec, report)
    await seed_holidays(session, spec, today, report)
    bays = await seed_bays(session, spec, report)
    services = await seed_services(session, spec, bays, report)
    await seed_staff(session, spec, report)
    await seed_faq(session, spec, report)
    customers, vehicles = await seed_customers(session, spec, report)
    await session.flush()
    await seed_appointments(session, spec, today, tz, customers, vehicles, services, bays, report)
    await session.flush()
    for line in report.lines():
        say(line)


async def reset(
    url: str,
    path: str | Path | None = None,
    *,
    with_seed: bool = True,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedReport | None:
    """Drop every table the migrations made, migrate up again and (by default) seed."""
    from .migrate import downgrade, upgrade

    say = progress or (lambda _line: None)
    say("dropping all tables")
    await downgrade(url, "base")
    say("migrating to head")
    await upgrade(url)
    if not with_seed:
        return None
    return await seed(url, path, today=today, progress=progress)
