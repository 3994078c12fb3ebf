"""``make run``: the whole fleet on this machine until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path

from .fleet import DEFAULT_PUBLIC_URL, Fleet


def _fleet_for_cli(args: argparse.Namespace) -> Fleet:
    """The fleet ``make run`` starts: the gateway on ``$GATEWAY_HTTP_PORT`` (else a free
    port), webhooks signed with ``$GATEWAY_TWILIO_AUTH_TOKEN`` (else a fresh token)."""
    gateway_port = os.environ.get("GATEWAY_HTTP_PORT")
    return Fleet(
        nats_url=args.nats_url,
        public_url=args.public_url,
        ports={"gateway": int(gateway_port)} if gateway_port else {},
        auth_token=os.environ.get("GATEWAY_TWILIO_AUTH_TOKEN") or secrets.token_hex(16),
        scenario=Path(args.scenario) if args.scenario else None,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )


def _banner(fleet: Fleet) -> str:
    return (
        f"\ndealerline is running. Gateway (point Twilio here): {fleet.gateway_url}\n"
        f"  webhook  POST {fleet.public_url}/api/voice/incoming\n"
        f"  logs     {fleet.log_dir}\n"
        f"Dashboard for sales staff: {fleet.url('dashboard-api')}/ — give someone a login with\n"
        f"  .venv/bin/python -m dealerline_dashboard set-password "
        f"--database-url '{fleet.database_url}' --email maria.lopez@sunrisemotors.example\n"
        "Press Ctrl-C to stop everything."
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


async def _run_forever(args: argparse.Namespace) -> None:
    """Run the fleet until Ctrl-C / SIGTERM (or until one of its processes exits), then
    stop every process it started."""
    fleet = _fleet_for_cli(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchers: list[asyncio.Task[int]] = []
    async with fleet:
        print(_banner(fleet), flush=True)
        watchers = await _until_stopped_or_exited(fleet, stop)
    for w in watchers:
        with contextlib.suppress(BaseException):
            await w


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the dealerline fleet on this machine.")
    parser.add_argument("--nats-url", help="use this NATS instead of starting a local one")
    parser.add_argument(
        "--public-url",
        default=os.environ.get("GATEWAY_PUBLIC_URL", DEFAULT_PUBLIC_URL),
        help="the URL Twilio reaches the gateway at (default: $GATEWAY_PUBLIC_URL)",
    )
    parser.add_argument("--scenario", help="scenario file for the scripted LLM endpoint")
    parser.add_argument("--log-dir", help="where each process writes its log")
    asyncio.run(_run_forever(parser.parse_args()))


if __name__ == "__main__":
    main()
