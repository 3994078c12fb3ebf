"""The data folder of ``make run``: secrets generated once, stored 0600 and reused on the
next start; a secret configured in the environment wins and is never written down."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dealerline_cli.state_dir import DASHBOARD_SECRET, TWILIO_TOKEN, DataDir, default_data_dir

CONFIGURED = (
    "DASHBOARD_AUTH_SECRET",
    "GATEWAY_TWILIO_AUTH_TOKEN",
    "ESCALATION_TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN",
)


@pytest.fixture(autouse=True)
def no_configured_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIGURED:
        monkeypatch.delenv(name, raising=False)


def test_secrets_are_generated_once_stored_private_and_reused(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "var")
    first = data.secret(DASHBOARD_SECRET)
    token = data.secret(TWILIO_TOKEN)
    assert len(first.value) == 64 and len(token.value) == 32
    assert first.value != token.value
    assert stat.S_IMODE(data.secrets_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.root.stat().st_mode) == 0o700
    assert (data.root / "log").is_dir()

    again = DataDir.open(tmp_path / "var")  # the next start
    assert again.secret(DASHBOARD_SECRET).value == first.value
    assert again.secret(TWILIO_TOKEN).value == token.value
    assert first.value not in repr(first)


def test_a_configured_secret_wins_and_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataDir.open(tmp_path)
    stored = data.secret(TWILIO_TOKEN).value
    monkeypatch.setenv("GATEWAY_TWILIO_AUTH_TOKEN", "the-real-twilio-token")
    monkeypatch.setenv("DASHBOARD_AUTH_SECRET", "x" * 40)
    token = data.secret(TWILIO_TOKEN)
    assert (token.value, token.source) == ("the-real-twilio-token", "$GATEWAY_TWILIO_AUTH_TOKEN")
    assert data.secret(DASHBOARD_SECRET).value == "x" * 40
    written = data.secrets_path.read_text()
    assert "the-real-twilio-token" not in written and "x" * 40 not in written
    monkeypatch.delenv("GATEWAY_TWILIO_AUTH_TOKEN")
    assert data.secret(TWILIO_TOKEN).value == stored


def test_a_secrets_file_copied_in_with_a_loose_mode_is_tightened(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path)
    data.secrets_path.write_text("DASHBOARD_AUTH_SECRET=" + "s" * 64 + "\n")
    data.secrets_path.chmod(0o644)
    assert data.secret(DASHBOARD_SECRET).value == "s" * 64
    assert stat.S_IMODE(data.secrets_path.stat().st_mode) == 0o600


def test_distinct_folders_keep_distinct_state(tmp_path: Path) -> None:
    a, b = DataDir.open(tmp_path / "a"), DataDir.open(tmp_path / "b")
    assert a.state_namespace != b.state_namespace
    assert a.state_namespace == DataDir.open(tmp_path / "a").state_namespace
    assert a.database_url == f"sqlite+aiosqlite:///{tmp_path / 'a' / 'dealerline.db'}"


def test_the_data_folder_defaults_to_var_in_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEALERLINE_DATA_DIR", raising=False)
    default = default_data_dir()
    assert default.name == "var" and (default.parent / "uv.lock").is_file()
    monkeypatch.setenv("DEALERLINE_DATA_DIR", "/srv/dealerline")
    assert default_data_dir() == Path("/srv/dealerline")


def test_a_data_folder_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="cannot use the data folder"):
        DataDir.open(blocker / "var")
