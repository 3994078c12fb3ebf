"""The ``dealerline`` command: one entry point for the operator's jobs.

Every subcommand but ``demo`` first loads the operator's env file (``.env`` in the working
directory, or ``--env-file`` / ``DEALERLINE_ENV_FILE``) into its environment — real
environment variables win — so ``dealerline run``'s processes inherit it. The services read
the same file themselves when started on their own (``dealerline_common.settings``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dealerline_common.settings import ENV_FILE_VAR

from . import accounts, data, demo, migrate, run, voices
from .console import fail, load_env_file

HELP = """\
dealerline, the AI receptionist for a car dealership's phone line.

The operator's command: run the fleet, place a demo call, load and save the dealership's
data, give staff a dashboard login, fetch voices, migrate the database.
"""

EPILOG = """\
\b
Start here:
  dealerline demo                  a simulated call through the whole fleet
  dealerline migrate               create or update the database
  dealerline import dealer.yaml    load the dealership's own data
  dealerline set-password --email maria.lopez@sunrisemotors.example
  dealerline run                   the fleet, for real calls (Ctrl-C stops it)

Settings come from environment variables, then from .env in the working directory (or the
file --env-file / DEALERLINE_ENV_FILE names); .env.example lists them. `dealerline COMMAND
--help` explains each command.
"""

# The commands whose processes must not see the operator's env file (see demo.py).
_WITHOUT_ENV_FILE = frozenset({"demo"})

app = typer.Typer(
    name="dealerline",
    help=HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="FILE",
            help="Read settings from this file instead of ./.env (sets DEALERLINE_ENV_FILE).",
            show_default=False,
        ),
    ] = None,
) -> None:
    if env_file is not None:
        if not env_file.is_file():
            fail(f"--env-file {env_file}: no such file")
        os.environ[ENV_FILE_VAR] = str(env_file.resolve())  # children may run elsewhere
    if ctx.invoked_subcommand not in _WITHOUT_ENV_FILE:
        load_env_file()


def _register() -> None:
    app.command("run", epilog=run.EPILOG)(run.command)
    app.command("demo", epilog=demo.EPILOG)(demo.command)
    app.command("import", epilog=data.IMPORT_EPILOG)(data.import_command)
    app.command("export", epilog=data.EXPORT_EPILOG)(data.export_command)
    app.command("set-password", epilog=accounts.EPILOG)(accounts.command)
    app.command("migrate", epilog=migrate.EPILOG)(migrate.command)
    app.command("voices", epilog=voices.EPILOG)(voices.command)


_register()
