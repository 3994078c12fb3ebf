"""The ``cli`` fixture: the ``dealerline`` command run as a process in a folder of the
test's own (an empty folder: no ``.env`` of the checkout's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_kit import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The command, run in ``tmp_path/work`` (an empty folder: no ``.env``)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(workdir)
