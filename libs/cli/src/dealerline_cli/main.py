"""The ``dealerline`` command: one entry point for the operator's jobs."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="dealerline",
    help="dealerline, the AI receptionist for a car dealership's phone line.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """dealerline, the AI receptionist for a car dealership's phone line."""
