"""The media-stream WebSocket end to end: a scripted Twilio client, the gateway in
uvicorn, and a real nats-server carrying utterances, audio, control and events."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import nats.errors
import pytest
from gw_testkit import (
    Running,
    collect,
    next_of,
    open_call,
    running_gateway,
    sign,
    silence,
    start_call,
    twilio_stream,
    voiced_signal,
)
from nats.aio.subscription import Subscription
from structlog.testing import capture_logs
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dealerline_common import audio, subjects
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AudioMeta,
    BargeIn,
    CallEndedEvent,
    HangupRequest,
    KeyPresses,
    LatencyEvent,
    StreamStarted,
    StreamStopped,
    TurnTimings,
    UtteranceMeta,
    from_header,
    parse_control,
)
from dealerline_gateway.playback import Playback, Sentence
from dealerline_gateway.stream import MediaSession


async def publish_sentence(
    run: Running,
    sid: str,
    turn: str,
    seq: int,
    text: str,
    payload: bytes,
    *,
    last: bool = False,
    duration_ms: float | None = None,
    timings: TurnTimings | None = None,
) -> None:
    meta = AudioMeta(
        session_id=sid,
        turn_id=turn,
        seq=seq,
        last=last,
        text=text,
        duration_ms=audio.duration_ms(payload) if duration_ms is None else duration_ms,
        synth_ms=5.0,
        timings=timings or TurnTimings(),
    )
    await run.probe.publish(subjects.audio(sid), payload, headers=meta.header())


# ----------------------------------------------------------------- admission


async def test_token_is_one_time_and_checked(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as first:
        params = await open_call(gateway, first, control)
        # a second stream presenting the same token is refused with a policy violation
        async with twilio_stream(gateway) as second:
            await second.start(params)
            await asyncio.wait_for(second.closed.wait(), 10)
            assert second.close_code == 1008
        # a wrong token is refused too
        async with twilio_stream(gateway) as third:
            await third.start({**params, "token": "forged-token"})
            await asyncio.wait_for(third.closed.wait(), 10)
            assert third.close_code == 1008
        # the first stream is still fine
        assert not first.closed.is_set()
        await first.stop()
        stopped = await next_of(control, StreamStopped)
        assert isinstance(stopped, StreamStopped) and stopped.reason == "stop"


async def test_handshake_signature_checked_when_sent(gateway: Running) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(gateway.ws_url, additional_headers={"X-Twilio-Signature": "bogus"})
    assert refused.value.response.status_code == 403
    # signed over the public wss:// URL, as Twilio does: accepted
    good = sign("wss://dealer.example.com/api/voice/media-stream", {})
    ws = await connect(gateway.ws_url, additional_headers={"X-Twilio-Signature": good})
    await ws.close()


# ----------------------------------------------------------------- robustness


async def test_bad_frames_are_skipped_and_other_calls_unaffected(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with (
        twilio_stream(gateway, "CA00000000000000000000000000000001") as a,
        twilio_stream(gateway, "CA00000000000000000000000000000002") as b,
    ):
        pa = await open_call(gateway, a, control)
        pb = await open_call(gateway, b, control)
        await a.send("this is not json")
        await a.send("[1, 2, 3]")
        await a.send(
            {"event": "media", "streamSid": a.stream_sid, "media": {"payload": "!!!notbase64"}}
        )
        await a.send({"event": "media", "streamSid": a.stream_sid})
        await a.send({"event": "mark", "streamSid": a.stream_sid})
        await a.send({"event": "frobnicate"})
        await a.send(b"\x00\x01binary")
        await a.mark("never-sent:0")  # an echo of a mark we never sent: ignored
        # both calls still play audio
        for fake, params in ((a, pa), (b, pb)):
            sid = params["session_id"]
            await publish_sentence(gateway, sid, "turn_1", 0, "Hi.", b"\x10" * 320)
            media = await fake.next_event("media")
            assert base64.b64decode(media["media"]["payload"]) == b"\x10" * 320
        assert not a.closed.is_set() and not b.closed.is_set()
        async with httpx.AsyncClient(base_url=gateway.base) as client:
            metrics = (await client.get("/metrics")).text
        for reason in (
            "invalid_json",
            "not_an_object",
            "bad_base64",
            "missing_media",
            "unknown_event",
            "binary frame",
        ):
            assert f'reason="{reason}"' in metrics, reason


async def test_key_presses_are_published_as_runs_on_the_control_lane(
    nats_server: NatsServer,
) -> None:
    async with running_gateway(nats_server, dtmf_interdigit_s=0.3) as gateway:
        control = await collect(gateway.probe, subjects.ALL_CONTROL)
        async with twilio_stream(gateway) as fake:
            params = await open_call(gateway, fake, control)

            async def press(digit: str) -> None:
                dtmf = {"track": "inbound_track", "digit": digit}
                await fake.send({"event": "dtmf", "streamSid": fake.stream_sid, "dtmf": dtmf})

            await press("1")
            await press("77")  # malformed: skipped, the call goes on
            await press("2")
            await press("#")  # ends the run at once
            first = await next_of(control, KeyPresses, 5)
            await press("5")  # a new run, ended by the interdigit timeout
            second = await next_of(control, KeyPresses, 5)
            assert isinstance(first, KeyPresses) and isinstance(second, KeyPresses)
            for run in (first, second):
                assert run.session_id == params["session_id"]
                assert run.stream_sid == fake.stream_sid
            assert (first.run, first.digits) == (1, "12#")
            assert first.first_at <= first.at <= second.first_at
            assert (second.run, second.digits) == (2, "5")
            await press("9")  # unfinished when the caller leaves: dropped
            await fake.stop()
            await next_of(control, StreamStopped)
            await asyncio.sleep(0.5)
            while not control.queue.empty():
                assert not isinstance(parse_control(control.queue.get_nowait().data), KeyPresses)


# ----------------------------------------------------------------- endpointing


async def test_synthetic_speech_is_endpointed_to_the_bus(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        utts = await collect(gateway.probe, subjects.utterance(sid))
        await fake.media(silence(0.4) + voiced_signal(0.8) + silence(1.5))
        msg = await utts.get()
        meta = from_header(UtteranceMeta, msg.headers)
        assert msg.headers is not None and msg.headers.get("Nats-Msg-Id") == meta.utterance_id
        assert meta.session_id == sid and meta.index == 0
        assert meta.call_sid == fake.call_sid
        assert not meta.during_playback
        assert len(msg.data) % audio.FRAME_BYTES == 0
        assert meta.duration_ms == pytest.approx(audio.duration_ms(msg.data))
        # 0.8 s of voice, plus pre-roll, tail and webrtcvad's own hangover; nothing clipped
        assert 800 <= meta.duration_ms <= 800 + 200 + 120 + 300
        t = meta.timings
        assert t.speech_started is not None and t.speech_end is not None
        assert t.utterance_published is not None
        assert t.speech_started <= t.speech_end <= t.utterance_published
        # a second utterance gets the next index
        await fake.media(voiced_signal(0.5) + silence(1.5))
        second = from_header(UtteranceMeta, (await utts.get()).headers)
        assert second.index == 1


async def test_timestamp_gap_counts_as_silence(gateway: Running) -> None:
    """A carrier that sends nothing during silence still ends the utterance."""
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        utts = await collect(gateway.probe, subjects.utterance(params["session_id"]))
        await fake.media(voiced_signal(0.6))
        fake.ts_ms += 2000  # two seconds of nothing, then one more frame
        await fake.media(silence(0.02))
        meta = from_header(UtteranceMeta, (await utts.get()).headers)
        assert 600 <= meta.duration_ms <= 600 + 200 + 120 + 300


@pytest.fixture(scope="module")
def kokoro_speech() -> bytes:
    """A sentence synthesized by the embedded Kokoro, as 8 kHz mu-law."""
    from kokoro_onnx import Kokoro

    from dealerline_common.models import bundled_voices_path, kokoro_int8_path

    k = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
    samples, rate = k.create(
        "I'd like to book an oil change for Tuesday.", voice="jm_kumo", speed=1.0, lang="en-us"
    )
    x = audio.resample(samples, rate, audio.SAMPLE_RATE)
    x = x / max(1e-6, float(abs(x).max())) * 0.4
    return audio.pcm16_to_ulaw(audio.float_to_pcm16(x))


async def test_kokoro_speech_is_one_utterance(gateway: Running, kokoro_speech: bytes) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        utts = await collect(gateway.probe, subjects.utterance(params["session_id"]))
        await fake.media(silence(0.5) + kokoro_speech + silence(1.5))
        msg = await utts.get()
        meta = from_header(UtteranceMeta, msg.headers)
        speech_ms = audio.duration_ms(kokoro_speech)
        # the whole sentence, not clipped at either end by more than a frame or two
        assert meta.duration_ms >= speech_ms - 60
        assert meta.duration_ms <= speech_ms + 200 + 120 + 200
        assert meta.index == 0 and utts.queue.empty()


# ----------------------------------------------------------------- playback


async def test_playback_in_seq_order_with_marks_and_latency(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        events = await collect(gateway.probe, subjects.events(sid))
        timings = TurnTimings(first_sentence=1000.0, first_audio=1000.5, speech_end=999.0)
        sentences = {0: b"\x11" * 500, 1: b"\x22" * 700, 2: b"\x33" * 160}
        texts = {0: "Sure.", 1: "We have two trucks.", 2: "Want details?"}
        for seq in (2, 0, 1):  # out of order, as parallel TTS workers deliver them
            await publish_sentence(
                gateway, sid, "turn_a", seq, texts[seq], sentences[seq], timings=timings
            )
        await publish_sentence(gateway, sid, "turn_a", 3, "", b"", last=True)
        got: list[tuple[str, bytes | str]] = []
        while sum(1 for kind, _ in got if kind == "mark") < 3:
            msg = await asyncio.wait_for(fake.received.get(), 15)
            assert msg["streamSid"] == fake.stream_sid
            if msg["event"] == "media":
                payload = base64.b64decode(msg["media"]["payload"])
                assert len(payload) % 160 == 0 and 160 <= len(payload) <= 400
                got.append(("media", payload))
            elif msg["event"] == "mark":
                got.append(("mark", msg["mark"]["name"]))
        # media of sentence 0, its mark, media of 1, its mark, media of 2, its mark
        expected_marks = ["turn_a:0", "turn_a:1", "turn_a:2"]
        assert [v for k, v in got if k == "mark"] == expected_marks
        seq = 0
        for kind, value in got:
            if kind == "mark":
                assert value == f"turn_a:{seq}"
                seq += 1
            else:
                assert isinstance(value, bytes)
                body = value.rstrip(b"\xff")
                assert set(body) == {sentences[seq][0]}
        played = b"".join(v for k, v in got if k == "media" and isinstance(v, bytes))
        assert played == b"".join(audio.pad_to_frames(sentences[s]) for s in range(3))
        lat = await next_of(events, LatencyEvent)
        assert isinstance(lat, LatencyEvent)
        assert lat.turn_id == "turn_a"
        assert lat.timings.first_media is not None
        assert "to_first_media" in lat.stages_ms and "tts_first_audio" in lat.stages_ms


async def test_barge_in_clears_and_reports_heard_text(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        utts = await collect(gateway.probe, subjects.utterance(sid))
        await publish_sentence(gateway, sid, "turn_b", 0, "Thanks for calling.", b"\x11" * 320)
        # long enough that the estimate of what was heard of it stays at zero words
        await publish_sentence(
            gateway,
            sid,
            "turn_b",
            1,
            "We are open until nine tonight.",
            b"\x22" * 320,
            duration_ms=600_000,
        )
        assert (await fake.next_event("mark"))["mark"]["name"] == "turn_b:0"
        assert (await fake.next_event("mark"))["mark"]["name"] == "turn_b:1"
        await fake.mark("turn_b:0")  # the first sentence has played
        await fake.media(voiced_signal(0.6))
        clear = await fake.next_event("clear")
        assert clear["streamSid"] == fake.stream_sid
        await fake.mark("turn_b:1")  # Twilio echoes the cleared mark: not heard
        barge = await next_of(control, BargeIn)
        assert isinstance(barge, BargeIn)
        assert barge.turn_id == "turn_b"
        assert barge.heard_seqs == [0]
        assert barge.heard_text == "Thanks for calling."
        await fake.media(silence(1.5))
        meta = from_header(UtteranceMeta, (await utts.get()).headers)
        assert meta.during_playback
        # late audio of the cancelled turn is dropped; the next turn plays
        await publish_sentence(gateway, sid, "turn_b", 2, "Late.", b"\x33" * 160)
        await publish_sentence(gateway, sid, "turn_c", 0, "Go on.", b"\x44" * 160)
        media = await fake.next_event("media")
        assert base64.b64decode(media["media"]["payload"]) == b"\x44" * 160


# ----------------------------------------------------------------- end of stream


async def test_hangup_after_turn_heard(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        events = await collect(gateway.probe, subjects.events(sid))
        await publish_sentence(gateway, sid, "turn_z", 0, "Goodbye.", b"\x11" * 320)
        await publish_sentence(gateway, sid, "turn_z", 1, "", b"", last=True)
        await gateway.probe.publish(
            subjects.command(sid), HangupRequest(session_id=sid, after_turn="turn_z", reason="done")
        )
        mark = await fake.next_event("mark")
        assert not fake.closed.is_set()
        await fake.mark(mark["mark"]["name"])
        await asyncio.wait_for(fake.closed.wait(), 10)
        assert fake.close_code == 1000
        stopped = await next_of(control, StreamStopped)
        assert isinstance(stopped, StreamStopped) and stopped.session_id == sid
        ended = await next_of(events, CallEndedEvent)
        assert isinstance(ended, CallEndedEvent) and ended.reason == "hangup:done"


async def test_stop_publishes_stream_stopped_and_call_ended(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        events = await collect(gateway.probe, subjects.events(sid))
        await fake.send(
            {
                "event": "dtmf",
                "streamSid": fake.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": "1"},
            }
        )
        await fake.stop()
        stopped = await next_of(control, StreamStopped)
        assert isinstance(stopped, StreamStopped) and stopped.call_sid == fake.call_sid
        ended = await next_of(events, CallEndedEvent)
        assert isinstance(ended, CallEndedEvent) and ended.reason == "stop"
    await asyncio.wait_for(gateway.app.state.gateway.wait_idle(), 10)
    assert not gateway.app.state.gateway.sessions


# ----------------------------------------------------------------- failures


async def metrics_text(run: Running) -> str:
    async with httpx.AsyncClient(base_url=run.base) as client:
        return (await client.get("/metrics")).text


async def test_admission_error_refuses_the_stream(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token bucket timing out while admitting: the stream is refused like a bad token
    and nothing of it is left behind."""

    async def kv_timeout(*_args: object) -> None:
        raise nats.errors.TimeoutError

    params = await start_call(gateway)
    monkeypatch.setattr(gateway.app.state.gateway.tokens, "admit", kv_timeout)
    with capture_logs() as logs:
        async with twilio_stream(gateway) as fake:
            await fake.start(params)
            await asyncio.wait_for(fake.closed.wait(), 10)
            assert fake.close_code == 1008
    await asyncio.wait_for(gateway.app.state.gateway.wait_idle(), 10)
    assert not gateway.app.state.gateway.sessions
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_streams_rejected_total{reason="start_failed"} 1.0' in metrics
    assert "dealerline_gateway_active_streams 0.0" in metrics
    failed = [e for e in logs if e["event"] == "media stream admission failed"]
    assert failed and failed[0]["session_id"] == params["session_id"]


async def test_start_error_after_registering_cleans_up(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command subscription failing after the session was registered and the audio
    subscription made: unsubscribed, unregistered, tasks stopped, stream refused."""
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    subscribe = gateway.bus.subscribe
    made: list[Subscription] = []

    async def flaky_subscribe(subject: str, *args: Any, **kwargs: Any) -> Subscription:
        if subject.endswith(".command"):
            raise nats.errors.ConnectionClosedError
        sub = await subscribe(subject, *args, **kwargs)
        made.append(sub)
        return sub

    params = await start_call(gateway)
    monkeypatch.setattr(gateway.bus, "subscribe", flaky_subscribe)
    async with twilio_stream(gateway) as fake:
        await fake.start(params)
        await asyncio.wait_for(fake.closed.wait(), 10)
        assert fake.close_code == 1008
    await asyncio.wait_for(gateway.app.state.gateway.wait_idle(), 10)
    assert not gateway.app.state.gateway.sessions
    assert len(made) == 1 and made[0]._closed  # the audio subscription was undone
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_streams_rejected_total{reason="start_failed"} 1.0' in metrics
    assert "dealerline_gateway_active_streams 0.0" in metrics
    # no StreamStarted/StreamStopped went out for a stream that never started
    await gateway.probe.nc.flush()
    await gateway.bus.nc.flush()
    while not control.queue.empty():
        ctl = parse_control((control.queue.get_nowait()).data)
        assert not isinstance(ctl, StreamStarted | StreamStopped), ctl


async def test_media_before_start_is_logged_once(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    with capture_logs() as logs:
        async with twilio_stream(gateway) as fake:
            await fake.media(silence(0.06))  # three frames before `start`
            # frames are handled in order: once the stream has started, all three were seen
            await open_call(gateway, fake, control)
    skipped = [
        e
        for e in logs
        if e["event"] == "bad media-stream frame skipped" and e["reason"] == "media_before_start"
    ]
    assert len(skipped) == 1
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_bad_frames_total{reason="media_before_start"} 3.0' in metrics


async def test_a_frame_out_of_place_counts_as_that_however_malformed(gateway: Running) -> None:
    """The stream's state is judged before the frame's shape: malformed media before
    ``start`` is ``media_before_start``, a malformed second ``start`` is ``duplicate_start``."""
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        await fake.send({"event": "media", "streamSid": fake.stream_sid})
        await fake.send({"event": "dtmf", "dtmf": {"digit": "1"}})
        params = await open_call(gateway, fake, control)
        await fake.send({"event": "start", "streamSid": fake.stream_sid})
        await fake.start(params)
        await fake.send({"event": "dtmf", "dtmf": {"digit": "x"}})
        await publish_sentence(gateway, params["session_id"], "turn_1", 0, "Hi.", b"\x10" * 320)
        await fake.next_event("media")  # the stream lives on
    metrics = await metrics_text(gateway)
    for reason, count in (
        ("media_before_start", 1),
        ("dtmf_before_start", 1),
        ("duplicate_start", 2),
        ("bad_dtmf_digit", 1),
    ):
        assert f'dealerline_gateway_bad_frames_total{{reason="{reason}"}} {count}.0' in metrics


async def test_a_dying_call_task_is_logged_and_closes_the_stream(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_stall_sweep(self: MediaSession) -> None:
        raise RuntimeError("stall sweep bug")

    monkeypatch.setattr(MediaSession, "_sweep_stalls", broken_stall_sweep)
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    with capture_logs() as logs:
        async with twilio_stream(gateway) as fake:
            params = await start_call(gateway, fake.call_sid)
            await fake.start(params)
            await asyncio.wait_for(fake.closed.wait(), 10)
            assert fake.close_code == 1011
        stopped = await next_of(control, StreamStopped)
        assert isinstance(stopped, StreamStopped)
        assert stopped.session_id == params["session_id"]
        await asyncio.wait_for(gateway.app.state.gateway.wait_idle(), 10)
    failed = [e for e in logs if e["event"] == "per-call task failed"]
    assert len(failed) == 1
    assert failed[0]["session_id"] == params["session_id"]
    assert failed[0]["task"] == "stall_sweep"
    assert failed[0]["log_level"] == "error" and failed[0]["exc_info"]
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_task_failures_total{task="stall_sweep"} 1.0' in metrics


async def test_a_sentence_that_fails_to_send_is_skipped(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error on one sentence (here the KeyError of a forgotten turn) skips that
    sentence; the sender lives on and plays the next one."""
    sent_chunk = Playback.sent_chunk

    def forgetful_sent_chunk(
        self: Playback, sentence: Sentence, at: float, chunk_ms: float = 0.0
    ) -> bool:
        if sentence.seq == 0:
            raise KeyError(sentence.turn_id)
        return sent_chunk(self, sentence, at, chunk_ms)

    monkeypatch.setattr(Playback, "sent_chunk", forgetful_sent_chunk)
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        await publish_sentence(gateway, sid, "turn_k", 0, "Broken.", b"\x11" * 320)
        await publish_sentence(gateway, sid, "turn_k", 1, "Fine.", b"\x22" * 320)
        mark = await fake.next_event("mark")
        assert mark["mark"]["name"] == "turn_k:1"
        assert not fake.closed.is_set()
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_playback_dropped_total{reason="send_error"} 1.0' in metrics


async def test_barge_in_does_not_wait_behind_utterance_publishes(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JetStream is slow to ack an utterance: the BargeIn (core lane) still goes out at
    once instead of queueing behind it."""
    gate = asyncio.Event()
    publish_durable = gateway.bus.publish_durable

    async def slow_utterances(subject: str, *args: Any, **kwargs: Any) -> Any:
        if subject.endswith(".utterance"):
            await gate.wait()
        return await publish_durable(subject, *args, **kwargs)

    monkeypatch.setattr(gateway.bus, "publish_durable", slow_utterances)
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        params = await open_call(gateway, fake, control)
        sid = params["session_id"]
        utts = await collect(gateway.probe, subjects.utterance(sid))
        await fake.media(voiced_signal(0.6) + silence(1.5))  # its publish hangs at the gate
        await publish_sentence(
            gateway, sid, "turn_q", 0, "Let me check that.", b"\x11" * 320, duration_ms=600_000
        )
        assert (await fake.next_event("mark"))["mark"]["name"] == "turn_q:0"
        await fake.media(voiced_signal(0.6))
        barge = await next_of(control, BargeIn)
        assert isinstance(barge, BargeIn) and barge.turn_id == "turn_q"
        assert utts.queue.empty()  # still stuck behind the gate
        gate.set()
        await fake.media(silence(1.5))
        first = from_header(UtteranceMeta, (await utts.get()).headers)
        second = from_header(UtteranceMeta, (await utts.get()).headers)
        assert (first.index, second.index) == (0, 1)
        assert second.during_playback
