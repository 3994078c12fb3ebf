import json

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from dealerline_common.logs import configure_logging, get_logger, mask_phone, mask_text
from dealerline_common.metrics import Metrics
from dealerline_common.settings import ServiceSettings, SettingsError, load_settings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", env_ignore_empty=True, extra="ignore")
    public_url: str
    auth_token: SecretStr
    port: int = 1


def test_missing_settings_are_named_by_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMO_PUBLIC_URL", raising=False)
    monkeypatch.setenv("DEMO_AUTH_TOKEN", "x")
    with pytest.raises(SettingsError, match="DEMO_PUBLIC_URL is required"):
        load_settings(DemoSettings)


def test_bad_values_are_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PUBLIC_URL", "https://x")
    monkeypatch.setenv("DEMO_AUTH_TOKEN", "x")
    monkeypatch.setenv("DEMO_PORT", "not-a-number")
    with pytest.raises(SettingsError, match="DEMO_PORT"):
        load_settings(DemoSettings)


def test_settings_come_from_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PUBLIC_URL", "https://dealer.example.com")
    monkeypatch.setenv("DEMO_AUTH_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("DEMO_NATS_URL", "nats://n:4222")
    monkeypatch.setenv("DEMO_PORT", "")  # empty is ignored: the default stays
    s = load_settings(DemoSettings)
    assert s.nats_url == "nats://n:4222"
    assert s.port == 1
    assert "s3cr3t-value" not in repr(s)
    assert s.auth_token.get_secret_value() == "s3cr3t-value"


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+14158675309", "+1*******309"), ("415-867-5309", "4******309"), ("", "")],
)
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def test_mask_text_hides_numbers_in_free_text_but_keeps_other_digits() -> None:
    text = "caller +14158675309 called (415) 867-5309 about order 12345 at 9:30"
    out = mask_text(text)
    assert "8675309" not in out and "867-5309" not in out
    assert "12345" in out and "9:30" in out


def test_logs_never_print_a_whole_phone_number(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", json=True)
    get_logger("t").info(
        "incoming call from +14158675309", caller="+14158675309", extra={"n": ["+18005551212"]}
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "8675309" not in line and "5551212" not in line
    assert record["caller"] == "+1*******309"
    assert record["service"] == "test"


def test_metrics_registry_is_per_service() -> None:
    a, b = Metrics(), Metrics()
    a.counter("calls_total", "calls").inc()
    b.counter("calls_total", "calls")  # same name in another registry does not clash
    assert b"dealerline_calls_total 1.0" in a.render()
    assert b"dealerline_calls_total 0.0" in b.render()
