"""``make run`` / ``dealerline run``: the whole fleet on this machine, for real calls, until
Ctrl-C / SIGTERM.

What must outlive a restart lives in the data folder (:mod:`.state_dir`, ``var/`` by
default): the SQLite database (unless ``DATABASE_URL`` names another), the generated
secrets, the JetStream store and the logs. The database is migrated on every start and
given the demo dealership only while it has no dealership (``--reset-demo`` starts over).
One port (the edge, :mod:`.edge`) serves every Twilio webhook and the dashboard.

``python -m dealerline_cli.run`` is the same command (the Makefile runs it that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common.db.engine import display_url, normalize_database_url
from dealerline_common.db.seed import SeedError

from .console import load_env_file
from .database import prepare, reset_to_demo
from .fleet import DEFAULT_PUBLIC_URL, Fleet, TwilioAccount
from .state_dir import (
    DASHBOARD_SECRET,
    DATA_DIR_ENV,
    TWILIO_TOKEN,
    DataDir,
    database_url,
    default_data_dir,
)

DEFAULT_PORT = 8080

EPILOG = """\
\b
Examples:
  dealerline run
  dealerline run --public-url https://abc123.trycloudflare.com --port 8080
  dealerline run --data-dir /srv/dealerline --host 0.0.0.0
  dealerline run --reset-demo --yes     (erases the database, loads the demo dealership)

\b
Point a tunnel (cloudflared, ngrok) at the port and pass its https URL as --public-url;
in the Twilio console set the number's "A call comes in" webhook to
<public URL>/api/voice/incoming (HTTP POST). The dashboard is served on the same port.
The first start loads Whisper and Kokoro (a minute or two); Ctrl-C stops everything.
"""


def _check_port(host: str, port: int) -> None:
    """Fail at once, with the fix, when the public port is taken."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use (another make run?)" if exc.errno == errno.EADDRINUSE else exc
            message = f"error: port {port} on {host} {why}: choose another with --port"
            raise SystemExit(message) from None


def _twilio(token: str) -> TwilioAccount | None:
    """The dealership's Twilio account when ``TWILIO_ACCOUNT_SID`` and a from number
    (``TWILIO_FROM_NUMBER``) are set: the escalation service rings staff through it and
    the after-call service texts through it. None: staff cannot be rung."""
    sid = os.environ.get("TWILIO_ACCOUNT_SID", "").strip()
    number = os.environ.get("TWILIO_FROM_NUMBER", "").strip()
    if not (sid and number):
        return None
    return TwilioAccount(account_sid=sid, auth_token=token, from_number=number)


def _database(data: DataDir, reset_demo: bool, yes: bool) -> tuple[str, str]:
    """The database URL (``DATABASE_URL`` wins over the data folder's SQLite file),
    migrated and seeded as the module says; and what was done."""
    try:
        url = normalize_database_url(database_url(data.root))
    except ValueError as exc:
        raise SystemExit(f"error: DATABASE_URL: {exc}") from exc
    if reset_demo and not yes:
        if not sys.stdin.isatty():
            raise SystemExit("error: --reset-demo erases the database: add --yes to confirm")
        typer.confirm(
            f"Erase everything in {display_url(url)} (bookings, calls, staff logins) and "
            "load the demo dealership?",
            abort=True,
        )

    def say(line: str) -> None:
        print(f"[run] {line}", file=sys.stderr, flush=True)

    try:
        if reset_demo:
            return url, asyncio.run(reset_to_demo(url, say=say))
        return url, asyncio.run(prepare(url, say=say))
    except (SQLAlchemyError, OSError, SeedError) as exc:
        raise SystemExit(f"error: database {display_url(url)}: {exc}") from exc


def _banner(fleet: Fleet, data: DataDir, database: str) -> str:
    edge, public, db = fleet.edge_url, fleet.public_url, display_url(str(fleet.database_url))
    unreachable = (
        f"    ({public} is the example URL, which Twilio cannot reach: pass --public-url)\n"
        if public == DEFAULT_PUBLIC_URL
        else ""
    )
    memory = " (in memory: lost on restart; start Redis to keep it)"
    return (
        f"\ndealerline is running on one public port: {edge}\n"
        f'  Twilio, through your tunnel to that port: the number\'s "A call comes in" webhook\n'
        f"    {public}/api/voice/incoming (HTTP POST)\n{unreachable}"
        f"  Dashboard for sales staff: {edge}/ (and {public}/ through the tunnel)\n"
        f"    give someone a login: dealerline set-password --email STAFF_EMAIL "
        f"--database-url '{db}'\n"
        f"  Database: {db} — {database}\n"
        f"  Data folder: {data.root} (secrets.env, nats/, logs in {fleet.log_dir})\n"
        f"  Conversation state: {fleet.state_url}"
        + (memory if fleet.state_url == "memory://" else f" (namespace {fleet.state_namespace})")
        + "\nPress Ctrl-C to stop everything."
    )


async def _until_stopped_or_exited(fleet: Fleet, stop: asyncio.Event) -> list[asyncio.Task[int]]:
    """Wait for ``stop`` or for any process to exit (its log tail is printed); returns
    the tasks still watching the processes (they end once the fleet is stopped)."""
    waiter = asyncio.create_task(stop.wait(), name="wait-for-signal")
    watchers = [
        asyncio.create_task(asyncio.to_thread(p.process.wait), name=f"watch:{n}")
        for n, p in fleet.procs.items()
    ]
    await asyncio.wait([waiter, *watchers], return_when=asyncio.FIRST_COMPLETED)
    for name, proc in fleet.procs.items():
        if proc.process.poll() is not None and not stop.is_set():
            print(f"{name} exited ({proc.process.returncode}):\n{proc.log_tail()}", flush=True)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    return watchers


async def _run_forever(fleet: Fleet, data: DataDir, database: str) -> int:
    """Run the fleet until Ctrl-C / SIGTERM (0) or until one of its processes exits (1),
    then stop every process it started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchers: list[asyncio.Task[int]] = []
    async with fleet:
        print(_banner(fleet, data, database), flush=True)
        watchers = await _until_stopped_or_exited(fleet, stop)
    for w in watchers:
        with contextlib.suppress(BaseException):
            await w
    return 0 if stop.is_set() else 1


# The command's options (module level: the command itself stays short).
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        metavar="DIR",
        help="Where the database, the generated secrets, the NATS store and the logs live "
        "across restarts (created if missing).",
    ),
]
PortOption = Annotated[
    int,
    typer.Option(
        "--port",
        envvar="GATEWAY_HTTP_PORT",
        metavar="PORT",
        min=0,
        max=65535,
        help="The one public port: every Twilio webhook, the media stream and the "
        "dashboard (0: any free port).",
    ),
]
HostOption = Annotated[
    str,
    typer.Option(
        "--host", metavar="ADDRESS", help="Address the public port listens on (0.0.0.0: all)."
    ),
]
PublicUrlOption = Annotated[
    str,
    typer.Option(
        "--public-url",
        envvar="GATEWAY_PUBLIC_URL",
        metavar="URL",
        help="The https URL Twilio reaches the public port at (your tunnel's); webhook "
        "signatures are checked against it.",
    ),
]
ResetOption = Annotated[
    bool,
    typer.Option(
        "--reset-demo",
        help="Erase the database (bookings, calls, logins) and load the demo dealership.",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --reset-demo.")]
NatsOption = Annotated[
    str | None,
    typer.Option("--nats-url", metavar="URL", help="Use this NATS instead of starting one."),
]
ScenarioOption = Annotated[
    Path | None,
    typer.Option(
        "--scenario", metavar="FILE", help="Scenario file of the scripted LLM (when no LLM is set)."
    ),
]
LogDirOption = Annotated[
    Path | None,
    typer.Option("--log-dir", metavar="DIR", help="Each process's log (default: DIR/log)."),
]
DEFAULT_DATA_DIR = default_data_dir()


def command(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    port: PortOption = DEFAULT_PORT,
    host: HostOption = "127.0.0.1",
    public_url: PublicUrlOption = DEFAULT_PUBLIC_URL,
    reset_demo: ResetOption = False,
    yes: YesOption = False,
    nats_url: NatsOption = None,
    scenario: ScenarioOption = None,
    log_dir: LogDirOption = None,
) -> None:
    """Run the whole fleet on this machine for real calls (Ctrl-C stops it).

    The database, the generated secrets and the NATS store are kept in the data folder
    across restarts. The demo dealership is loaded only into an empty database.
    """
    load_env_file()
    data = DataDir.open(data_dir)
    _check_port(host, port)  # before anything is migrated or erased
    url, database = _database(data, reset_demo, yes)
    token = data.secret(TWILIO_TOKEN).value
    twilio = _twilio(token)
    fleet = Fleet(
        nats_url=nats_url,
        public_url=public_url.rstrip("/"),
        auth_token=token,
        dashboard_secret=data.secret(DASHBOARD_SECRET).value,
        scenario=scenario,
        log_dir=log_dir or data.log_dir,
        database_url=url,
        state_namespace=data.state_namespace,
        twilio=twilio,
        extra_env={} if twilio else {"ESCALATION_TWILIO_AUTH_TOKEN": token},
        nats_store_dir=None if nats_url else data.nats_store,
        edge_port=port,
        edge_host=host,
        env_file=None,  # the operator's .env, as loaded above
    )
    raise typer.Exit(asyncio.run(_run_forever(fleet, data, database)))


def main() -> None:
    """``python -m dealerline_cli.run``: the command on its own (``.env`` read first, so
    its options' environment defaults see it)."""
    load_env_file()
    app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    app.command(epilog=EPILOG)(command)
    app()


if __name__ == "__main__":
    main()
