"""A demo, test or bench fleet never reads the operator's ``.env`` (it could hold a real
Twilio account that texts real people); ``make run``'s fleet does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dealerline_cli.fleet import SERVICES, Fleet
from dealerline_common.settings import ENV_FILE_VAR, ServiceSettings


@pytest.fixture
def operator_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding an operator's .env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_FILE_VAR, raising=False)
    monkeypatch.delenv("DL_LOG_LEVEL", raising=False)
    (tmp_path / ".env").write_text("DL_LOG_LEVEL=from-the-operators-file\n")
    return tmp_path


def test_a_fleets_services_read_no_env_file(
    operator_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServiceSettings().log_level == "from-the-operators-file"  # the file is there
    env = Fleet()._env_for(SERVICES[0], 8080)
    assert env[ENV_FILE_VAR] == os.devnull
    monkeypatch.setenv(ENV_FILE_VAR, env[ENV_FILE_VAR])
    assert ServiceSettings().log_level == "INFO"


def test_make_runs_fleet_reads_the_operators_env_file(operator_env: Path) -> None:
    env = Fleet(env_file=None)._env_for(SERVICES[0], 8080)
    assert ENV_FILE_VAR not in env
    assert ServiceSettings().log_level == "from-the-operators-file"
