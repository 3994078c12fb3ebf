"""``dealerline migrate``: bring the dealership database's schema up to date (Alembic, the
migrations shipped in ``dealerline_common.db``), one line per migration applied."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Annotated

import typer
from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common.db.engine import display_url
from dealerline_common.db.migrate import current_revision, head_revision, upgrade

from .console import FAILED, database_url, fail, say

DATABASE_URL_HELP = (
    "The dealership database (postgresql://… or sqlite:///…). "
    "Default: DATABASE_URL (environment or .env), else var/dealerline.db."
)

EPILOG = """\
\b
Examples:
  dealerline migrate
  dealerline migrate --database-url postgresql://dealer@db.internal/dealerline

Safe to run again: a database already at the latest revision is left alone.
"""


_RUNNING = re.compile(r"Running upgrade .*?-> (?P<revision>[^,\s]+)")


class _MigrationLines(logging.Handler):
    """Alembic's "Running upgrade A -> B, message" records as progress lines."""

    def emit(self, record: logging.LogRecord) -> None:
        applying = _RUNNING.match(record.getMessage())
        if applying:
            say(f"  applying {applying['revision']}")


@contextlib.contextmanager
def migration_progress() -> Iterator[None]:
    logger = logging.getLogger("alembic.runtime.migration")
    handler, level = _MigrationLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _migrate(url: str, revision: str) -> tuple[str | None, str | None]:
    before = await current_revision(url)
    with migration_progress():
        await upgrade(url, revision)
    return before, await current_revision(url)


def command(
    database_url_option: Annotated[
        str | None,
        typer.Option("--database-url", metavar="URL", help=DATABASE_URL_HELP, show_default=False),
    ] = None,
    revision: Annotated[
        str, typer.Option(metavar="REV", help="Migrate up to this revision (the latest: head).")
    ] = "head",
) -> None:
    """Create or update the database schema.

    Applies the migrations the database does not have yet (Alembic), one line each.
    """
    url = database_url(database_url_option)
    shown = display_url(url)
    say(f"migrating {shown} to {head_revision() if revision == 'head' else revision}")
    try:
        before, after = asyncio.run(_migrate(url, revision))
    except CommandError as exc:
        fail(f"revision {revision!r}: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(f"database {shown}: {cause}", FAILED)
    if before == after:
        say(f"already at {after}: nothing to do")
    else:
        say(f"{shown} is at {after}")
