"""``dealerline demo``: one simulated phone call through the whole fleet, printed turn by
turn — the simulator's demo (``python -m dealerline_sim.demo``) run as a child process, its
output streamed as it comes and its exit code passed on.

The demo is self-contained (its own NATS, database, scripted LLM, simulated Twilio and
mailbox), so it reads no env file: ``.env`` holds a real deployment's settings, and a demo
call must not text, email or ring anyone real.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from dealerline_common.settings import ENV_FILE_VAR

from .console import child_env, python_module, require_module, run_child

DEMO_MODULE = "dealerline_sim.demo"

EPILOG = """\
\b
Examples:
  dealerline demo
  dealerline demo --scenario escalation --log-dir /tmp/demo-logs

Takes a minute or two: the fleet loads Whisper and Kokoro first. Each process's log is
kept in the log folder. The demo ignores .env: it brings its own NATS, database, LLM and
simulated Twilio.
"""


class Scenario(StrEnum):
    """The simulator's demo scenarios (``dealerline_sim.demo.SCENARIOS``)."""

    booking = "booking"
    escalation = "escalation"


def command(
    scenario: Annotated[
        Scenario,
        typer.Option(
            help="booking: the caller books an oil change. escalation: the caller asks for a "
            "person, the first salesperson is busy, the second accepts, talks, and hands the "
            "caller back to the AI (the human leg's status timeline is printed)."
        ),
    ] = Scenario.booking,
    log_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Where each process of the fleet writes its log.")
    ] = Path("artifacts/demo-logs"),
) -> None:
    """Place a simulated call through the fleet.

    The phone simulator plays Twilio and the caller; the call is printed turn by turn with
    each stage's timing, and the exit code says whether it went as scripted.
    """
    require_module("dealerline_sim", "the demo")
    argv = python_module(DEMO_MODULE, "--scenario", scenario.value, "--log-dir", str(log_dir))
    code = run_child(argv, child_env(**{ENV_FILE_VAR: os.devnull}))
    raise typer.Exit(code)
