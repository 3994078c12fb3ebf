"""``dealerline import`` / ``dealerline export``: the dealership's own data (profile, hours
and holidays, bays, services and prices, staff and their hunt order, FAQ) in and out of the
database, as one YAML file or a folder of CSV files (``dealerline_common.db.dealership_io``).

An import makes the database match the file: rows are added and updated, and rows the file
no longer has are removed (``--keep-missing`` keeps them). The file is validated as a whole
before anything is written, and everything is written in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common.db.dealership_io import (
    DealershipDataError,
    export_dealership,
    import_dealership,
)
from dealerline_common.db.engine import display_url
from dealerline_common.db.migrate import current_revision, head_revision

from .console import FAILED, database_url, fail, say
from .migrate import DATABASE_URL_HELP

IMPORT_EPILOG = """\
\b
Examples:
  dealerline import dealership.yaml
  dealerline import ./dealership-csv/ --keep-missing
  dealerline import dealership.yaml --database-url postgresql://dealer@db/dealerline

PATH is a .yaml/.yml file or a folder of CSV files, in the format `dealerline export` writes.
Rows absent from the file are removed unless --keep-missing is given. Nothing is written
when the file does not validate. Run `dealerline migrate` first on a new database.
"""

EXPORT_EPILOG = """\
\b
Examples:
  dealerline export dealership.yaml
  dealerline export ./dealership-csv/

PATH ending in .yaml or .yml is written as one YAML file; any other PATH as a folder of
CSV files (created if needed). Edit it and `dealerline import` it back.
"""

_DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", metavar="URL", help=DATABASE_URL_HELP, show_default=False),
]


def _run_on_database(url: str, step: Callable[[], Any]) -> Any:
    """Check the database is migrated, then run the coroutine ``step()`` makes; the
    database's and the file's failures become one-line errors."""
    shown = display_url(url)

    async def _checked() -> Any:
        revision = await current_revision(url)
        if revision != head_revision():
            fail(
                f"{shown} is at schema revision {revision or 'none'}, not "
                f"{head_revision()}: run `dealerline migrate` first"
            )
        return await step()

    try:
        return asyncio.run(_checked())
    except DealershipDataError as exc:
        fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(f"database {shown}: {cause}", FAILED)


def import_command(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="A .yaml file or a folder of CSV files.")
    ],
    database_url_option: _DatabaseOption = None,
    keep_missing: Annotated[
        bool, typer.Option("--keep-missing", help="Keep rows the file does not have.")
    ] = False,
) -> None:
    """Load the dealership's data (YAML or CSVs).

    Profile, hours and holidays, bays, services and prices, staff and hunt order, FAQ: the
    database is made to match PATH, and a summary of rows added, updated and removed is
    printed.
    """
    if not path.exists():
        fail(f"{path}: no such file or folder")
    url = database_url(database_url_option)
    shown = display_url(url)
    say(f"importing {path} into {shown}" + (" (keeping rows not in the file)" * keep_missing))
    report = _run_on_database(
        url,
        lambda: import_dealership(url, path, remove=not keep_missing, progress=say),
    )
    # Each table's counts (and the notes) were progress lines; the totals close them.
    totals = [sum(getattr(c, k) for c in report.tables.values()) for k in _COUNTS]
    say("done: " + ", ".join(f"{n} {k}" for n, k in zip(totals, _COUNTS, strict=True)))


_COUNTS = ("added", "updated", "removed", "unchanged")


def export_command(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="A .yaml/.yml file, or a folder for CSV files.")
    ],
    database_url_option: _DatabaseOption = None,
) -> None:
    """Save the dealership's data (YAML or CSVs).

    Writes what `dealerline import` reads: edit the file and import it back.
    """
    if path.suffix.lower() not in (".yaml", ".yml") and path.is_file():
        fail(f"{path} is a file: name a .yaml file, or a folder for the CSV files")
    url = database_url(database_url_option)
    say(f"exporting {display_url(url)} to {path}")
    counts = _run_on_database(url, lambda: export_dealership(url, path))
    say(f"wrote {path}: " + ", ".join(f"{n} {section}" for section, n in counts.items()))
