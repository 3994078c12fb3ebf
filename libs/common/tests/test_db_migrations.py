"""Migrations: they build the schema on fresh SQLite and PostgreSQL databases, match the
models exactly, go down and up again, and run from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from dealerline_common.db import (
    create_engine_from_url,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from dealerline_common.db.__main__ import main as cli_main
from dealerline_common.db.models import Base
from dealerline_common.db.testing import migrated_db_url_fixture  # noqa: F401

EXPECTED_TABLES = {
    "alembic_version",
    "appointments",
    "callback_requests",
    "deliveries",
    "calls",
    "customers",
    "dealership",
    "faq_entries",
    "holidays",
    "opening_hours",
    "service_bays",
    "service_type_bays",
    "service_types",
    "staff",
    "transcript_turns",
    "vehicles",
}


async def _tables(url: str) -> set[str]:
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _diff(url: str) -> list[object]:
    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, Base.metadata))

    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def test_upgrade_builds_every_table_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'fresh.db'}"  # the folder is created too
    assert await current_revision(url) is None
    await upgrade(url)
    assert await current_revision(url) == head_revision()
    assert await _tables(url) == EXPECTED_TABLES
    await upgrade(url)  # a second upgrade is a no-op
    assert await current_revision(url) == head_revision()


async def test_migrated_database_matches_the_models(migrated_db_url: str) -> None:
    """The hand-written migration and the ORM models describe the same schema, on both
    databases (tables, columns, types, nullability, indexes, unique and foreign keys)."""
    assert await current_revision(migrated_db_url) == head_revision()
    assert await _tables(migrated_db_url) == EXPECTED_TABLES
    assert await _diff(migrated_db_url) == []


async def test_downgrade_to_base_and_up_again(migrated_db_url: str) -> None:
    await downgrade(migrated_db_url, "base")
    assert await current_revision(migrated_db_url) is None
    assert await _tables(migrated_db_url) == {"alembic_version"}
    await upgrade(migrated_db_url)
    assert await _tables(migrated_db_url) == EXPECTED_TABLES
    assert await _diff(migrated_db_url) == []


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dealerline_common.db", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_cli_upgrades_the_database_named_by_database_url(tmp_path: Path) -> None:
    """``python -m dealerline_common.db upgrade`` as a process (the one subprocess test;
    the other commands run in-process in test_db_seed)."""
    path = tmp_path / "cli.db"
    env = {"DATABASE_URL": f"sqlite:///{path}"}  # a plain sqlite:// URL gets the async driver
    done = _cli("upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert f"migrating sqlite+aiosqlite:///{path} to head" in done.stdout
    assert f"at revision {head_revision()}" in done.stdout
    assert path.is_file()


def test_cli_refuses_an_unsupported_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["upgrade", "--url", "mysql://root@localhost/x"]) == 1
    assert "unsupported database 'mysql'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    from dealerline_common.db.engine import normalize_database_url

    assert normalize_database_url(given) == expected


def test_default_url_is_the_sqlite_file_in_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from dealerline_common.db import database_url_from_env

    monkeypatch.delenv("DATABASE_URL", raising=False)
    root = Path(__file__).resolve().parents[3]
    assert database_url_from_env() == f"sqlite+aiosqlite:///{root / 'var' / 'dealerline.db'}"
    monkeypatch.setenv("DATABASE_URL", "postgresql://me@db/dealer")
    assert database_url_from_env() == "postgresql+asyncpg://me@db/dealer"
