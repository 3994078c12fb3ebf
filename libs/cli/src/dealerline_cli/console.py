"""What the ``dealerline`` subcommands share: one-line errors with the exit codes the help
promises, the database URL every command defaults to, the operator's env file, and child
processes whose output streams straight to the terminal.

Exit codes: 0 done; 2 bad input (a missing file, a malformed URL, a file that does not
validate); 1 anything else that went wrong (a database that cannot be reached); a child
process's own code when a subcommand runs one (128 + N when signal N ended it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import typer
from dotenv import load_dotenv
from sqlalchemy.exc import ArgumentError

from dealerline_common.db.engine import database_url_from_env, normalize_database_url
from dealerline_common.settings import SettingsError, env_file

BAD_INPUT = 2
FAILED = 1

# How long a child may take to stop after Ctrl-C reached it (a fleet stops its processes).
_CHILD_STOP_GRACE_S = 30.0


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    # SystemExit, not typer.Exit: the same helpers serve the plain `python -m` entry points.
    raise SystemExit(code)


def say(message: str) -> None:
    """A progress line (stdout, flushed at once so it shows before a slow step)."""
    typer.echo(message)
    sys.stdout.flush()


def database_url(given: str | None) -> str:
    """``given`` (``--database-url``) or, as the services do, ``DATABASE_URL`` (also from the
    env file), else SQLite in ``var/dealerline.db`` — with the async driver added."""
    try:
        return normalize_database_url(given) if given else database_url_from_env()
    except ArgumentError:
        fail(f"{given or 'DATABASE_URL'} is not a database URL (postgresql://… or sqlite:///…)")
    except (ValueError, SettingsError) as exc:
        fail(str(exc))


def load_env_file() -> Path | None:
    """Load the operator's env file (``.env`` here or ``DEALERLINE_ENV_FILE``) into this
    process's environment without overriding real variables, so every child process
    inherits it. Returns the file when one was read."""
    try:
        path = env_file()
    except SettingsError as exc:
        fail(str(exc))
    if not path.is_file():
        return None
    try:
        load_dotenv(path, override=False)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the env file {path}: {exc}")
    return path


def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` with this terminal (its output streams as it comes) and return its exit
    code. Ctrl-C reaches the child too (same process group): it gets time to stop what it
    started, then SIGTERM, then SIGKILL."""
    process = subprocess.Popen(list(argv), env=None if env is None else dict(env))
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = _stop(process)
    return 128 - code if code < 0 else code


def _stop(process: subprocess.Popen[bytes]) -> int:
    for action in (None, process.terminate, process.kill):
        if action is not None:
            action()
        try:
            return process.wait(timeout=_CHILD_STOP_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    return process.wait()


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter (the workspace's virtualenv)."""
    return [sys.executable, "-m", module, *args]


def child_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, **overrides}


def require_module(module: str, what: str) -> None:
    """Exit with a clear error when ``module`` is not installed (checked without importing
    it: the command package imports no service and not the simulator)."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        fail(f"{what} needs the {module} package, which is not installed here: run `make setup`")


__all__ = [
    "BAD_INPUT",
    "FAILED",
    "child_env",
    "database_url",
    "fail",
    "load_env_file",
    "python_module",
    "require_module",
    "run_child",
    "say",
]
