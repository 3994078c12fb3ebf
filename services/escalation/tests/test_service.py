"""The service process: health and metrics on a real bus, settings errors that name the
variable, a drain that leaves nothing behind."""

from __future__ import annotations

import pytest
from esc_testkit import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    make_settings,
    request,
    running_service,
    seed_session,
    status_log,
)

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import HumanCallStatus
from dealerline_common.settings import SettingsError, load_settings
from dealerline_escalation.settings import EscalationSettings


async def test_service_joins_the_bus_and_reports_health(nats_server: NatsServer) -> None:
    async with running_service(nats_server.url) as run:
        client = run.http
        assert (await client.get("/livez")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"bus": True}
        metrics = (await client.get("/metrics")).content
        assert b"dealerline_bus_reconnects_total" in metrics
        assert b"dealerline_escalation_active" in metrics
        run.service.health.draining = True
        assert (await client.get("/readyz")).status_code == 503
    assert not run.service.bus.is_connected


def test_settings_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [
        "ESCALATION_TWILIO_ACCOUNT_SID",
        "ESCALATION_TWILIO_AUTH_TOKEN",
        "ESCALATION_FROM_NUMBER",
        "ESCALATION_PUBLIC_URL",
        "ESCALATION_GATEWAY_PUBLIC_URL",
    ]
    for var in names:
        monkeypatch.delenv(var, raising=False)
    assert load_settings(EscalationSettings).missing == names

    monkeypatch.setenv("ESCALATION_TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("ESCALATION_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("ESCALATION_FROM_NUMBER", "+18005550100")
    monkeypatch.setenv("ESCALATION_PUBLIC_URL", "https://esc.example.com/")
    monkeypatch.setenv("ESCALATION_GATEWAY_PUBLIC_URL", "https://dealer.example.com")
    settings = load_settings(EscalationSettings)
    assert settings.missing == []
    assert settings.public_url == "https://esc.example.com"  # trailing slash dropped
    assert settings.ring_timeout_s == 45 and settings.watchdog_interval_s == 5.0
    assert settings.confirm_speech_timeout_s == 20.0

    monkeypatch.setenv("ESCALATION_FROM_NUMBER", "5550100")
    monkeypatch.setenv("ESCALATION_PUBLIC_URL", "esc.example.com")
    with pytest.raises(SettingsError) as bad:
        load_settings(EscalationSettings)
    assert "ESCALATION_FROM_NUMBER" in str(bad.value)
    assert "ESCALATION_PUBLIC_URL" in str(bad.value)


async def test_without_twilio_escalations_fail_at_once(
    nats_server: NatsServer, client: Bus
) -> None:
    """A fleet without a phone line still runs: the agent hears at once that nobody can
    be reached (and webhooks, which cannot be verified, are refused)."""
    async with running_service(
        nats_server.url,
        twilio_account_sid=None,
        twilio_auth_token=None,
        public_url=None,
        calls=None,
        use_service_calls=True,
    ) as run:
        assert run.service.esc_settings.missing == [
            "ESCALATION_TWILIO_ACCOUNT_SID",
            "ESCALATION_TWILIO_AUTH_TOKEN",
            "ESCALATION_PUBLIC_URL",
        ]
        await seed_session(run.store, "sess_noline")
        log = await status_log(client, "sess_noline")
        await client.publish_durable(
            subjects.ESCALATION_REQUEST, request("sess_noline"), msg_id="task_1"
        )
        final = await log.wait_for(HumanCallStatus.FAILED, final=True)
        assert final.reason == "exhausted"
        assert [(s[0], s[2]) for s in log.sequence()] == [
            ("calling", None),
            ("failed", "failed"),
            ("calling", None),
            ("failed", "failed"),
            ("failed", "exhausted"),
        ]
        resp = await run.twilio("sess_noline").status(1, "CA1", "ringing", expect=403)
        assert resp.status_code == 403


def test_settings_accept_the_simulator_base_url() -> None:
    settings = make_settings("nats://127.0.0.1:4222", twilio_api_base_url="http://127.0.0.1:9/")
    assert settings.twilio_api_base_url == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="query"):
        make_settings("nats://127.0.0.1:4222", gateway_public_url="https://x.example.com/?a=1")
