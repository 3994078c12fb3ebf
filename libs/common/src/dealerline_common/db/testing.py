"""pytest fixtures for tests that need the dealership database (real SQLite and PostgreSQL).

Import the fixture a test module uses; pytest finds fixtures in the module namespace,
and each one stands alone, so one import is enough. The Python names end in ``_fixture``
(the fixture names do not), so a test's parameter does not shadow the import::

    from dealerline_common.db.testing import migrated_db_url_fixture  # noqa: F401

    async def test_something(migrated_db_url: str) -> None: ...

- ``migrated_db_url``: a migrated, empty database, parametrized over ``sqlite`` and
  ``postgresql`` so each test runs on both;
- ``sqlite_db_url`` / ``postgres_db_url``: the same, on one database only;
- ``seeded_db_url``: ``migrated_db_url`` loaded with the demo dealership (dates relative
  to the real today).

PostgreSQL: each pytest session creates its own database ``dl_test_<hex>`` (on the server
of ``DL_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``, user
``root`` as a fallback), migrates it once and drops it at the end, so parallel runs never
collide; every test starts from empty tables (TRUNCATE … RESTART IDENTITY). SQLite: a
migrated template file is copied per test. ``empty_database(request, kind, tmp_path)``
builds the same thing for a fixture of your own.

The fixtures are synchronous and run their async work in a private thread with its own
event loop, so they work under any pytest-asyncio loop scope.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from .engine import create_engine_from_url
from .migrate import upgrade
from .models import Base
from .seed import seed

__all__ = [
    "DATABASE_KINDS",
    "POSTGRES_ENV",
    "empty_database",
    "migrated_db_url_fixture",
    "postgres_admin_url",
    "postgres_db_url_fixture",
    "run_sync",
    "seeded_db_url_fixture",
    "sqlite_db_url_fixture",
    "truncate_all",
]

POSTGRES_ENV = "DL_TEST_POSTGRES_URL"
_DEFAULT_ADMIN_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh event loop in a helper thread (works whether
    or not the calling thread already runs a loop)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="dl-db-fixture")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _asyncpg_args(url: URL) -> dict[str, Any]:
    return {
        "user": url.username,
        "password": url.password,
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "database": url.database,
    }


async def _first_reachable() -> URL:
    candidates = [os.environ[POSTGRES_ENV]] if os.environ.get(POSTGRES_ENV) else []
    candidates += list(_DEFAULT_ADMIN_URLS)
    problems = []
    for candidate in candidates:
        url = make_url(candidate)
        try:
            conn = await asyncpg.connect(**_asyncpg_args(url), timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            problems.append(f"{url.render_as_string(hide_password=True)}: {exc}")
            continue
        await conn.close()
        return url
    raise RuntimeError(
        "no PostgreSQL server for the database tests ("
        + "; ".join(problems)
        + f"); set {POSTGRES_ENV}=postgresql://user@host:port/db to one you can create "
        "databases on"
    )


def postgres_admin_url() -> URL:
    """The first PostgreSQL server URL that accepts a connection (see module docs)."""
    return run_sync(_first_reachable())


async def truncate_all(url: str) -> None:
    """Empty every table of the dealership schema and restart the id sequences
    (PostgreSQL), or delete every row (SQLite)."""
    engine = create_engine_from_url(url)
    try:
        async with engine.begin() as conn:
            tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
            if conn.dialect.name == "postgresql":
                await conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                await conn.exec_driver_sql(
                    f"TRUNCATE TABLE {', '.join(tables)} RESTART IDENTITY CASCADE"
                )
            else:
                for table in tables:
                    await conn.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        await engine.dispose()


class _Databases:
    """The per-session resources behind the fixtures, made on first use and removed when
    pytest finishes (so a test module needs to import only the fixture it uses)."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._postgres: str | None = None
        self._template: Path | None = None

    def postgres(self) -> str:
        if self._postgres is None:
            admin = postgres_admin_url()
            name = f"dl_test_{uuid.uuid4().hex[:12]}"
            run_sync(_admin_sql(admin, f'CREATE DATABASE "{name}"'))
            self._config.add_cleanup(
                lambda: run_sync(
                    _admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
            )
            url = admin.set(drivername="postgresql+asyncpg", database=name)
            self._postgres = url.render_as_string(hide_password=False)
            run_sync(upgrade(self._postgres))
        return self._postgres

    def sqlite_template(self) -> Path:
        if self._template is None:
            folder = Path(tempfile.mkdtemp(prefix="dl-db-template-"))
            self._config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
            path = folder / "template.db"
            run_sync(upgrade(f"sqlite+aiosqlite:///{path}"))
            self._template = path
        return self._template


_DATABASES = pytest.StashKey[_Databases]()


async def _admin_sql(admin: URL, sql: str) -> None:
    conn = await asyncpg.connect(**_asyncpg_args(admin), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def empty_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A migrated, empty database of ``kind`` ("sqlite" or "postgresql") for one test."""
    databases = request.config.stash.setdefault(_DATABASES, _Databases(request.config))
    if kind == "sqlite":
        path = tmp_path / "dealerline.db"
        shutil.copyfile(databases.sqlite_template(), path)
        return f"sqlite+aiosqlite:///{path}"
    if kind == "postgresql":
        url = databases.postgres()
        run_sync(truncate_all(url))
        return url
    raise ValueError(f"unknown database kind {kind!r}")


DATABASE_KINDS = ("sqlite", "postgresql")


@pytest.fixture(name="migrated_db_url", params=DATABASE_KINDS)
def migrated_db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: once on SQLite, once on PostgreSQL."""
    return empty_database(request, request.param, tmp_path)


@pytest.fixture(name="sqlite_db_url")
def sqlite_db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty SQLite database file for this test."""
    return empty_database(request, "sqlite", tmp_path)


@pytest.fixture(name="postgres_db_url")
def postgres_db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    return empty_database(request, "postgresql", tmp_path)


@pytest.fixture(name="seeded_db_url", params=DATABASE_KINDS)
def seeded_db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with the demo dealership loaded (both kinds)."""
    url = empty_database(request, request.param, tmp_path)
    run_sync(seed(url))
    return url
