"""Trust only the right caller (issue 16, webhooks and streams), through the real gateway
app in uvicorn on a real nats-server, with twilio-python's RequestValidator signing:

- a CallSid is admitted once: a replayed signed /incoming, on any replica, gets the same
  answer (same session, same one-time token), never a second working token;
- a media-stream handshake without a valid X-Twilio-Signature is refused (a setting
  relaxes it for local development only);
- the caller's number and CallSid come from the token's grant, never from
  start.customParameters; a stream naming another call is refused;
- behind a proxy with a path prefix, the signed URL follows the one common rule;
- HMAC-SHA256 signatures (a Webhooks Rule's SharedKey) when configured.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from gw_testkit import (
    AUTH_TOKEN,
    CALLER,
    DEALER,
    PUBLIC_URL,
    Running,
    call_params,
    collect,
    make_settings,
    post_signed,
    running_gateway,
    sign,
    start_call,
    stream_parameters,
    stream_signature,
    twilio_stream,
)
from pydantic import SecretStr
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dealerline_common import subjects
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import StreamStarted, parse_control
from dealerline_common.settings import SettingsError, load_settings
from dealerline_gateway.settings import GatewaySettings

CALL = "CA0123456789abcdef0123456789abcdef"
SHARED_KEY = "webhooks-shared-key-secret-0123"
INCOMING = "/api/voice/incoming"


async def _started(control: Any, within_s: float = 15.0) -> StreamStarted:
    async def find() -> StreamStarted:
        while True:
            parsed = parse_control((await control.get()).data)
            if isinstance(parsed, StreamStarted):
                return parsed

    return await asyncio.wait_for(find(), within_s)


async def _metrics(run: Running) -> str:
    async with httpx.AsyncClient(base_url=run.base) as client:
        return (await client.get("/metrics")).text


async def _refused_with(fake: Any) -> int | None:
    await asyncio.wait_for(fake.closed.wait(), 10)
    return fake.close_code  # type: ignore[no-any-return]


# ----------------------------------------------------------------- 1. admitted once


async def test_a_replayed_incoming_gets_the_same_answer_and_no_second_token(
    gateway: Running,
) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        first = await post_signed(client, INCOMING, call_params(CALL))
        replayed = await post_signed(client, INCOMING, call_params(CALL))
    assert first.status_code == replayed.status_code == 200
    assert replayed.text == first.text  # same session, same token
    _, params = stream_parameters(first.text)
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(params)
        assert (await _started(control)).session_id == params["session_id"]
        # the token of the (re-served) answer is spent: a replay opens nothing
        async with httpx.AsyncClient(base_url=gateway.base) as client:
            again = await post_signed(client, INCOMING, call_params(CALL))
        assert again.text == first.text
        async with twilio_stream(gateway, CALL) as intruder:
            await intruder.start(stream_parameters(again.text)[1])
            assert await _refused_with(intruder) == 1008
    text = await _metrics(gateway)
    assert "dealerline_gateway_calls_total 1.0" in text
    assert 'dealerline_gateway_streams_rejected_total{reason="bad_token"} 1.0' in text
    # Draining, the replica refuses new calls but still gives an admitted one its answer.
    gateway.app.state.gateway.health.draining = True
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        retried = await post_signed(client, INCOMING, call_params(CALL))
        refused = await post_signed(client, INCOMING, call_params(CALL.replace("CA0", "CA9")))
    assert (retried.status_code, retried.text) == (200, first.text)
    assert refused.status_code == 503


async def test_a_call_is_admitted_once_across_replicas(nats_server: NatsServer) -> None:
    """Concurrent and repeated /incoming for one CallSid on two replicas sharing the bus:
    one answer, one call counted, one token issued that works."""
    async with running_gateway(nats_server) as a, running_gateway(nats_server) as b:

        async def ask(run: Running) -> str:
            async with httpx.AsyncClient(base_url=run.base) as client:
                resp = await post_signed(client, INCOMING, call_params(CALL))
            assert resp.status_code == 200, resp.text
            return resp.text

        answers = await asyncio.gather(*(ask(r) for r in (a, b, a, b, a, b)))
        assert len(set(answers)) == 1
        counted = [await _metrics(r) for r in (a, b)]
        assert sum("dealerline_gateway_calls_total 1.0" in t for t in counted) == 1
        assert sum("dealerline_gateway_calls_total 0.0" in t for t in counted) == 1
        _, params = stream_parameters(answers[0])
        grant = await b.app.state.gateway.tokens.admit(params["token"], params["session_id"], CALL)
        assert grant is not None and grant.from_number == CALLER
        # a different call is a different admission
        other = await start_call(a, "CA" + "e" * 32)
        assert other["session_id"] != params["session_id"]


async def test_a_missing_or_oversized_call_sid_is_a_clear_400(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        for call_sid in ("", "CA" + "0" * 100):
            resp = await post_signed(client, INCOMING, {**call_params(), "CallSid": call_sid})
            assert resp.status_code == 400 and "CallSid is required" in resp.text


# ----------------------------------------------------------------- 2. signed handshake


async def test_a_stream_handshake_without_a_valid_signature_is_refused(gateway: Running) -> None:
    for headers in ({}, {"X-Twilio-Signature": sign(PUBLIC_URL, {}, "wrong-token")}):
        with pytest.raises(InvalidStatus) as refused:
            await connect(gateway.ws_url, additional_headers=headers)
        assert refused.value.response.status_code == 403
    # signed over the http URL or the internal one instead of the public wss one
    for url in ("https://dealer.example.com/api/voice/media-stream", gateway.ws_url):
        with pytest.raises(InvalidStatus):
            await connect(gateway.ws_url, additional_headers={"X-Twilio-Signature": sign(url, {})})
    ws = await connect(gateway.ws_url, additional_headers=stream_signature())
    await ws.close()
    text = await _metrics(gateway)
    assert 'dealerline_gateway_signature_failures_total{route="media-stream"} 4.0' in text


async def test_unsigned_streams_only_when_relaxed_for_development(
    nats_server: NatsServer,
) -> None:
    assert make_settings("nats://127.0.0.1:4222").allow_unsigned_streams is False
    async with running_gateway(nats_server, allow_unsigned_streams=True) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        params = await start_call(run, CALL)
        async with twilio_stream(run, CALL, headers={}) as fake:
            await fake.start(params)  # unsigned, yet with the one-time token: served
            assert (await _started(control)).session_id == params["session_id"]
        # a forged signature is still refused, and so is an unsigned stream without a token
        with pytest.raises(InvalidStatus):
            await connect(run.ws_url, additional_headers={"X-Twilio-Signature": "AAAA"})
        async with twilio_stream(run, CALL, headers={}) as fake:
            await fake.start({**params, "token": "guessed"})
            assert await _refused_with(fake) == 1008


# ----------------------------------------------------------------- 3. the grant is the truth


async def test_the_caller_comes_from_the_grant_not_custom_parameters(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    params = await start_call(gateway, CALL)
    forged = {**params, "from": "+15550001111", "to": "+15550002222"}
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(forged)
        started = await _started(control)
    assert started.from_number == CALLER and started.to_number == DEALER
    assert started.call_sid == CALL


async def test_a_stream_naming_another_call_is_refused_and_spends_no_token(
    gateway: Running,
) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    params = await start_call(gateway, CALL)
    # start.callSid of another call
    async with twilio_stream(gateway, "CA" + "9" * 32) as fake:
        await fake.start(params)
        assert await _refused_with(fake) == 1008
    # the right start.callSid, but a custom call_sid naming another call
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start({**params, "call_sid": "CA" + "9" * 32})
        assert await _refused_with(fake) == 1008
    # no start.callSid at all (only the custom parameter says which call)
    async with twilio_stream(gateway, CALL) as fake:
        await fake.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await fake.send(
            {
                "event": "start",
                "streamSid": fake.stream_sid,
                "start": {"streamSid": fake.stream_sid, "customParameters": params},
            }
        )
        assert await _refused_with(fake) == 1008
    # none of them spent the token: Twilio's own stream is still admitted
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(params)
        assert (await _started(control)).session_id == params["session_id"]
    text = await _metrics(gateway)
    assert 'dealerline_gateway_streams_rejected_total{reason="call_mismatch"} 2.0' in text
    assert 'dealerline_gateway_streams_rejected_total{reason="no_call_sid"} 1.0' in text


# ----------------------------------------------------------------- 4. behind a path prefix


async def test_behind_a_path_prefix_proxy_the_public_url_is_checked(
    nats_server: NatsServer,
) -> None:
    """Public URL https://example.com/dealer1/, the proxy strips /dealer1: Twilio signed
    the prefixed URL, the app sees /api/voice/...; with trusted forwarded headers the
    prefix is kept (or taken from X-Forwarded-Prefix) on the forwarded host."""
    async with running_gateway(
        nats_server, public_url="https://example.com/dealer1/", trust_forwarded_headers=True
    ) as run:
        assert run.settings.stream_url == "wss://example.com/dealer1/api/voice/media-stream"
        params = call_params(CALL)
        fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "calls.example.org"}
        cases = [
            ("https://example.com/dealer1" + INCOMING, {}, 200),
            ("https://calls.example.org/dealer1" + INCOMING, fwd, 200),
            (
                "https://calls.example.org/shop7" + INCOMING,
                {**fwd, "X-Forwarded-Prefix": "/shop7"},
                200,
            ),
            ("https://example.com" + INCOMING, {}, 403),  # the prefix is part of the URL
            ("https://calls.example.org" + INCOMING, fwd, 403),
        ]
        async with httpx.AsyncClient(base_url=run.base) as client:
            for url, headers, status in cases:
                resp = await client.post(
                    INCOMING,
                    data=params,
                    headers={**headers, "X-Twilio-Signature": sign(url, params)},
                )
                assert resp.status_code == status, (url, resp.text)
        ws = await connect(
            run.ws_url,
            additional_headers={
                "X-Twilio-Signature": sign("wss://example.com/dealer1/api/voice/media-stream", {})
            },
        )
        await ws.close()
        with pytest.raises(InvalidStatus):
            await connect(
                run.ws_url,
                additional_headers={
                    "X-Twilio-Signature": sign("wss://example.com/api/voice/media-stream", {})
                },
            )


# ----------------------------------------------------------------- 5. HMAC-SHA256


def _sha256(url: str, params: dict[str, str]) -> dict[str, str]:
    sig = RequestValidator(SHARED_KEY).compute_signature(url, params, "HMAC_SHA256")
    return {
        "X-Twilio-Signature": sig,
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }


@pytest.mark.parametrize("algorithm", ["sha256", "both"])
async def test_sha256_signatures_when_configured(nats_server: NatsServer, algorithm: str) -> None:
    async with running_gateway(
        nats_server,
        twilio_signature_algorithm=algorithm,
        twilio_webhook_key=SecretStr(SHARED_KEY),
        twilio_webhook_key_id="webhooks_sharedkey_1",
    ) as run:
        params = call_params(CALL)
        url = PUBLIC_URL + INCOMING
        async with httpx.AsyncClient(base_url=run.base) as client:
            ok = await client.post(INCOMING, data=params, headers=_sha256(url, params))
            sha1 = await post_signed(client, INCOMING, params)
            tampered = await client.post(
                INCOMING, data={**params, "From": "+15550000000"}, headers=_sha256(url, params)
            )
        assert ok.status_code == 200, ok.text
        assert sha1.status_code == (200 if algorithm == "both" else 403)
        assert tampered.status_code == 403
        stream = "wss://dealer.example.com/api/voice/media-stream"
        ws = await connect(run.ws_url, additional_headers=_sha256(stream, {}))
        await ws.close()


async def test_sha1_only_refuses_a_sha256_claim(gateway: Running) -> None:
    params = call_params(CALL)
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await client.post(
            INCOMING, data=params, headers=_sha256(PUBLIC_URL + INCOMING, params)
        )
    assert resp.status_code == 403


def test_sha256_needs_the_shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", PUBLIC_URL)
    monkeypatch.setenv("GATEWAY_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("GATEWAY_TWILIO_SIGNATURE_ALGORITHM", "sha256")
    monkeypatch.delenv("GATEWAY_TWILIO_WEBHOOK_KEY", raising=False)
    with pytest.raises(SettingsError, match="GATEWAY_TWILIO_WEBHOOK_KEY"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("GATEWAY_TWILIO_WEBHOOK_KEY", SHARED_KEY)
    s = load_settings(GatewaySettings)
    assert s.signing_keys.shared_key == SHARED_KEY and SHARED_KEY not in repr(s)
    monkeypatch.setenv("GATEWAY_TWILIO_SIGNATURE_ALGORITHM", "md5")
    with pytest.raises(SettingsError, match="GATEWAY_TWILIO_SIGNATURE_ALGORITHM"):
        load_settings(GatewaySettings)


async def test_the_phone_simulator_places_a_sha256_call_behind_a_prefix(
    nats_server: NatsServer,
) -> None:
    """Twilio's side played by the phone simulator (dealerline_sim) through a proxy that
    strips /dealer1 and says so: HMAC-SHA256 webhook and stream handshake, admitted."""
    from dealerline_sim.phone import PhoneSimulator

    async with running_gateway(
        nats_server,
        public_url="https://example.com/dealer1",
        trust_forwarded_headers=True,
        twilio_signature_algorithm="sha256",
        twilio_webhook_key=SecretStr(SHARED_KEY),
        twilio_webhook_key_id="webhooks_sharedkey_1",
    ) as run:
        control = await collect(run.probe, subjects.ALL_CONTROL)
        async with PhoneSimulator(
            run.base,
            "https://example.com/dealer1",
            AUTH_TOKEN,
            webhook_key=SHARED_KEY,
            webhook_key_id="webhooks_sharedkey_1",
            forwarded_headers=True,
        ) as sim:
            call = await sim.place_call(CALLER, DEALER)
            started = await _started(control)
            assert started.call_sid == call.call_sid and started.from_number == CALLER
            await call.hangup()
