"""``python -m dealerline_common.db``: migrate, seed or reset the dealership database.

    upgrade [--url URL] [--revision REV]    migrate up (default: head)
    seed    [--url URL] [--file FILE]       load a seed file (default: the demo dealership)
    reset   [--url URL] [--file FILE] [--no-seed] [--yes]
                                            drop everything, migrate, seed
    current [--url URL]                     print the database's revision

``--url`` defaults to ``DATABASE_URL`` (else SQLite in ``<checkout>/var/dealerline.db``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .engine import database_url_from_env, display_url, normalize_database_url
from .migrate import current_revision, head_revision, upgrade
from .seed import DEMO_FILE, SeedError, reset, seed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dealerline_common.db", description="The dealership database."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_url(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", help="database URL (default: DATABASE_URL or the SQLite file)")
        return p

    up = with_url(commands.add_parser("upgrade", help="migrate the schema up"))
    up.add_argument("--revision", default="head")
    sd = with_url(commands.add_parser("seed", help="load a YAML seed file (idempotent)"))
    sd.add_argument("--file", default=str(DEMO_FILE), help="default: the demo dealership")
    rs = with_url(commands.add_parser("reset", help="drop all tables, migrate, seed"))
    rs.add_argument("--file", default=str(DEMO_FILE))
    rs.add_argument("--no-seed", action="store_true", help="leave the database empty")
    rs.add_argument("--yes", action="store_true", help="needed to reset a non-SQLite database")
    with_url(commands.add_parser("current", help="print the schema revision"))
    return parser


async def _main(args: argparse.Namespace) -> int:
    url = normalize_database_url(args.url) if args.url else database_url_from_env()
    shown = display_url(url)
    if args.command == "upgrade":
        print(f"migrating {shown} to {args.revision}", flush=True)
        await upgrade(url, args.revision)
        print(f"at revision {await current_revision(url)}")
    elif args.command == "seed":
        revision = await current_revision(url)
        if revision != head_revision():
            print(
                f"{shown} is at revision {revision or 'none'}, not {head_revision()}: "
                "run `python -m dealerline_common.db upgrade` first",
                file=sys.stderr,
            )
            return 1
        print(f"seeding {shown} from {args.file}", flush=True)
        report = await seed(url, args.file, progress=lambda line: print(line, flush=True))
        print("nothing to change" if report.changed == 0 else f"{report.changed} rows written")
    elif args.command == "reset":
        if make_url(url).get_backend_name() != "sqlite" and not args.yes:
            print(f"refusing to reset {shown} without --yes", file=sys.stderr)
            return 1
        print(f"resetting {shown}", flush=True)
        await reset(
            url,
            args.file,
            with_seed=not args.no_seed,
            progress=lambda line: print(line, flush=True),
        )
        print("done")
    elif args.command == "current":
        print(await current_revision(url) or "none (not migrated)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (SeedError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"error: database: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
