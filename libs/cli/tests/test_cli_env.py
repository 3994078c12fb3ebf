"""The operator's env file as ``dealerline`` reads it: ``.env`` in the working directory,
``--env-file`` / ``DEALERLINE_ENV_FILE`` instead, real environment variables first."""

from __future__ import annotations

from pathlib import Path

from cli_kit import Cli

from dealerline_common.db.migrate import current_revision, head_revision
from dealerline_common.db.testing import run_sync


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
