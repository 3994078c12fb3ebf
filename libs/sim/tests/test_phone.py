"""The phone simulator against a small fake gateway (``phone_kit.FakeGateway``: FastAPI +
uvicorn) that validates Twilio signatures, answers Connect/Stream TwiML and records the
Media Stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import jiwer
import pytest
from phone_kit import DEFAULT_TWIML, PUBLIC, TOKEN, FakeGateway, noise, until
from twilio.request_validator import RequestValidator

from dealerline_common.audio import FRAME_BYTES, ulaw_to_pcm16
from dealerline_common.audio import rms as frame_rms
from dealerline_sim.phone import (
    Call,
    PhoneSimulator,
    SimulatorError,
    Transcriber,
    WebhookError,
    run_script,
)
from dealerline_sim.voice import synthesize_ulaw

PACE = 8.0


def wer(reference: str, hypothesis: str) -> float:
    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    return float(
        jiwer.wer(reference, hypothesis, reference_transform=norm, hypothesis_transform=norm)
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    await gw.server.start()
    try:
        yield gw
    finally:
        await gw.server.stop()


@pytest.fixture
async def sim(fake: FakeGateway) -> AsyncIterator[PhoneSimulator]:
    s = PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


async def open_call(sim: PhoneSimulator, fake: FakeGateway) -> Call:
    call = await sim.place_call("+14155550100", "+14155550199")
    await until(lambda: bool(fake.events("start")), "start event")
    return call


# -- webhooks and signatures -------------------------------------------------------------


async def test_incoming_webhook_is_signed_with_twilio_params(
    sim: PhoneSimulator, fake: FakeGateway
) -> None:
    call = await open_call(sim, fake)
    await call.hangup()
    params, valid = fake.webhooks[0]
    assert valid
    assert params["CallSid"] == call.call_sid
    assert call.call_sid.startswith("CA")
    assert len(call.call_sid) == 34
    assert params["AccountSid"] == sim.account_sid
    assert sim.account_sid.startswith("AC")
    assert len(sim.account_sid) == 34
    assert params["From"] == params["Caller"] == "+14155550100"
    assert params["To"] == params["Called"] == "+14155550199"
    assert params["CallStatus"] == "ringing"
    assert params["ApiVersion"] == "2010-04-01"
    assert params["Direction"] == "inbound"
    assert {"FromCity", "FromState", "FromCountry", "ToCity"} <= set(params)
    # the WebSocket handshake is signed over the public stream URL
    assert fake.handshake_valid is True
    assert call.custom_parameters == {"session_id": "sess_test", "stream_token": "tok123"}
    assert call.local_stream_url == f"ws://127.0.0.1:{fake.server.port}/api/voice/media-stream"


async def test_forged_and_unsigned_webhooks_are_rejected(
    sim: PhoneSimulator, fake: FakeGateway
) -> None:
    params = sim.incoming_call_params("CA" + "1" * 32, "+14155550100", "+14155550199")
    assert (await sim.post_webhook("/api/voice/incoming", params)).status_code == 200
    assert (await sim.post_webhook("/api/voice/incoming", params, forged=True)).status_code == 403
    assert (await sim.post_webhook("/api/voice/incoming", params, unsigned=True)).status_code == 403
    assert [v for _, v in fake.webhooks] == [True, False, False]
    with pytest.raises(WebhookError) as info:
        await sim.place_call("+14155550100", "+14155550199", forged=True)
    assert info.value.response.status_code == 403
    assert fake.ws is None  # no stream for a rejected call


def test_signature_matches_twilio_known_vector() -> None:
    sim_sig = RequestValidator("12345").compute_signature(
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        {
            "CallSid": "CA1234567890ABCDE",
            "Caller": "+14158675309",
            "Digits": "1234",
            "From": "+14158675309",
            "To": "+18005551212",
        },
    )
    assert sim_sig == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


@pytest.mark.parametrize(
    ("twiml", "content_type", "fragment"),
    [
        (DEFAULT_TWIML.replace("wss://", "ws://"), "application/xml", "wss://"),
        (DEFAULT_TWIML.replace("media-stream", "media-stream?tok=1"), "text/xml", "query"),
        (DEFAULT_TWIML.replace("example.com/", "example.com:8443/"), "text/xml", "443"),
        ("<Response><Say>Hello</Say><Hangup/></Response>", "text/xml", "<Connect>"),
        ("<Response><Connect>", "text/xml", "well-formed"),
        (DEFAULT_TWIML.replace("dealer.example.com", "other.example.org"), "text/xml", "host"),
        (DEFAULT_TWIML, "text/plain", "Content-Type"),
    ],
)
async def test_twiml_that_twilio_would_refuse_raises(
    sim: PhoneSimulator, fake: FakeGateway, twiml: str, content_type: str, fragment: str
) -> None:
    fake.twiml = twiml
    fake.content_type = content_type
    with pytest.raises(SimulatorError, match=fragment):
        await sim.place_call("+14155550100", "+14155550199")
    assert fake.ws is None


# -- the Media Stream ----------------------------------------------------------------------


async def test_stream_messages_sequence_and_counters(
    sim: PhoneSimulator, fake: FakeGateway
) -> None:
    call = await open_call(sim, fake)
    await until(lambda: len(fake.events("media")) >= 10, "10 media frames")
    await call.send_dtmf("1")
    await until(lambda: len(fake.events("media")) >= 30, "30 media frames")
    await call.hangup()
    await asyncio.wait_for(fake.disconnected.wait(), 10)
    msgs = fake.received

    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start"
    assert start["sequenceNumber"] == "1"
    sid = start["streamSid"]
    assert sid.startswith("MZ")
    assert len(sid) == 34
    assert start["start"] == {
        "accountSid": sim.account_sid,
        "streamSid": sid,
        "callSid": call.call_sid,
        "tracks": ["inbound"],
        "customParameters": {"session_id": "sess_test", "stream_token": "tok123"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    # one shared rising counter on every message after start, as strings
    seqs = [m["sequenceNumber"] for m in msgs[1:]]
    assert seqs == [str(i) for i in range(1, len(msgs))]
    assert all(m["streamSid"] == sid for m in msgs[1:])

    media = fake.events("media")
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert all(b - a == 20 for a, b in zip(stamps, stamps[1:], strict=False))
    assert all(m["media"]["track"] == "inbound" for m in media)
    payloads = [base64.b64decode(m["media"]["payload"]) for m in media]
    assert all(len(p) == FRAME_BYTES for p in payloads)
    assert all(p == b"\xff" * FRAME_BYTES for p in payloads)  # digital silence

    dtmf = fake.events("dtmf")
    assert len(dtmf) == 1
    assert dtmf[0]["dtmf"] == {"track": "inbound_track", "digit": "1"}

    stop = msgs[-1]
    assert stop["event"] == "stop"
    assert stop["stop"] == {"accountSid": sim.account_sid, "callSid": call.call_sid}
    assert call.stop_sent
    assert call.protocol_errors == []


async def test_marks_are_echoed_after_their_audio_has_played(
    sim: PhoneSimulator, fake: FakeGateway
) -> None:
    call = await open_call(sim, fake)
    a, b = noise(8000, 1), noise(4000, 2)  # 1 s and 0.5 s
    await fake.send_media(a)
    await fake.send_mark("a")
    await fake.send_media(b, chunk=400)
    await fake.send_mark("b")
    await until(lambda: len(fake.events("mark")) == 2, "two mark echoes")

    assert [m["mark"]["name"] for m in fake.events("mark")] == ["a", "b"]
    echo_a, echo_b = call.mark_echoes
    assert (echo_a.name, echo_a.heard_bytes, echo_a.cleared) == ("a", 8000, False)
    assert (echo_b.name, echo_b.heard_bytes, echo_b.cleared) == ("b", 12000, False)
    seg_a, seg_b = call.heard_segments
    assert seg_a.mark_name == "a"
    assert bytes(seg_a.audio) == a
    assert seg_b.mark_name == "b"
    assert bytes(seg_b.audio) == b
    assert bytes(call.heard_audio) == a + b
    assert call.outbound_media_sizes == [320] * 25 + [400] * 10
    # the playout clock is never faster than real time / pace
    assert seg_a.first_received_at is not None
    assert seg_a.mark_echoed_at is not None
    assert seg_a.mark_echoed_at - seg_a.first_received_at >= 0.9 * 1.0 / PACE

    # nothing queued: the mark comes straight back
    await fake.send_mark("solo")
    echo = await call.wait_for_mark_echo("solo")
    assert echo.heard_bytes == 12000
    assert call.heard_segments[-1].mark_name == "solo"
    assert bytes(call.heard_segments[-1].audio) == b""

    await call.hangup()
    await asyncio.wait_for(fake.disconnected.wait(), 10)
    # mark echoes share the counter with media frames
    seqs = [int(m["sequenceNumber"]) for m in fake.received[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    echoes = fake.events("mark")
    assert all(set(m) == {"event", "sequenceNumber", "streamSid", "mark"} for m in echoes)
    assert call.protocol_errors == []


async def test_clear_drops_unplayed_audio_and_echoes_pending_marks(
    sim: PhoneSimulator, fake: FakeGateway
) -> None:
    call = await open_call(sim, fake)
    a, b = noise(48000, 3), noise(48000, 4)  # 6 s each
    await fake.send_media(a, chunk=400)
    await fake.send_mark("s1")
    await fake.send_media(b, chunk=400)
    await fake.send_mark("s2")
    await until(lambda: len(call.heard_audio) >= 8000, "1 s of playout")
    await fake.send_clear()
    await until(lambda: len(fake.events("mark")) == 2, "pending marks echoed")

    assert [m["mark"]["name"] for m in fake.events("mark")] == ["s1", "s2"]
    assert len(call.clears) == 1
    assert call.clears[0].echoed_marks == ["s1", "s2"]
    heard = len(call.heard_audio)
    assert 8000 <= heard < 48000
    assert bytes(call.heard_audio) == a[:heard]
    assert call.clears[0].dropped_bytes == 96000 - heard
    seg1, seg2 = call.heard_segments
    assert seg1.cleared
    assert seg2.cleared
    assert bytes(seg2.audio) == b""
    assert seg1.dropped_bytes + seg2.dropped_bytes == 96000 - heard
    assert all(e.cleared for e in call.mark_echoes)
    assert call.pending_audio_bytes == 0

    # audio after the clear plays normally in a new segment
    c = noise(1600, 5)
    await fake.send_media(c)
    await fake.send_mark("s3")
    echo = await call.wait_for_mark_echo("s3")
    assert not echo.cleared
    assert echo.heard_bytes == heard + 1600
    assert call.heard_segments[-1].mark_name == "s3"
    assert bytes(call.heard_segments[-1].audio) == c
    assert not call.heard_segments[-1].cleared
    assert call.protocol_errors == []
    await call.hangup()


async def test_wait_until_quiet_waits_for_playout(sim: PhoneSimulator, fake: FakeGateway) -> None:
    call = await open_call(sim, fake)
    with pytest.raises(TimeoutError):
        await call.wait_until_quiet(quiet_s=0.2, timeout_s=0.3)  # nothing said yet
    await fake.send_media(noise(16000, 6))  # 2 s
    await fake.send_mark("greeting")
    await call.wait_until_quiet(quiet_s=0.5, timeout_s=10)
    assert len(call.heard_audio) == 16000
    assert call.mark_echoes[-1].name == "greeting"
    await call.hangup()


async def test_protocol_errors_are_recorded(sim: PhoneSimulator, fake: FakeGateway) -> None:
    call = await open_call(sim, fake)
    sid = fake.stream_sid
    assert fake.ws is not None
    await fake.send({"event": "play", "streamSid": sid})
    await fake.ws.send_text("not json")
    await fake.send({"event": "media", "streamSid": sid, "media": {"payload": "%%%"}})
    await fake.send({"event": "mark", "streamSid": "MZwrong", "mark": {"name": "x"}})
    await fake.ws.send_bytes(b"\xff" * 160)
    await fake.send({"event": "mark", "streamSid": sid, "mark": {}})
    await until(lambda: len(call.protocol_errors) == 6, "six protocol errors")
    assert all(e.startswith("31924") for e in call.protocol_errors)
    assert call.heard_segments == []
    assert fake.events("mark") == []
    await call.hangup()


async def test_server_closing_the_socket_ends_the_call(
    sim: PhoneSimulator, fake: FakeGateway
) -> None:
    call = await open_call(sim, fake)
    assert fake.ws is not None
    await fake.ws.close()
    await call.wait_closed()
    assert call.closed_by_server
    with pytest.raises(SimulatorError):
        await call.say_audio(noise(320, 7))
    await call.hangup()
    assert not call.stop_sent
    assert fake.events("stop") == []


async def test_comfort_noise_and_no_frames_during_silence(fake: FakeGateway) -> None:
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE, silence="comfort_noise") as s:
        call = await open_call(s, fake)
        await until(lambda: len(fake.events("media")) >= 10, "noise frames")
        await call.hangup()
    payloads = [base64.b64decode(m["media"]["payload"]) for m in fake.events("media")]
    assert all(len(p) == FRAME_BYTES for p in payloads)
    assert any(p != b"\xff" * FRAME_BYTES for p in payloads)
    assert all(0 < frame_rms(ulaw_to_pcm16(p)) < 100 for p in payloads)

    fake.received.clear()
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=PACE, silence="none") as s:
        call = await open_call(s, fake)
        await asyncio.sleep(0.1)  # idle: no frames at all
        assert fake.events("media") == []
        said = await call.say_audio(noise(1600, 8), text="ten frames")
        await until(lambda: len(fake.events("media")) == 10, "ten speech frames")
        await call.hangup()
    media = fake.events("media")
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, 11)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps[0] > 0  # the idle time shows as a timestamp jump
    assert all(b - a == 20 for a, b in zip(stamps, stamps[1:], strict=False))
    assert said.speech_ended_at is not None
    assert call.speech_ended_at == said.speech_ended_at


# -- speech: Kokoro in, Whisper out ----------------------------------------------------------


async def test_caller_speech_arrives_as_frames_that_transcribe_back(
    fake: FakeGateway, transcriber: Transcriber
) -> None:
    sentence = "Hi, I would like to book an oil change for my Toyota Camry next Tuesday."
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=4.0) as s:
        await s.prepare(sentence)
        call = await open_call(s, fake)
        said = await call.say(sentence)
        assert said.text == sentence
        assert said.started_at is not None
        assert said.speech_ended_at is not None
        assert said.finished_at is not None
        assert said.started_at < said.speech_ended_at <= said.finished_at
        await call.hangup()
    payloads = [base64.b64decode(m["media"]["payload"]) for m in fake.events("media")]
    assert all(len(p) == FRAME_BYTES for p in payloads)
    heard = await transcriber.transcribe_ulaw(b"".join(payloads))
    assert wer(sentence, heard) < 0.2, heard


class MiniAgent:
    """A toy gateway brain for the fake: greets on start; after the caller has spoken
    (energy VAD, 600 ms of silence) it answers with the next reply and a mark."""

    def __init__(self, fake: FakeGateway, greeting: bytes, replies: list[bytes]) -> None:
        self.fake = fake
        self.greeting = greeting
        self.replies = list(replies)
        self.voiced = 0
        self.silent = 0
        self.turn = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def _speak(self, audio: bytes, mark: str) -> None:
        await self.fake.send_media(audio)
        await self.fake.send_mark(mark)

    async def __call__(self, msg: dict[str, Any]) -> None:
        if msg["event"] == "start":
            self.tasks.append(asyncio.create_task(self._speak(self.greeting, "greeting")))
        elif msg["event"] == "media":
            energy = frame_rms(ulaw_to_pcm16(base64.b64decode(msg["media"]["payload"])))
            if energy > 500:
                self.voiced += 1
                self.silent = 0
            elif self.voiced >= 5:
                self.silent += 1
                if self.silent >= 30 and self.replies:
                    self.turn += 1
                    self.voiced = self.silent = 0
                    reply = self.replies.pop(0)
                    self.tasks.append(asyncio.create_task(self._speak(reply, f"reply-{self.turn}")))

    async def close(self) -> None:
        for t in self.tasks:
            with contextlib.suppress(Exception):
                await t


async def test_run_script_hears_greeting_and_reply(
    fake: FakeGateway, transcriber: Transcriber
) -> None:
    greeting_text = "Thanks for calling Sunrise Motors. How can I help you today?"
    reply_text = "Sure, I can book an oil change for you on Tuesday."
    line = "I need an oil change on Tuesday."
    greeting = await synthesize_ulaw(greeting_text, "jf_alpha")
    reply = await synthesize_ulaw(reply_text, "jf_alpha")
    agent = MiniAgent(fake, greeting, [reply])
    fake.on_message = agent
    async with PhoneSimulator(fake.base, PUBLIC, TOKEN, pace=4.0) as s:
        call = await s.place_call("+14155550100", "+14155550199")
        try:
            turns = await run_script(call, [line], transcriber, quiet_s=1.0, timeout_s=60)
        finally:
            await call.hangup()
            await agent.close()
    assert len(turns) == 2
    greet, answer = turns
    assert greet.caller_text is None
    assert greet.mark_names == ["greeting"]
    assert greet.heard_audio == greeting
    assert greet.heard_text is not None
    assert wer(greeting_text, greet.heard_text) < 0.25, greet.heard_text
    assert answer.caller_text == line
    assert answer.mark_names == ["reply-1"]
    assert answer.heard_audio == reply
    assert answer.heard_text is not None
    assert wer(reply_text, answer.heard_text) < 0.25, answer.heard_text
    assert answer.latency_s is not None
    assert answer.latency_s > 0
    assert not answer.cleared
    segments = await call.transcribe_heard(transcriber)
    assert [seg.mark_name for seg in segments] == ["greeting", "reply-1"]
    assert all(seg.text for seg in segments)
    assert call.protocol_errors == []
