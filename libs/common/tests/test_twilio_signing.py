"""The one signature check (dealerline_common.twilio_signing.check_signature) and the
settings every service that checks signatures inherits (TwilioSigningSettings), read
under the service's own environment prefix."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from twilio.request_validator import RequestValidator

from dealerline_common.settings import SettingsError, load_settings
from dealerline_common.twilio_signing import TwilioSigningSettings, check_signature
from dealerline_common.twilio_urls import HMAC_SHA1, HMAC_SHA256, SigningKeys

TOKEN = "auth-token-0123456789"
SHARED = "shared-key-secret-abcdef"
PARAMS = {"CallSid": "CA1", "From": "+14158675309", "To": "+18005551212"}
URL = "https://example.com/dealer1/api/voice/incoming"
OTHER = "https://example.com/api/voice/incoming"
BOTH = SigningKeys("both", TOKEN, SHARED, "webhooks_sharedkey_1")


def _sig(url: str, secret: str = TOKEN, algorithm: str = HMAC_SHA1) -> str:
    return str(RequestValidator(secret).compute_signature(url, PARAMS, algorithm))


def test_a_signature_over_any_of_the_urls_is_accepted() -> None:
    headers = {"x-twilio-signature": _sig(URL)}
    assert check_signature(BOTH, headers, [OTHER, URL], PARAMS)
    assert not check_signature(BOTH, headers, [OTHER], PARAMS)
    assert not check_signature(BOTH, headers, [URL], PARAMS | {"Digits": "1"})
    assert not check_signature(BOTH, {}, [URL], PARAMS)  # no signature
    assert not check_signature(BOTH, {"x-twilio-signature": ""}, [URL], PARAMS)


def test_the_settings_header_picks_only_a_configured_key() -> None:
    sha256 = {
        "x-twilio-signature": _sig(URL, SHARED, HMAC_SHA256),
        "x-twilio-webhooks-signature-settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }
    assert check_signature(BOTH, sha256, [URL], PARAMS)
    assert not check_signature(SigningKeys("sha1", TOKEN, SHARED), sha256, [URL], PARAMS)
    other_id = sha256 | {"x-twilio-webhooks-signature-settings": "key=k2,algorithm=HMAC_SHA256"}
    assert not check_signature(BOTH, other_id, [URL], PARAMS)
    sha1 = {"x-twilio-signature": _sig(URL)}
    assert not check_signature(SigningKeys("sha256", TOKEN, SHARED), sha1, [URL], PARAMS)


def test_the_media_stream_handshake_is_signed_without_params() -> None:
    wss = "wss://example.com/api/voice/media-stream"
    signature = str(RequestValidator(TOKEN).compute_signature(wss, {}, HMAC_SHA1))
    assert check_signature(BOTH, {"x-twilio-signature": signature}, [wss], {})


class _Svc(TwilioSigningSettings):
    model_config = SettingsConfigDict(env_prefix="SVC_")

    public_url: str = Field(description="required here, as in the gateway")


def test_settings_are_read_under_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SVC_PUBLIC_URL": "https://example.com/dealer1",
        "SVC_TWILIO_AUTH_TOKEN": TOKEN,
        "SVC_TWILIO_SIGNATURE_ALGORITHM": "both",
        "SVC_TWILIO_WEBHOOK_KEY": SHARED,
        "SVC_TWILIO_WEBHOOK_KEY_ID": "webhooks_sharedkey_1",
        "SVC_TRUST_FORWARDED_HEADERS": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings(_Svc)
    assert s.signing_keys == BOTH
    assert SHARED not in repr(s) and TOKEN not in repr(s)
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "proxy.example.net"}
    assert s.signed_urls("/api/voice/incoming", "a=1", headers) == [
        URL + "?a=1",
        "https://proxy.example.net/dealer1/api/voice/incoming?a=1",
    ]
    assert s.signed_urls("/api/voice/media-stream", "", {}, websocket=True) == [
        "wss://example.com/dealer1/api/voice/media-stream"
    ]


def test_sha256_without_the_key_names_the_prefixed_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SVC_PUBLIC_URL", "https://example.com")
    monkeypatch.setenv("SVC_TWILIO_SIGNATURE_ALGORITHM", "sha256")
    with pytest.raises(SettingsError) as err:
        load_settings(_Svc)
    assert "SVC_TWILIO_SIGNATURE_ALGORITHM=sha256 or both needs SVC_TWILIO_WEBHOOK_KEY" in str(
        err.value
    )
    keys = load_settings(_Svc, twilio_webhook_key=SecretStr(SHARED)).signing_keys
    assert keys == SigningKeys("sha256", None, SHARED, None)
