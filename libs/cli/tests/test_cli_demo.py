"""``dealerline demo`` as ``make demo`` runs it: the simulator's demo call through the whole
fleet (real processes, Whisper and Kokoro), its output streamed through the command and its
exit code passed on — and the operator's ``.env`` kept out of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_kit import Cli

pytestmark = pytest.mark.e2e


def test_demo_books_through_the_fleet_and_ignores_the_operators_env_file(
    cli: Cli, tmp_path: Path
) -> None:
    # Settings no service accepts: a service that read this file would exit at start.
    (cli.workdir / ".env").write_text("GATEWAY_VAD_KIND=no-such-vad\nSTT_BEAM_SIZE=0\n")
    logs = tmp_path / "demo-logs"
    result = cli("demo", "--scenario", "booking", "--log-dir", str(logs), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Appointments booked during the call" in result.stdout
    assert "status=booked" in result.stdout
    assert (logs / "gateway.log").is_file() and (logs / "stt.log").is_file()
