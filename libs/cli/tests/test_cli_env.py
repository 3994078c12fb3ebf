"""The operator's env file as ``dealerline`` reads it: ``.env`` in the working directory,
``--env-file`` / ``DEALERLINE_ENV_FILE`` instead, real environment variables first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_kit import Cli

from dealerline_common.db.migrate import current_revision, head_revision
from dealerline_common.db.testing import run_sync
from dealerline_common.settings import ENV_FILE_VAR


def _migrated(path: Path) -> bool:
    return path.is_file() and run_sync(current_revision(f"sqlite:///{path}")) == head_revision()


def test_dotenv_in_the_working_directory_names_the_database(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "from-dotenv.db"
    (cli.workdir / ".env").write_text(
        f"# the operator's settings\nDATABASE_URL=sqlite:///{target}\n"
    )
    result = cli("migrate")
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    assert _migrated(target)


def test_a_real_environment_variable_wins_over_dotenv(cli: Cli, tmp_path: Path) -> None:
    from_file, from_env = tmp_path / "from-dotenv.db", tmp_path / "from-env.db"
    (cli.workdir / ".env").write_text(f"DATABASE_URL=sqlite:///{from_file}\n")
    result = cli("migrate", env={"DATABASE_URL": f"sqlite:///{from_env}"})
    assert result.returncode == 0, result.stderr
    assert _migrated(from_env) and not from_file.exists()


def test_env_file_option_and_variable_name_another_file(cli: Cli, tmp_path: Path) -> None:
    (cli.workdir / ".env").write_text(f"DATABASE_URL=sqlite:///{tmp_path / 'dotenv.db'}\n")
    prod, staging = tmp_path / "prod.env", tmp_path / "staging.env"
    prod.write_text(f"DATABASE_URL=sqlite:///{tmp_path / 'prod.db'}\n")
    staging.write_text(f"DATABASE_URL=sqlite:///{tmp_path / 'staging.db'}\n")
    assert cli("--env-file", str(prod), "migrate").returncode == 0
    assert cli("migrate", env={"DEALERLINE_ENV_FILE": str(staging)}).returncode == 0
    assert _migrated(tmp_path / "prod.db") and _migrated(tmp_path / "staging.db")
    assert not (tmp_path / "dotenv.db").exists()


def test_a_missing_dealerline_env_file_is_a_one_line_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("migrate", env={"DEALERLINE_ENV_FILE": str(tmp_path / "typo.env")})
    assert result.returncode == 2
    assert "DEALERLINE_ENV_FILE=" in cli.one_line_error(result)
    assert not list(tmp_path.glob("*.db"))


# The unprefixed names `dealerline run` reads itself (and hands to the right services).
_RUN_READS = (
    "DEALERLINE_DATA_DIR",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "DATABASE_URL",
    "REDIS_URL",
)
_SETTINGS = {
    "GATEWAY_": "dealerline_gateway.settings:GatewaySettings",
    "STT_": "dealerline_stt.settings:SttSettings",
    "TTS_": "dealerline_tts.settings:TtsSettings",
    "AGENT_": "dealerline_agent.settings:AgentSettings",
    "ESCALATION_": "dealerline_escalation.settings:EscalationSettings",
    "DASHBOARD_": "dealerline_dashboard.settings:DashboardSettings",
    "AFTERCALL_": "dealerline_aftercall.settings:AftercallSettings",
}


def test_env_example_names_only_real_settings() -> None:
    """Every variable .env.example names (set or commented out) is one a service's settings
    class has, or one `dealerline run` reads; the file parses as an env file."""
    import importlib
    import re

    from dotenv import dotenv_values

    example = Path(__file__).resolve().parents[3] / ".env.example"
    assert dotenv_values(example)["AGENT_LLM_MODEL"]
    names = set(re.findall(r"(?:^|#\s*|\s)([A-Z][A-Z0-9_]+)=", example.read_text(), re.M))
    cli_source = "".join(
        p.read_text() for p in (Path(__file__).resolve().parents[1] / "src").rglob("*.py")
    )
    unknown = []
    for name in sorted(names):
        prefix = next((p for p in _SETTINGS if name.startswith(p)), None)
        if prefix is None:
            if name not in _RUN_READS or f'"{name}"' not in cli_source:
                unknown.append(name)
            continue
        module, cls = _SETTINGS[prefix].split(":")
        fields = getattr(importlib.import_module(module), cls).model_fields
        if name.removeprefix(prefix).lower() not in fields:
            unknown.append(name)
    assert len(names) > 30 and not unknown, unknown


@pytest.mark.parametrize(
    ("module", "prefix"),
    [
        ("dealerline_gateway", "GATEWAY_"),
        ("dealerline_stt", "STT_"),
        ("dealerline_tts", "TTS_"),
        ("dealerline_agent", "AGENT_"),
        ("dealerline_escalation", "ESCALATION_"),
        ("dealerline_dashboard", "DASHBOARD_"),
        ("dealerline_aftercall", "AFTERCALL_"),
    ],
)
def test_every_service_started_on_its_own_reads_dotenv_under_the_environment(
    tmp_path: Path, module: str, prefix: str
) -> None:
    """Each service, started as ``python -m`` in a folder with a ``.env``, takes its setting
    from the file, and a real environment variable over the file (told apart here by the
    two values' different validation errors: the service stops at its settings)."""
    (tmp_path / ".env").write_text(f"{prefix}HTTP_PORT=not-a-port\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env.pop(ENV_FILE_VAR, None)

    def start(**extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", module],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        return done.stderr

    assert f"{prefix}HTTP_PORT: Input should be a valid integer" in start()
    assert f"{prefix}HTTP_PORT: Input should be greater than or equal to 0" in start(
        **{f"{prefix}HTTP_PORT": "-5"}
    )
