"""The dealership database ``make run`` and ``make seed-db`` start from: migrated always, the
demo dealership loaded only into an empty database (one with no dealership row), so a
restart never overwrites what the dealership changed or booked. Resetting to the demo is
an explicit, separate step (``--reset-demo``).

``python -m dealerline_cli.database [--url URL]`` does the same for ``make seed-db``
(``--url`` defaults, as ``make run``'s, to ``DATABASE_URL`` (also from ``.env``), else the
SQLite file in the data folder: ``$DEALERLINE_DATA_DIR`` or ``var/``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common.db.engine import (
    create_engine_from_url,
    display_url,
    normalize_database_url,
    session_factory,
)
from dealerline_common.db.migrate import upgrade
from dealerline_common.db.models import DealershipProfile
from dealerline_common.db.seed import SeedError, reset, seed

from .console import load_env_file
from .state_dir import database_url

Say = Callable[[str], None]


async def dealership_count(url: str) -> int:
    """Rows in the dealership table of the migrated database at ``url``."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as session:
            count = await session.scalar(select(func.count()).select_from(DealershipProfile))
            return int(count or 0)
    finally:
        await engine.dispose()


async def prepare(url: str, *, say: Say = lambda _line: None) -> str:
    """Migrate the database at ``url`` to head; load the demo dealership only when it has
    no dealership yet. Returns what was done, for the banner."""
    shown = display_url(url)
    say(f"migrating {shown}")
    await upgrade(url)
    if await dealership_count(url) > 0:
        say(f"{shown} has a dealership: kept as it is (not seeded)")
        return "migrated; the dealership's data kept"
    say(f"{shown} is empty: loading the demo dealership")
    report = await seed(url, progress=say)
    return f"migrated; it was empty, so the demo dealership was loaded ({report.changed} rows)"


async def reset_to_demo(url: str, *, say: Say = lambda _line: None) -> str:
    """Drop every table, migrate and load the demo dealership (everything else is lost)."""
    say(f"resetting {display_url(url)} to the demo dealership")
    await reset(url, progress=say)
    return "reset to the demo dealership"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dealerline_cli.database",
        description="Migrate the dealership database and load the demo dealership only "
        "if it has no dealership yet (never overwrites a dealership's data).",
    )
    parser.add_argument(
        "--url", help="database URL (default: DATABASE_URL, else dealerline.db in the data folder)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_env_file()
    try:
        url = normalize_database_url(args.url or database_url())
        print(asyncio.run(prepare(url, say=lambda line: print(line, flush=True))))
    except (SeedError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"error: database: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
