"""The escalation service's webhook signatures follow the one rule the gateway follows
(dealerline_common.twilio_urls), over real HTTP with twilio-python's RequestValidator:
behind a proxy with a path prefix, with forwarded headers, and HMAC-SHA256 when configured."""

from __future__ import annotations

import pytest
from esc_testkit import AUTH_TOKEN, running_service
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from dealerline_common.local_nats import NatsServer
from dealerline_common.settings import SettingsError, load_settings
from dealerline_escalation.settings import EscalationSettings

PATH = "/api/voice/human-status?session_id=sess_sig&task_id=t&attempt=1"
PARAMS = {"CallSid": "CA1", "CallStatus": "ringing", "SequenceNumber": "0"}
SHARED_KEY = "webhooks-shared-key-secret-esc-0123"


def _sha1(url: str) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, PARAMS)}


def _sha256(url: str, key_id: str = "webhooks_sharedkey_1") -> dict[str, str]:
    sig = RequestValidator(SHARED_KEY).compute_signature(url, PARAMS, "HMAC_SHA256")
    return {
        "X-Twilio-Signature": sig,
        "X-Twilio-Webhooks-Signature-Settings": f"key={key_id},algorithm=HMAC_SHA256",
    }


async def test_behind_a_path_prefix_proxy_the_public_url_is_checked(
    nats_server: NatsServer,
) -> None:
    """Public URL https://example.com/dealer1/, the proxy strips /dealer1: Twilio signed
    the prefixed URL; forwarded headers keep the prefix or name it (X-Forwarded-Prefix)."""
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "calls.example.org"}
    cases = [
        (_sha1("https://example.com/dealer1" + PATH), 204),
        ({**fwd, **_sha1("https://calls.example.org/dealer1" + PATH)}, 204),
        (
            {
                **fwd,
                "X-Forwarded-Prefix": "/shop7",
                **_sha1("https://calls.example.org/shop7" + PATH),
            },
            204,
        ),
        (_sha1("https://example.com" + PATH), 403),  # the prefix is part of the URL
        ({**fwd, **_sha1("https://calls.example.org" + PATH)}, 403),
    ]
    async with running_service(
        nats_server.url, public_url="https://example.com/dealer1/", trust_forwarded_headers=True
    ) as run:
        for headers, status in cases:
            resp = await run.http.post(PATH, data=PARAMS, headers=headers)
            assert resp.status_code == status, (headers, resp.text)


async def test_no_public_url_but_a_trusted_proxy_naming_the_prefix(
    nats_server: NatsServer,
) -> None:
    """A service reached only through the proxy: the forwarded URL, with its prefix."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "calls.example.org",
        "X-Forwarded-Prefix": "/esc",
        **_sha1("https://calls.example.org/esc" + PATH),
    }
    async with running_service(
        nats_server.url, public_url=None, trust_forwarded_headers=True
    ) as run:
        assert (await run.http.post(PATH, data=PARAMS, headers=headers)).status_code == 204


@pytest.mark.parametrize("algorithm", ["sha256", "both"])
async def test_sha256_signatures_when_configured(nats_server: NatsServer, algorithm: str) -> None:
    url = "https://esc.example.com" + PATH
    async with running_service(
        nats_server.url,
        twilio_signature_algorithm=algorithm,
        twilio_webhook_key=SecretStr(SHARED_KEY),
        twilio_webhook_key_id="webhooks_sharedkey_1",
    ) as run:
        ok = await run.http.post(PATH, data=PARAMS, headers=_sha256(url))
        sha1 = await run.http.post(PATH, data=PARAMS, headers=_sha1(url))
        other_key = await run.http.post(PATH, data=PARAMS, headers=_sha256(url, "other"))
        tampered = await run.http.post(
            PATH, data={**PARAMS, "CallStatus": "completed"}, headers=_sha256(url)
        )
        metrics = (await run.http.get("/metrics")).text
    assert ok.status_code == 204, ok.text
    assert sha1.status_code == (204 if algorithm == "both" else 403)
    assert other_key.status_code == tampered.status_code == 403
    failed = 2 if algorithm == "both" else 3
    assert (
        f'dealerline_escalation_signature_failures_total{{route="human-status"}} {failed}.0'
        in metrics
    )


async def test_sha1_only_refuses_a_sha256_claim(nats_server: NatsServer) -> None:
    async with running_service(nats_server.url) as run:
        resp = await run.http.post(
            PATH, data=PARAMS, headers=_sha256("https://esc.example.com" + PATH)
        )
    assert resp.status_code == 403


def test_sha256_needs_the_shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCALATION_TWILIO_SIGNATURE_ALGORITHM", "sha256")
    monkeypatch.delenv("ESCALATION_TWILIO_WEBHOOK_KEY", raising=False)
    with pytest.raises(SettingsError, match="ESCALATION_TWILIO_WEBHOOK_KEY"):
        load_settings(EscalationSettings)
    monkeypatch.setenv("ESCALATION_TWILIO_WEBHOOK_KEY", SHARED_KEY)
    s = load_settings(EscalationSettings)
    assert s.signing_keys.shared_key == SHARED_KEY and SHARED_KEY not in repr(s)
