"""Engines and sessions for the dealership database.

``DATABASE_URL`` names the database: ``postgresql+asyncpg://…`` in production,
``sqlite+aiosqlite:///…`` as the embedded default (``var/dealerline.db`` in the checkout).
Plain ``postgresql://`` / ``postgres://`` / ``sqlite:///`` URLs are accepted too and given
the async driver, so a URL copied from a hosting dashboard works as is.

SQLite needs three things PostgreSQL does by itself, set on every new connection:
foreign keys (off by default in SQLite), WAL journal + busy timeout (the agent and the
dashboard open the same file), and real transactions: SQLAlchemy emits ``BEGIN`` itself
so reads inside a transaction are isolated, and a session that must serialise writers
(booking a bay) asks for ``BEGIN IMMEDIATE`` with :data:`SQLITE_IMMEDIATE`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic_settings import SettingsConfigDict
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..settings import EnvFileSettings

__all__ = [
    "SQLITE_IMMEDIATE",
    "DatabaseSettings",
    "create_engine_from_url",
    "database_url_from_env",
    "default_database_url",
    "display_url",
    "normalize_database_url",
    "session_factory",
    "writing",
]

# Execution option: on SQLite, start this connection's transaction with BEGIN IMMEDIATE
# (take the write lock up front) instead of BEGIN; ignored on other databases.
SQLITE_IMMEDIATE = "dealerline_sqlite_immediate"

_SQLITE_BUSY_TIMEOUT_S = 15.0


class DatabaseSettings(EnvFileSettings):
    """``DATABASE_URL`` (unprefixed: every service that opens the database reads the same
    variable; also from the env file, see :mod:`dealerline_common.settings`)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    database_url: str | None = None


def _workspace_root() -> Path | None:
    """The checkout this package runs from (the folder with ``uv.lock``), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "uv.lock").is_file() and (parent / "libs").is_dir():
            return parent
    return None


def default_database_url() -> str:
    """SQLite in ``<checkout>/var/dealerline.db`` (or ``./var/`` outside a checkout)."""
    root = _workspace_root() or Path.cwd()
    return f"sqlite+aiosqlite:///{root / 'var' / 'dealerline.db'}"


def database_url_from_env() -> str:
    """``DATABASE_URL`` from the environment, else :func:`default_database_url`."""
    return normalize_database_url(DatabaseSettings().database_url or default_database_url())


def normalize_database_url(url: str | URL) -> str:
    """The URL with an async driver: asyncpg for PostgreSQL, aiosqlite for SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(
            f"unsupported database {backend!r} in DATABASE_URL: use postgresql+asyncpg:// "
            "or sqlite+aiosqlite:///"
        )
    return parsed.render_as_string(hide_password=False)


def display_url(url: str | URL) -> str:
    """The URL for logs and progress output (password hidden)."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine_from_url(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url``; creates the folder of a SQLite file if needed.

    ``kwargs`` go to :func:`~sqlalchemy.ext.asyncio.create_async_engine`.
    """
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", _SQLITE_BUSY_TIMEOUT_S)
        engine = create_async_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, **kwargs)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN (below) instead of the sqlite3 module, which only
        # begins a transaction before a write and so leaves reads unisolated.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no lazy reload in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def writing(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a write transaction (BEGIN IMMEDIATE on SQLite, so writers queue on
    the lock up front instead of failing on upgrade), committed at the end of the block and
    rolled back on any error."""
    async with sessions() as session:
        await session.connection(execution_options={SQLITE_IMMEDIATE: True})
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
