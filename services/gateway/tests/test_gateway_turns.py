"""Turn taking through the running gateway and a real nats-server: the real Smart Turn
model deciding the end of a turn on real (Kokoro) speech, the speculative transcript
published with the utterance, and speech over playback held, judged on an ``stt.probe``
and resumed (a backchannel) or barged in on (an interruption). An ``stt.probe`` responder
stands in for the STT worker (the STT side is tested in its own service)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gw_testkit import (
    Collector,
    FakeTwilio,
    Running,
    collect,
    kokoro_ulaw,
    make_settings,
    running_gateway,
    silence,
    start_call,
    twilio_stream,
    voiced_signal,
)
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from dealerline_common import audio, subjects
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AudioMeta,
    BargeIn,
    StreamStarted,
    UtteranceMeta,
    from_header,
    parse_control,
)
from dealerline_common.speculation import SttProbe, SttProbeResult
from dealerline_gateway.speculate import load_turn_model

COMPLETE = "I'd like to book an oil change for Tuesday."
UNFINISHED = "I was wondering if"


class SttStandIn:
    """Answers every ``stt.probe`` with the text it is set to (and counts the probes)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.audio: list[bytes] = []

    async def handler(self, msg: Msg) -> None:
        probe = from_header(SttProbe, msg.headers)
        self.audio.append(msg.data)
        result = SttProbeResult(
            session_id=probe.session_id,
            probe_id=probe.probe_id,
            text=self.text,
            confidence=0.9,
            no_speech_prob=0.01,
            audio_ms=audio.duration_ms(msg.data),
            stt_ms=1.0,
            model="stand-in",
        )
        await msg.respond(result.dumps())


@contextlib.asynccontextmanager
async def stt_stand_in(run: Running, text: str) -> AsyncIterator[SttStandIn]:
    stt = SttStandIn(text)
    sub = await run.probe.subscribe(subjects.STT_PROBE, stt.handler, subjects.GROUP_STT_PROBE)
    await run.probe.nc.flush()
    try:
        yield stt
    finally:
        await sub.unsubscribe()


async def open_call(run: Running, fake: FakeTwilio) -> str:
    control = await collect(run.probe, subjects.ALL_CONTROL)
    params = await start_call(run, fake.call_sid)
    await fake.start(params)
    while True:
        if isinstance(parse_control((await control.get()).data), StreamStarted):
            return params["session_id"]


async def metric(run: Running, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(base_url=run.base) as client:
        text = (await client.get("/metrics")).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"dealerline_{name}" + (f"{{{want}}}" if want else "")
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def until_metric(run: Running, name: str, at_least: float, **labels: str) -> None:
    async def wait() -> None:
        while await metric(run, name, **labels) < at_least:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), 60)


async def until_model_answered(run: Running) -> None:
    """Until the turn model has answered (or skipped) every pause probed so far."""

    async def wait() -> None:
        while True:
            pauses = await metric(run, "gateway_stt_probes_total", purpose="pause", outcome="ok")
            runs = 0.0
            for outcome in ("ok", "error", "superseded"):
                runs += await metric(run, "gateway_turn_model_runs_total", outcome=outcome)
            if runs >= pauses:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), 60)


@pytest.fixture(scope="module")
def complete_speech() -> bytes:
    return kokoro_ulaw(COMPLETE)


@pytest.fixture(scope="module")
def unfinished_speech() -> bytes:
    return kokoro_ulaw(UNFINISHED)


# ----------------------------------------------------------------- end of turn


async def test_the_turn_model_decides_the_end_of_real_speech(
    nats_server: NatsServer, complete_speech: bytes, unfinished_speech: bytes
) -> None:
    """No timer can end these turns (all far off, and no more audio is sent until the
    answers are in): what ends them is the real model's answer."""
    async with (
        running_gateway(
            nats_server,
            eot_unsure_max_ms=8000,
            eot_entity_max_ms=9000,
            eot_transcript_wait_ms=8000,
        ) as gw,
        stt_stand_in(gw, COMPLETE) as stt,
        twilio_stream(gw) as fake,
    ):
        sid = await open_call(gw, fake)
        utts = await collect(gw.probe, subjects.utterance(sid))
        await fake.media(silence(0.3) + complete_speech + silence(0.5))
        msg = await utts.get(60)
        meta = from_header(UtteranceMeta, msg.headers)
        eot = meta.end_of_turn
        assert eot is not None
        assert eot.reason == "model"
        assert eot.model_prob is not None and eot.model_prob >= 0.5
        assert eot.silence_ms < 8000
        # the probe heard exactly this speech: its transcript goes along, STT skips it
        assert meta.transcript is not None and meta.transcript.text == COMPLETE
        assert meta.timings.speculation_started == meta.transcript.started
        assert meta.transcript.started <= (meta.timings.utterance_published or 0)
        assert audio.duration_ms(msg.data) <= audio.duration_ms(stt.audio[-1])
        assert await metric(gw, "gateway_end_of_turn_total", reason="model") == 1
        assert await metric(gw, "gateway_speculations_total", outcome="used") == 1

        # the model hears an unfinished sentence: not cut there, although the words stop
        stt.text = "I was wondering."
        await fake.media(unfinished_speech + silence(0.5))
        await until_model_answered(gw)
        assert utts.queue.empty()
        await fake.media(silence(8.0))  # then the unsure maximum ends it
        meta = from_header(UtteranceMeta, (await utts.get(60)).headers)
        eot = meta.end_of_turn
        assert eot is not None and eot.reason == "unsure_timeout"
        assert eot.model_prob is not None and eot.model_prob < 0.5
        assert eot.silence_ms >= 8000


# ----------------------------------------------------------------- over our audio


def reply_audio(chunks: int) -> bytes:
    """A reply whose 40 ms chunks each hold a different byte, so order and gaps show."""
    return b"".join(bytes([0x20 + i % 200]) * 320 for i in range(chunks))


async def play(run: Running, sid: str, data: bytes) -> None:
    """One sentence of a reply, and its closing message."""
    text = "We are open until nine tonight, and from eight to five on Saturdays."
    for seq, (payload, last) in enumerate(((data, False), (b"", True))):
        meta = AudioMeta(
            session_id=sid,
            turn_id="turn_long",
            seq=seq,
            last=last,
            text="" if last else text,
            duration_ms=audio.duration_ms(payload),
            synth_ms=1.0,
        )
        await run.probe.publish(subjects.audio(sid), payload, headers=meta.header())


async def heard_by_caller(fake: FakeTwilio, until: str) -> tuple[bytes, list[str]]:
    """The media Twilio got until the first ``until`` event, and the events in order."""
    media, events = [], []
    while True:
        msg = await asyncio.wait_for(fake.received.get(), 60)
        events.append(msg["event"])
        if msg["event"] == "media":
            media.append(base64.b64decode(msg["media"]["payload"]))
        if msg["event"] == until:
            return b"".join(media), events


async def test_a_backchannel_holds_playback_and_it_plays_on_from_there(
    gateway: Running,
) -> None:
    async with stt_stand_in(gateway, "Uh-huh.") as stt, twilio_stream(gateway) as fake:
        sid = await open_call(gateway, fake)
        control = await collect(gateway.probe, subjects.ALL_CONTROL)
        utts = await collect(gateway.probe, subjects.utterance(sid))
        data = reply_audio(60)  # 2.4 s, sent at the pace it plays
        await play(gateway, sid, data)
        await fake.next_event("media")
        await fake.media(voiced_signal(0.3) + silence(1.5))  # "uh-huh" over it
        await until_metric(gateway, "gateway_backchannels_total", 1)
        media, events = await heard_by_caller(fake, "mark")
        # every frame of the reply once, in order, then its mark: no clear, nothing cut
        assert b"".join([data[:320], media]) == data
        assert "clear" not in events
        assert await metric(gateway, "gateway_playback_holds_total", outcome="backchannel") == 1
        assert await metric(gateway, "gateway_hold_seconds_count") == 1
        assert await metric(gateway, "gateway_barge_ins_total") == 0
        assert stt.audio  # the words were judged on a probe
        # the "uh-huh" is not a turn: the next utterance published is the caller's question
        await fake.mark("turn_long:0")
        await fake.media(voiced_signal(0.8) + silence(1.5))
        meta = from_header(UtteranceMeta, (await utts.get()).headers)
        assert meta.index == 0 and not meta.during_playback
        assert not any(isinstance(parse_control(m.data), BargeIn) for m in drain(control))


def drain(c: Collector) -> list[Msg]:
    out = []
    while not c.queue.empty():
        out.append(c.queue.get_nowait())
    return out


async def test_an_interruption_holds_then_clears_playback(gateway: Running) -> None:
    async with stt_stand_in(gateway, "Wait, I meant Tuesday."), twilio_stream(gateway) as fake:
        sid = await open_call(gateway, fake)
        control = await collect(gateway.probe, subjects.ALL_CONTROL)
        utts = await collect(gateway.probe, subjects.utterance(sid))
        await play(gateway, sid, reply_audio(60))
        await fake.next_event("media")
        await fake.media(voiced_signal(0.4))
        _, events = await heard_by_caller(fake, "clear")
        assert "mark" not in events  # cut before the sentence's end
        while True:
            barge = parse_control((await control.get()).data)
            if isinstance(barge, BargeIn):
                break
        assert barge.turn_id == "turn_long"
        await fake.media(voiced_signal(0.4) + silence(1.5))
        meta = from_header(UtteranceMeta, (await utts.get()).headers)
        assert meta.during_playback
        assert await metric(gateway, "gateway_playback_holds_total", outcome="words") == 1
        assert await metric(gateway, "gateway_backchannels_total") == 0


def test_the_turn_model_is_loaded_or_the_silence_rule_stands_in(tmp_path: Path) -> None:
    model = load_turn_model(make_settings("nats://127.0.0.1:1", turn_model_threads=1))
    assert model is not None and 0.0 <= model.predict(kokoro_ulaw(COMPLETE)) <= 1.0
    assert load_turn_model(make_settings("nats://127.0.0.1:1", end_of_turn="silence")) is None
    missing = make_settings("nats://127.0.0.1:1", turn_model_path=tmp_path / "none.onnx")
    with capture_logs() as logs:
        assert load_turn_model(missing) is None
    assert [entry["log_level"] for entry in logs] == ["warning"]
