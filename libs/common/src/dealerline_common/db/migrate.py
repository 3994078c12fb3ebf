"""Schema migrations (Alembic), callable from async code and from the command line.

The migration scripts live in ``migrations/`` inside this package, so an installed
service image can migrate its database without the source checkout or an ``alembic.ini``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .engine import create_engine_from_url, normalize_database_url

__all__ = ["alembic_config", "current_revision", "downgrade", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at this package's migrations (and ``url`` if given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # ConfigParser interpolation would eat a '%' in a password.
        cfg.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


async def _run(url: str, action: Callable[[Config], None]) -> None:
    """Run a (synchronous) Alembic command on one async connection, in this event loop."""
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as connection:

            def _sync(sync_connection: Connection) -> None:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = sync_connection
                action(cfg)

            await connection.run_sync(_sync)
            await connection.commit()
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (idempotent)."""
    await _run(url, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(url: str, revision: str = "base") -> None:
    """Migrate down to ``revision``; ``base`` drops every table the migrations created."""
    await _run(url, lambda cfg: command.downgrade(cfg, revision))


async def current_revision(url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()
