"""The ``dealerline`` command run as the operator runs it: the console script of this
virtualenv, as a process (:class:`Cli`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEALERLINE = Path(sys.executable).parent / "dealerline"

# Variables of the test runner's environment that would change what the command does.
_SCRUBBED = (
    "DATABASE_URL",
    "DEALERLINE_ENV_FILE",
    "DASHBOARD_DATABASE_URL",
    "DASHBOARD_NEW_PASSWORD",
)


class Cli:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``dealerline args…`` and return the completed process (text output; a
        non-zero exit does not raise). stdin is ``input`` (else empty, not a terminal)."""
        base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        return subprocess.run(
            [str(DEALERLINE), *args],
            cwd=cwd or self.workdir,
            env={**base, **(env or {})},
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @staticmethod
    def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
        """The single ``error: …`` line a failed command printed (asserted: just one line,
        no traceback)."""
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr, result.stderr
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: "), result.stderr
        return lines[0]
