"""Alembic environment for the dealership database (async-aware).

Two ways in:
- programmatic (:func:`dealerline_common.db.migrate.upgrade`): the caller already holds an
  async connection and passes its sync facade in ``config.attributes["connection"]``;
  migrations run on it, inside the caller's event loop;
- the ``alembic`` command line: ``sqlalchemy.url`` (or ``DATABASE_URL``) names the
  database and this file opens an async engine itself with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from dealerline_common.db.engine import create_engine_from_url, database_url_from_env
from dealerline_common.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = config.get_main_option("sqlalchemy.url") or database_url_from_env()
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations_on)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or database_url_from_env()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    shared = config.attributes.get("connection")
    if shared is not None:
        run_migrations_on(shared)
    else:
        asyncio.run(_run_async())
