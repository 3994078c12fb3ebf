"""Twilio webhooks over real HTTP: signatures, TwiML, tokens, events, readiness."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import nats.errors
import pytest
from gw_testkit import (
    AUTH_TOKEN,
    PUBLIC_URL,
    Running,
    call_params,
    collect,
    make_settings,
    post_signed,
    running_gateway,
    sign,
    stream_parameters,
)
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from dealerline_common import subjects
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import CallStartedEvent, parse_event
from dealerline_gateway.tokens import StreamGrant


def test_known_twilio_vector() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    validator = RequestValidator("12345")
    assert validator.compute_signature(url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert validator.validate(url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not validator.validate(url, {**params, "Digits": "9"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


async def test_incoming_call_answers_connect_stream(gateway: Running) -> None:
    events = await collect(gateway.probe, subjects.ALL_EVENTS)
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, "/api/voice/incoming", call_params())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/xml")
    url, params = stream_parameters(resp.text)
    assert url == "wss://dealer.example.com/api/voice/media-stream"
    assert params["session_id"].startswith("sess_")
    assert params["call_sid"] == "CA0123456789abcdef0123456789abcdef"
    assert params["from"] == "+14158675309" and params["to"] == "+18005551212"
    assert params["resumed"] == "false"
    assert len(params["token"]) >= 24
    msg = await events.get()
    event = parse_event(msg.data)
    assert isinstance(event, CallStartedEvent)
    assert event.session_id == params["session_id"]
    assert msg.subject == subjects.events(params["session_id"])
    assert event.from_masked == "+1*******309"
    # the token is in the KV bucket and admits exactly once
    tokens = gateway.app.state.gateway.tokens
    grant = await tokens.admit(params["token"], params["session_id"], params["call_sid"])
    assert grant is not None and grant.from_number == "+14158675309"
    assert await tokens.admit(params["token"], params["session_id"], params["call_sid"]) is None


async def test_forged_or_missing_signature_is_403(gateway: Running) -> None:
    params = call_params()
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        missing = await client.post("/api/voice/incoming", data=params)
        forged = await post_signed(
            client,
            "/api/voice/incoming",
            params,
            signature=sign(PUBLIC_URL + "/api/voice/incoming", params, "wrong"),
        )
        # signed for other parameters than those sent
        tampered = await client.post(
            "/api/voice/incoming",
            data={**params, "From": "+15550000000"},
            headers={"X-Twilio-Signature": sign(PUBLIC_URL + "/api/voice/incoming", params)},
        )
        # signed over the internal URL instead of the public one
        internal = await client.post(
            "/api/voice/incoming",
            data=params,
            headers={"X-Twilio-Signature": sign(gateway.base + "/api/voice/incoming", params)},
        )
        for path in (
            "/api/voice/return-to-ai?session_id=sess_1",
            "/api/voice/escalate?session_id=sess_1",
        ):
            r = await client.post(path, data=params, headers={"X-Twilio-Signature": "AAAA"})
            assert r.status_code == 403
        metrics = (await client.get("/metrics")).text
    for resp in (missing, forged, tampered, internal):
        assert resp.status_code == 403
        assert "X-Twilio-Signature" in resp.text
    assert 'dealerline_gateway_signature_failures_total{route="incoming"} 4.0' in metrics
    assert 'dealerline_gateway_signature_failures_total{route="escalate"} 1.0' in metrics


async def test_return_to_ai_issues_resumed_stream(gateway: Running) -> None:
    params = call_params()
    path = "/api/voice/return-to-ai?session_id=sess_abc123&reason=human_ended"
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, path, params)
        bad = await post_signed(client, "/api/voice/return-to-ai?session_id=a.b", params)
    assert resp.status_code == 200, resp.text
    _, sp = stream_parameters(resp.text)
    assert sp["session_id"] == "sess_abc123"
    assert sp["resumed"] == "true" and sp["reason"] == "human_ended"
    grant = await gateway.app.state.gateway.tokens.admit(
        sp["token"], "sess_abc123", params["CallSid"]
    )
    assert grant is not None and grant.resumed and grant.reason == "human_ended"
    assert bad.status_code == 400


async def test_escalate_dials_conference(gateway: Running) -> None:
    path = "/api/voice/escalate?session_id=sess_abc123"
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, path, call_params())
    assert resp.status_code == 200
    conf = ET.fromstring(resp.text).find("./Dial/Conference")
    assert conf is not None
    assert conf.text == "support_sess_abc123"
    assert conf.attrib["startConferenceOnEnter"] == "true"
    assert conf.attrib["endConferenceOnExit"] == "true"


async def test_tokens_race_and_mismatch(gateway: Running) -> None:
    tokens = gateway.app.state.gateway.tokens
    token = await tokens.issue(StreamGrant("sess_race", "CA1"))
    assert await tokens.admit(token, "sess_other", "CA1") is None  # wrong session: refused
    assert await tokens.admit(token, "sess_race", "CA2") is None  # wrong call: refused
    results = await asyncio.gather(*(tokens.admit(token, "sess_race", "CA1") for _ in range(5)))
    assert sum(r is not None for r in results) == 1
    assert await tokens.admit("nonsense", "sess_race", "CA1") is None


async def test_readiness_and_draining(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        assert (await client.get("/livez")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        gateway.app.state.gateway.health.draining = True
        assert (await client.get("/readyz")).status_code == 503
        resp = await post_signed(client, "/api/voice/incoming", call_params())
        assert resp.status_code == 503


def test_settings_validation() -> None:
    import pytest

    from dealerline_common.settings import SettingsError, load_settings
    from dealerline_gateway.settings import GatewaySettings

    mp = pytest.MonkeyPatch()
    try:
        mp.delenv("GATEWAY_PUBLIC_URL", raising=False)
        mp.delenv("GATEWAY_TWILIO_AUTH_TOKEN", raising=False)
        with pytest.raises(SettingsError, match="GATEWAY_PUBLIC_URL"):
            load_settings(GatewaySettings)
        mp.setenv("GATEWAY_PUBLIC_URL", "https://dealer.example.com/")
        mp.setenv("GATEWAY_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        mp.setenv("GATEWAY_PLAYBACK_FRAMES_PER_CHUNK", "2")
        s = load_settings(GatewaySettings)
        assert s.public_url == "https://dealer.example.com"
        assert s.stream_url == "wss://dealer.example.com/api/voice/media-stream"
        assert AUTH_TOKEN not in repr(s)
        mp.setenv("GATEWAY_PLAYBACK_FRAMES_PER_CHUNK", "3")
        with pytest.raises(SettingsError, match="GATEWAY_PLAYBACK_FRAMES_PER_CHUNK"):
            load_settings(GatewaySettings)
    finally:
        mp.undo()


async def test_incoming_call_answers_even_when_the_event_publish_hangs(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CallStartedEvent is best-effort: a bus that never acks it must not keep Twilio
    waiting past event_publish_timeout_s; the call is answered and works."""
    async with running_gateway(nats_server, event_publish_timeout_s=0.2) as run:
        never = asyncio.Event()

        async def hanging(subject: str, *args: Any, **kwargs: Any) -> Any:
            await never.wait()

        monkeypatch.setattr(run.bus, "publish_durable", hanging)
        with capture_logs() as logs:
            async with httpx.AsyncClient(base_url=run.base) as client:
                resp = await post_signed(client, "/api/voice/incoming", call_params())
                metrics = (await client.get("/metrics")).text
        assert resp.status_code == 200, resp.text
        _, params = stream_parameters(resp.text)
        tokens = run.app.state.gateway.tokens
        assert await tokens.admit(params["token"], params["session_id"], params["call_sid"])
        warned = [e for e in logs if e["event"] == "event not published in time; answering anyway"]
        assert len(warned) == 1 and warned[0]["session_id"] == params["session_id"]
        assert warned[0]["log_level"] == "warning"
        assert (
            'dealerline_gateway_event_publish_failures_total{event="CallStartedEvent"} 1.0'
            in metrics
        )


async def test_incoming_call_answers_when_the_event_publish_fails(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(subject: str, *args: Any, **kwargs: Any) -> Any:
        raise nats.errors.NoRespondersError

    monkeypatch.setattr(gateway.bus, "publish_durable", failing)
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, "/api/voice/incoming", call_params())
    assert resp.status_code == 200, resp.text
    assert stream_parameters(resp.text)[1]["token"]


def test_event_publish_timeout_setting() -> None:
    s = make_settings("nats://127.0.0.1:4222")
    assert s.event_publish_timeout_s == 2.0
