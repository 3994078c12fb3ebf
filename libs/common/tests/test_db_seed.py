"""The seed loader: the demo dealership loads on both databases, loading it twice changes
nothing, relative dates land on open days, and a bad file is refused with a clear error
before anything is written."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import selectinload

from dealerline_common.db import SeedError, create_engine_from_url, seed, session_factory, upgrade
from dealerline_common.db.__main__ import main as cli_main
from dealerline_common.db.migrate import head_revision
from dealerline_common.db.models import (
    Appointment,
    Base,
    Customer,
    FaqEntry,
    Holiday,
    OpeningHours,
    ServiceType,
    Staff,
)
from dealerline_common.db.seed import DEMO_FILE, load_seed_file
from dealerline_common.db.testing import (  # noqa: F401
    migrated_db_url_fixture,
    sqlite_db_url_fixture,
)

LA = ZoneInfo("America/Los_Angeles")
TODAY = date(2026, 3, 2)  # a Monday; the week has no holiday


async def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (all columns), to compare two states of the database."""
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as conn:
            out = {}
            for table in Base.metadata.sorted_tables:
                rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
                out[table.name] = [tuple(r) for r in rows]
            return out
    finally:
        await engine.dispose()


async def test_demo_seed_is_idempotent(migrated_db_url: str) -> None:
    first = await seed(migrated_db_url, today=TODAY)
    assert first["customers"].added == 5
    assert first["faq_entries"].added == 20
    assert first["service_types"].added >= 12
    assert first["appointments"].added == 4
    assert first["holidays"].added == 12  # six yearly rules, this year and next
    before = await _snapshot(migrated_db_url)

    lines: list[str] = []
    second = await seed(migrated_db_url, today=TODAY, progress=lines.append)
    assert second.changed == 0
    assert all(c.added == 0 and c.updated == 0 for c in second.tables.values())
    assert "  customers: 0 added, 0 updated, 5 unchanged" in lines
    assert await _snapshot(migrated_db_url) == before


async def test_demo_content(migrated_db_url: str) -> None:
    await seed(migrated_db_url, today=TODAY)
    engine = create_engine_from_url(migrated_db_url)
    try:
        async with session_factory(engine)() as s:
            john = (
                await s.execute(
                    select(Customer)
                    .where(Customer.phone == "+14155550123")
                    .options(selectinload(Customer.vehicles))
                )
            ).scalar_one()
            assert john.name == "John Carter"
            assert [(v.year, v.make, v.model) for v in john.vehicles] == [(2019, "Toyota", "Camry")]

            hours = {h.weekday: h for h in (await s.execute(select(OpeningHours))).scalars()}
            assert (hours[0].opens_at, hours[0].closes_at) == (time(7, 30), time(18, 0))
            assert (hours[5].opens_at, hours[5].closes_at) == (time(8, 0), time(16, 0))
            assert hours[6].closed

            oil = (
                await s.execute(
                    select(ServiceType)
                    .where(ServiceType.name == "Synthetic Oil Change")
                    .options(selectinload(ServiceType.bays))
                )
            ).scalar_one()
            assert (oil.price_min_cents, oil.price_max_cents) == (6995, 9995)
            assert {b.name for b in oil.bays} == {"Express Bay", "General Repair Bay"}
            alignment = (
                await s.execute(
                    select(ServiceType)
                    .where(ServiceType.name == "Wheel Alignment")
                    .options(selectinload(ServiceType.bays))
                )
            ).scalar_one()
            assert [b.name for b in alignment.bays] == ["Alignment and Diagnostics Bay"]

            staff = (await s.execute(select(Staff).order_by(Staff.hunt_order))).scalars().all()
            assert len(staff) >= 3
            assert all(p.phone.startswith("+1415555") for p in staff)
            assert (await s.execute(select(func.count()).select_from(FaqEntry))).scalar() == 20

            thanksgiving = (
                await s.execute(select(Holiday).where(Holiday.name == "Thanksgiving Day"))
            ).scalars()
            assert {h.date for h in thanksgiving} == {date(2026, 11, 26), date(2027, 11, 25)}

            # John's oil change: 3 days after Monday TODAY = Thursday, 09:00 local.
            appt = (
                await s.execute(
                    select(Appointment).where(
                        Appointment.idempotency_key == "seed:john-carter-synthetic-oil"
                    )
                )
            ).scalar_one()
            assert appt.start_at == datetime(2026, 3, 5, 9, 0, tzinfo=LA).astimezone(UTC)
            assert appt.start_at.tzinfo is not None
            assert appt.end_at - appt.start_at == timedelta(minutes=45)
    finally:
        await engine.dispose()


async def test_relative_dates_roll_forward_to_an_open_day(sqlite_db_url: str) -> None:
    """Seeded on a Friday, "+2 days" is a Sunday (closed): the booking moves to Monday;
    seeded again on a later day, the appointments move (updated, not duplicated)."""
    friday = date(2026, 3, 6)
    await seed(sqlite_db_url, today=friday)
    later = await seed(sqlite_db_url, today=friday + timedelta(days=7))
    assert later["appointments"].updated == 4
    assert later["appointments"].added == 0
    engine = create_engine_from_url(sqlite_db_url)
    try:
        async with session_factory(engine)() as s:
            rows = (await s.execute(select(Appointment))).scalars().all()
            assert len(rows) == 4
            emily = next(r for r in rows if r.idempotency_key == "seed:emily-nguyen-alignment")
            local = emily.start_at.astimezone(LA)
            assert local.date() == date(2026, 3, 16)  # Sunday 15th is closed → Monday
            assert local.time() == time(10, 30)
            for r in rows:
                assert r.start_at.astimezone(LA).weekday() != 6
    finally:
        await engine.dispose()


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "dealer.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _demo() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["service_types"][0]["bays"].append("Bay 99"), "unknown bay"),
        (lambda d: d["staff"][0].update(phone="555-0000"), "staff.0.phone"),
        (lambda d: d["customers"][0].update(phone="+15555550123"), "customers.0.phone"),
        (lambda d: d["hours"].update(monday={"open": 450, "close": "18:00"}), "quoted"),
        (lambda d: d["hours"].update(monday={"open": "19:00", "close": "18:00"}), "before close"),
        (lambda d: d["dealership"].update(timezone="Mars/Olympus"), "unknown timezone"),
        (lambda d: d["appointments"][0].update(service="Teleport"), "unknown service"),
        (lambda d: d["appointments"][0].update(days_from_today=0), "days_from_today"),
        (lambda d: d["faq"].append(d["faq"][0]), "duplicate faq questions"),
        (lambda d: d.update(colour="red"), "colour"),
    ],
)
def test_bad_seed_files_are_refused_with_the_reason(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    data = _demo()
    mutate(data)
    with pytest.raises(SeedError, match=message):
        load_seed_file(_write(tmp_path, data))


async def test_a_refused_file_writes_nothing(sqlite_db_url: str, tmp_path: Path) -> None:
    data = _demo()
    data["appointments"][0]["customer_phone"] = "+14155550199"  # nobody in the file
    with pytest.raises(SeedError, match="no customer with that phone"):
        await seed(sqlite_db_url, _write(tmp_path, data), today=TODAY)
    snapshot = await _snapshot(sqlite_db_url)
    assert all(rows == [] for name, rows in snapshot.items() if name != "alembic_version")


async def test_changed_file_updates_only_what_changed(sqlite_db_url: str, tmp_path: Path) -> None:
    await seed(sqlite_db_url, today=TODAY)
    data = _demo()
    data["service_types"][0]["price"]["max"] = 64.95
    data["staff"][0]["on_duty"] = False
    report = await seed(sqlite_db_url, _write(tmp_path, data), today=TODAY)
    assert report.changed == 2
    assert report["service_types"].updated == 1
    assert report["staff"].updated == 1


def test_cli_seed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line in-process (the ``python -m`` entry point itself is covered in
    test_db_migrations)."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, _out, err = run("seed")
    assert code == 1
    assert "upgrade` first" in err
    assert run("upgrade")[0] == 0
    code, out, err = run("seed")
    assert code == 0, err
    assert "customers: 5 added" in out
    code, out, err = run("seed")
    assert code == 0, err
    assert "nothing to change" in out
    code, out, err = run("reset", "--no-seed")
    assert code == 0, err
    assert "dropping all tables" in out
    code, out, _err = run("current")
    assert out.strip() == head_revision()


async def test_seed_needs_a_migrated_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(OperationalError, match="no such table"):
        await seed(url, today=TODAY)
    await upgrade(url)
    assert (await seed(url, today=TODAY)).changed > 0
