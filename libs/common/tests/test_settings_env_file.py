"""Settings read an env file: ``.env`` in the working directory or ``DEALERLINE_ENV_FILE``;
real environment variables win over it, and a ``DEALERLINE_ENV_FILE`` naming no file is a
one-line SettingsError."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dealerline_common.db.engine import database_url_from_env
from dealerline_common.service import WorkerSettings
from dealerline_common.settings import ENV_FILE_VAR, SettingsError, load_settings


class _Worker(WorkerSettings):
    """Shaped as a service's class is: its own prefix, one required variable."""

    model_config = SettingsConfigDict(env_prefix="ENVTEST_")

    api_key: str = Field(description="required")
    model: str = "default-model"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in (ENV_FILE_VAR, "ENVTEST_API_KEY", "ENVTEST_MODEL", "ENVTEST_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return tmp_path


def test_dotenv_in_the_working_directory_is_read(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text(
        "# the operator's file\nENVTEST_API_KEY=from-file\nENVTEST_HTTP_PORT=9123\n"
        "UNRELATED_VARIABLE=ignored\n"
    )
    settings = load_settings(_Worker)
    assert settings.api_key == "from-file"
    assert settings.http_port == 9123  # a ServiceSettings field, through the prefix
    assert settings.model == "default-model"


def test_a_real_environment_variable_wins_over_the_file(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_tmp / ".env").write_text("ENVTEST_API_KEY=from-file\nENVTEST_MODEL=file-model\n")
    monkeypatch.setenv("ENVTEST_MODEL", "env-model")
    settings = load_settings(_Worker)
    assert (settings.api_key, settings.model) == ("from-file", "env-model")
    # An empty variable counts as unset (env_ignore_empty), so the file's value stands.
    monkeypatch.setenv("ENVTEST_MODEL", "")
    assert load_settings(_Worker).model == "file-model"


def test_no_env_file_means_the_environment_alone(in_tmp: Path) -> None:
    with pytest.raises(SettingsError, match="ENVTEST_API_KEY is required"):
        load_settings(_Worker)


def test_dealerline_env_file_names_another_file(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_tmp / ".env").write_text("ENVTEST_API_KEY=from-dotenv\n")
    other = in_tmp / "conf" / "prod.env"
    other.parent.mkdir()
    other.write_text("ENVTEST_API_KEY=from-prod\nDATABASE_URL=sqlite:////srv/dl/dealer.db\n")
    monkeypatch.setenv(ENV_FILE_VAR, str(other))
    assert load_settings(_Worker).api_key == "from-prod"
    # The unprefixed DATABASE_URL every service falls back to reads the same file.
    assert database_url_from_env() == "sqlite+aiosqlite:////srv/dl/dealer.db"
    monkeypatch.setenv(ENV_FILE_VAR, "/dev/null")  # reads none
    with pytest.raises(SettingsError, match="ENVTEST_API_KEY is required"):
        load_settings(_Worker)


def test_a_missing_named_env_file_is_a_clear_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FILE_VAR, str(in_tmp / "prod.env"))
    with pytest.raises(SettingsError) as caught:
        load_settings(_Worker)
    assert str(caught.value) == f"{ENV_FILE_VAR}={in_tmp / 'prod.env'}: no such file"
    monkeypatch.setenv(ENV_FILE_VAR, str(in_tmp))
    with pytest.raises(SettingsError, match="is a folder, not an env file"):
        load_settings(_Worker)
