"""``python -m dealerline_dashboard``: run the dashboard-api service until SIGTERM.

``python -m dealerline_dashboard set-password --email E``: give a staff member a dashboard
login (the password comes from ``DASHBOARD_NEW_PASSWORD``, or is asked for twice).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from sqlalchemy.exc import SQLAlchemyError

from dealerline_common.db.engine import database_url_from_env, display_url
from dealerline_common.service import service_main

from .accounts import UnknownStaff, set_password
from .app import Service
from .settings import DashboardSettings

PASSWORD_ENV = "DASHBOARD_NEW_PASSWORD"


def _database_url(explicit: str | None) -> str:
    return explicit or os.environ.get("DASHBOARD_DATABASE_URL") or database_url_from_env()


def _read_password() -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        raise SystemExit(f"set {PASSWORD_ENV} or run this in a terminal to type the password")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise SystemExit("the passwords differ; nothing changed")
    return first


def _set_password(args: argparse.Namespace) -> int:
    url = _database_url(args.database_url)
    try:
        asyncio.run(set_password(url, args.email, _read_password()))
    except (UnknownStaff, ValueError) as exc:
        print(f"dashboard-api: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        print(
            f"dashboard-api: database error in {display_url(url)}: {cause} "
            "(is it migrated and seeded? `make seed-db`)",
            file=sys.stderr,
        )
        return 1
    print(f"password set for {args.email.strip().lower()} in {display_url(url)}")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        service_main("dashboard-api", DashboardSettings, Service)
        return
    parser = argparse.ArgumentParser(prog="python -m dealerline_dashboard")
    commands = parser.add_subparsers(dest="command", required=True)
    setpw = commands.add_parser("set-password", help="give a staff member a dashboard login")
    setpw.add_argument("--email", required=True, help="the staff member's email")
    setpw.add_argument(
        "--database-url", default=None, help="default: DASHBOARD_DATABASE_URL / DATABASE_URL"
    )
    args = parser.parse_args(argv)
    raise SystemExit(_set_password(args))


if __name__ == "__main__":
    main()
