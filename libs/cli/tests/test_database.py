"""The database ``make run`` and ``make seed-db`` start from, on SQLite and PostgreSQL:
migrated always, the demo dealership loaded only while there is no dealership, so the
dealership's own changes survive every restart; ``--reset-demo`` starts over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select, update

from dealerline_cli.database import dealership_count, prepare, reset_to_demo
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.migrate import current_revision, head_revision
from dealerline_common.db.models import Appointment, DealershipProfile, ServiceType
from dealerline_common.db.testing import migrated_db_url_fixture, run_sync  # noqa: F401

OWN_NAME = "Harbor Auto Group"


async def _name_minutes_bookings(url: str) -> tuple[str, int, int]:
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            name = await s.scalar(select(DealershipProfile.name))
            minutes = await s.scalar(select(func.min(ServiceType.duration_minutes)))
            bookings = await s.scalar(select(func.count()).select_from(Appointment))
            return str(name), int(minutes or 0), int(bookings or 0)
    finally:
        await engine.dispose()


async def _make_it_ours(url: str) -> None:
    """What a dealership does after the first start: its own name and service times."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            await s.execute(update(DealershipProfile).values(name=OWN_NAME))
            await s.execute(update(ServiceType).values(duration_minutes=77))
            await s.commit()
    finally:
        await engine.dispose()


async def test_seeds_only_an_empty_database_and_keeps_the_dealerships_data(
    migrated_db_url: str,
) -> None:
    first = await prepare(migrated_db_url)
    assert "demo dealership was loaded" in first
    demo_name, _, demo_bookings = await _name_minutes_bookings(migrated_db_url)
    assert demo_bookings > 0

    await _make_it_ours(migrated_db_url)
    again = await prepare(migrated_db_url)  # the next start
    assert "kept" in again
    assert await dealership_count(migrated_db_url) == 1
    assert await _name_minutes_bookings(migrated_db_url) == (OWN_NAME, 77, demo_bookings)

    assert await reset_to_demo(migrated_db_url) == "reset to the demo dealership"
    name, minutes, _ = await _name_minutes_bookings(migrated_db_url)
    assert name == demo_name and minutes != 77


async def test_a_database_never_migrated_is_migrated_then_seeded(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new' / 'dealerline.db'}"
    await prepare(url)
    assert await current_revision(url) == head_revision()
    assert await dealership_count(url) == 1


def test_make_seed_db_entry_point_never_overwrites(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dealerline.db'}"
    argv = [sys.executable, "-m", "dealerline_cli.database", "--url", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "demo dealership was loaded" in done.stdout
    run_sync(_make_it_ours(url))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "not seeded" in done.stdout
    assert run_sync(_name_minutes_bookings(url))[:2] == (OWN_NAME, 77)

    bad = subprocess.run(
        [sys.executable, "-m", "dealerline_cli.database", "--url", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "unsupported database 'mysql'" in bad.stderr


def test_make_seed_db_defaults_to_the_data_folder_make_run_uses(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DEALERLINE_DATA_DIR=str(tmp_path / "data"), DEALERLINE_ENV_FILE=os.devnull)
    done = subprocess.run(
        [sys.executable, "-m", "dealerline_cli.database"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert run_sync(dealership_count(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'dealerline.db'}"))
