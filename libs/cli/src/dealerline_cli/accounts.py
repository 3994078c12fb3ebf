"""``dealerline set-password``: give a staff member a dashboard login — the dashboard's own
command (``python -m dealerline_dashboard set-password``) run as a child process, so the
password is hashed exactly as the dashboard checks it.

The password never appears in a command line (``ps``): in a terminal the dashboard asks for
it twice; otherwise it is the first line on stdin, handed to the child in its environment
(``DASHBOARD_NEW_PASSWORD``, readable only by the same user). ``DASHBOARD_NEW_PASSWORD``
already set is used as is.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .console import child_env, database_url, fail, python_module, require_module, run_child
from .migrate import DATABASE_URL_HELP

PASSWORD_ENV = "DASHBOARD_NEW_PASSWORD"  # what dealerline_dashboard reads
DATABASE_ENV = "DASHBOARD_DATABASE_URL"  # ... and the database it reads first

EPILOG = """\
\b
Examples:
  dealerline set-password --email maria.lopez@sunrisemotors.example
  printf '%s\\n' "$PW" | dealerline set-password --email maria.lopez@sunrisemotors.example

The staff member must already be in the staff table (dealerline import). In a terminal the
password is asked for twice; piped, it is the first line on stdin. It is never an argument.
"""


def _password_from_stdin() -> str:
    line = sys.stdin.readline()
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        fail("no password on stdin (pipe it in as the first line, or run this in a terminal)")
    return password


def command(
    email: Annotated[
        str, typer.Option(metavar="EMAIL", help="The staff member's email (as in the staff table).")
    ],
    database_url_option: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help=DATABASE_URL_HELP.replace("DATABASE_URL", "DASHBOARD_DATABASE_URL / DATABASE_URL"),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Give a staff member a dashboard login.

    Sets (or replaces) the dashboard password of the staff member with that email; the
    password is asked for, or read from stdin, never given as an argument.
    """
    require_module("dealerline_dashboard", "set-password")
    if not email.strip():
        fail("--email is empty")
    argv = python_module("dealerline_dashboard", "set-password", "--email", email)
    overrides: dict[str, str] = {}
    if database_url_option:  # in the child's environment: a URL's password stays out of ps
        overrides[DATABASE_ENV] = database_url(database_url_option)
    if not os.environ.get(PASSWORD_ENV) and not sys.stdin.isatty():
        overrides[PASSWORD_ENV] = _password_from_stdin()
    raise typer.Exit(run_child(argv, child_env(**overrides)))
