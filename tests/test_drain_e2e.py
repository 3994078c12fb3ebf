"""SIGTERM through the real fleet, as Kubernetes stops pods: a call goes on while an STT
worker holding its turn drains (the turn finishes there, later turns go to the second
worker) and while the gateway drains (it refuses new calls and streams, keeps serving
the call in progress); both exit 0 within their grace period."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dealerline_cli.fleet import SERVICES, Fleet, LlmChoice
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import Transcript, loads
from dealerline_sim.demo import word_error_rate
from dealerline_sim.phone import PhoneSimulator, new_sid
from dealerline_sim.twiml import parse_connect_stream

pytestmark = pytest.mark.e2e

LINES = [
    "Hi, I would like to book an oil change for my car, it is a twenty nineteen Toyota Camry.",
    "Tuesday morning would be great, around nine.",
    "How much does a tire rotation cost?",
]
CALLER, DEALER = "+14155550123", "+18005550100"
STT_GRACE_S = 20.0
GATEWAY_GRACE_S = 60.0
CALL_PATH = tuple(s for s in SERVICES if s.name in {"gateway", "stt", "agent", "tts"})


async def _in_flight(http: httpx.AsyncClient, url: str) -> float:
    with contextlib.suppress(httpx.HTTPError):
        text = (await http.get(f"{url}/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dealerline_stt_jobs_in_flight":
                    return sample.value
    return 0.0


async def _worker_holding_a_job(fleet: Fleet, names: list[str]) -> str:
    """The STT process with a job in flight (its in-flight gauge, polled)."""
    async with httpx.AsyncClient(timeout=2.0) as http, asyncio.timeout(60):
        while True:
            for name in names:
                if await _in_flight(http, fleet.url(name)) >= 1:
                    return name
            await asyncio.sleep(0.005)


def _log_lines(fleet: Fleet, name: str, needle: str) -> list[str]:
    text = fleet.procs[name].log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if needle in line]


async def test_sigterm_drains_an_stt_worker_and_the_gateway_without_losing_the_call() -> None:
    logs = Path("artifacts") / "e2e-drain" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    env = {
        "STT_DRAIN_TIMEOUT_S": str(STT_GRACE_S),
        "GATEWAY_DRAIN_TIMEOUT_S": str(GATEWAY_GRACE_S),
        # A job left to ack_wait would come back after the test gave up on the turn.
        "STT_ACK_WAIT_S": "300",
        # The fixed-silence end of turn, so every utterance is a job Whisper decodes on the
        # worker that takes it. With the default (smart) end of turn the utterance usually
        # arrives already transcribed by a probe and is published without decoding: no job
        # stays in flight long enough to SIGTERM its worker mid-decode, which is the case
        # this test is about (the probe's own drain answer is tested in services/stt).
        "GATEWAY_END_OF_TURN": "silence",
    }
    async with Fleet(
        log_dir=logs,
        llm=scripted,
        quiet=True,
        extra_env=env,
        services=CALL_PATH,
        replicas={"stt": 2},
    ) as fleet:
        observer = Bus(str(fleet.nats_url), "drain-observer")
        await observer.connect()
        transcripts: list[Transcript] = []

        async def on_transcript(msg: Msg) -> None:
            transcripts.append(loads(Transcript, msg.data))

        await observer.subscribe(subjects.ALL_TRANSCRIPTS, on_transcript)
        stt_workers = fleet.instances(next(s for s in CALL_PATH if s.name == "stt"))
        assert stt_workers == ["stt", "stt-2"]
        try:
            async with PhoneSimulator(
                fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=2.0
            ) as sim:
                await sim.prepare(*LINES)
                call = await sim.place_call(CALLER, DEALER)
                async with call:
                    await call.wait_until_quiet(1.2, 90)  # the greeting

                    # ---- turn 1: SIGTERM the STT worker transcribing it
                    await call.say(LINES[0])
                    holder = await _worker_holding_a_job(fleet, stt_workers)
                    fleet.terminate(holder)
                    survivor = next(n for n in stt_workers if n != holder)
                    await call.wait_until_quiet(1.2, 90)  # the agent still answers
                    assert await fleet.wait_exit(holder, STT_GRACE_S + 10) == 0

                    # ---- turn 2: only the second worker is left
                    await call.say(LINES[1])
                    await call.wait_until_quiet(1.2, 90)

                    # ---- the gateway drains while the call goes on
                    answered = await sim.post_webhook(
                        "/api/voice/incoming",
                        sim.incoming_call_params(new_sid("CA"), CALLER, DEALER),
                    )
                    assert answered.status_code == 200  # a call answered just before
                    stream = parse_connect_stream(answered.text)
                    fleet.terminate("gateway")
                    async with httpx.AsyncClient(base_url=fleet.gateway_url) as http:
                        async with asyncio.timeout(30):
                            while (await http.get("/readyz")).status_code != 503:
                                await asyncio.sleep(0.05)
                        refused = await sim.post_webhook(
                            "/api/voice/incoming",
                            sim.incoming_call_params(new_sid("CA"), CALLER, DEALER),
                        )
                        assert refused.status_code == 503  # Twilio fails over
                    close_code, close_reason = await _open_stream(
                        sim.local_ws_url(stream.url), stream.parameters, sim.sign(stream.url, {})
                    )
                    assert (close_code, close_reason) == (1008, "draining")

                    # ---- turn 3 on the call in progress, through the draining gateway
                    await call.say(LINES[2])
                    await call.wait_until_quiet(1.2, 90)
                    await call.hangup()
                assert await fleet.wait_exit("gateway", GATEWAY_GRACE_S + 10) == 0
            assert call.protocol_errors == []
        finally:
            await observer.close()

        # Every turn was transcribed once, in order, by the worker that took it.
        sid = call.custom_parameters["session_id"]
        mine = [t for t in transcripts if t.session_id == sid]
        assert len(mine) == len(LINES), [t.text for t in mine]
        for line, transcript in zip(LINES, mine, strict=True):
            assert word_error_rate(line, transcript.text) < 0.3, (line, transcript.text)
        first, second = mine[0].utterance_id, mine[1].utterance_id
        # The draining worker finished the job it held: not handed back, not redelivered.
        assert _log_lines(fleet, holder, first), "the draining worker transcribed turn 1"
        assert not _log_lines(fleet, survivor, first)
        assert _log_lines(fleet, holder, "draining")
        assert not _log_lines(fleet, holder, "handed back")
        assert _log_lines(fleet, survivor, second)
        assert [
            json.loads(line).get("msg")
            for line in _log_lines(fleet, holder, first)
            if line.startswith("{")
        ] == ["transcribed"]


async def _open_stream(
    url: str, parameters: dict[str, str], signature: str
) -> tuple[int | None, str | None]:
    """Play Twilio opening a media stream (its handshake signed, as Twilio does); return
    how the gateway closed it."""
    async with connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
        stream_sid = new_sid("MZ")
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": stream_sid,
                    "start": {
                        "streamSid": stream_sid,
                        "callSid": parameters.get("call_sid"),
                        "tracks": ["inbound"],
                        "customParameters": parameters,
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                    },
                }
            )
        )
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
        return ws.close_code, ws.close_reason
