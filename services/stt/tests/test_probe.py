"""Speculative transcription: ``stt.probe`` answers and pre-transcribed utterances.

The fake engines here make the worker's own rules observable (a slot taken, bad input,
no reply subject, a pre-transcribed utterance that must not be decoded); the last tests
run the real Whisper model on real speech."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import jiwer
import pytest
from stt_testkit import (
    SENTENCE,
    WAIT_S,
    StartStt,
    counter,
    eventually,
    next_transcript,
    normalise,
    publish_utterance,
    utterance_meta,
)

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import META_HEADER, Transcript, loads, new_id, now
from dealerline_common.speculation import SpeculativeTranscript, SttProbe, SttProbeResult
from dealerline_stt.engine import TranscribeResult, WhisperEngine
from dealerline_stt.probe import InvalidProbe, read_probe

SPEECH = b"\x10\x90" * 4000  # one second of "audio" for the fake engines


class FakeEngine:
    """Answers with fixed words; counts its calls; can hold a call until released."""

    def __init__(self, name: str = "fake", text: str = "hello there", gated: bool = False) -> None:
        self.name = name
        self.text = text
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        if not gated:
            self.release.set()

    def transcribe(self, audio: Any) -> TranscribeResult:
        self.calls += 1
        self.started.set()
        self.release.wait(WAIT_S)
        return TranscribeResult(text=self.text, language="en", confidence=0.8, no_speech_prob=0.1)


class BrokenEngine:
    name = "broken"

    def transcribe(self, audio: Any) -> TranscribeResult:
        raise RuntimeError("model fell over")


def probe_header(session_id: str = "sess-p", **fields: Any) -> dict[str, str]:
    probe = SttProbe(session_id="placeholder", probe_id=new_id("probe"), **fields)
    # Built as the wire would carry it, so a bad session id can be sent at all.
    return {META_HEADER: probe.model_copy(update={"session_id": session_id}).model_dump_json()}


async def ask(client: Bus, audio: bytes, headers: dict[str, str] | None) -> SttProbeResult:
    reply = await client.nc.request(subjects.STT_PROBE, audio, headers=headers, timeout=WAIT_S)
    return loads(SttProbeResult, reply.data)


def probes(service: Any, result: str) -> float:
    return counter(service, "stt_probes_total", result=result)


# ------------------------------------------------------------------ pure validation


def test_read_probe_accepts_a_good_request() -> None:
    headers = probe_header("sess-ok")
    probe, audio = read_probe(headers, SPEECH, max_audio_s=30.0)
    assert probe.session_id == "sess-ok"
    assert audio == SPEECH


@pytest.mark.parametrize(
    ("headers", "audio", "reason"),
    [
        (None, SPEECH, "bad probe header"),
        ({META_HEADER: "{not json"}, SPEECH, "bad probe header"),
        ({META_HEADER: '{"type": "dealerline.stt.probe.v1"}'}, SPEECH, "bad probe header"),
        (probe_header("call.with.dots"), SPEECH, "bad session id"),
        (probe_header(sample_rate=16000), SPEECH, "unsupported sample rate 16000"),
        (probe_header(), b"", "empty audio"),
        (probe_header(), b"\x7f" * (8000 * 3 + 1), "audio longer than 3 s"),
    ],
)
def test_read_probe_rejects_bad_requests(
    headers: dict[str, str] | None, audio: bytes, reason: str
) -> None:
    with pytest.raises(InvalidProbe, match=reason):
        read_probe(headers or {}, audio, max_audio_s=3.0)


# ------------------------------------------------------------------ fake engine, real NATS


async def test_a_probe_is_answered_with_the_engines_words(start_stt: StartStt, client: Bus) -> None:
    engine = FakeEngine(text="my number is five five five")
    service = await start_stt(engine=engine)
    headers = probe_header("sess-a")
    result = await ask(client, SPEECH, headers)
    sent = loads(SttProbe, headers[META_HEADER])
    assert (result.session_id, result.probe_id) == ("sess-a", sent.probe_id)
    assert result.error is None
    assert result.text == "my number is five five five"
    assert (result.language, result.confidence, result.no_speech_prob) == ("en", 0.8, 0.1)
    assert result.audio_ms == pytest.approx(1000.0)
    assert result.stt_ms > 0
    assert result.model == "fake"
    assert probes(service, "ok") == 1
    assert counter(service, "stt_probe_seconds_count") == 1


async def test_a_full_worker_answers_busy_at_once_and_the_first_probe_still_completes(
    start_stt: StartStt, client: Bus
) -> None:
    engine = FakeEngine(gated=True)
    try:
        service = await start_stt(engine=engine, probe_concurrency=1)
        first = asyncio.create_task(ask(client, SPEECH, probe_header("sess-b")))
        assert await asyncio.to_thread(engine.started.wait, WAIT_S)

        second = await ask(client, SPEECH, probe_header("sess-b"))  # the slot is taken
        assert second.error == "busy"
        assert second.session_id == "sess-b"
        assert second.text == ""
        assert probes(service, "busy") == 1

        engine.release.set()
        answered = await first
        assert answered.error is None
        assert answered.text == "hello there"
        assert engine.calls == 1  # the busy one never reached the model
    finally:
        engine.release.set()


async def test_bad_probes_are_answered_with_an_error_and_never_transcribed(
    start_stt: StartStt, client: Bus
) -> None:
    engine = FakeEngine()
    service = await start_stt(engine=engine, probe_max_audio_s=2.0)
    no_header = await ask(client, SPEECH, None)
    assert no_header.error is not None
    assert no_header.error.startswith("invalid: bad probe header")
    bad_sid = await ask(client, SPEECH, probe_header("a.b"))
    assert bad_sid.error == "invalid: bad session id"
    assert bad_sid.session_id == ""  # never echo what cannot be a session id
    rate = await ask(client, SPEECH, probe_header(sample_rate=16000))
    assert rate.error == "invalid: unsupported sample rate 16000"
    empty = await ask(client, b"", probe_header())
    assert empty.error == "invalid: empty audio"
    too_long = await ask(client, SPEECH * 3, probe_header())
    assert too_long.error == "invalid: audio longer than 2 s"
    assert probes(service, "rejected") == 5
    assert engine.calls == 0

    fine = await ask(client, SPEECH, probe_header())  # the worker keeps answering
    assert fine.error is None


async def test_a_probe_without_a_reply_subject_is_dropped_and_counted(
    start_stt: StartStt, client: Bus
) -> None:
    engine = FakeEngine()
    service = await start_stt(engine=engine)
    await client.nc.publish(subjects.STT_PROBE, SPEECH, headers=probe_header())
    await eventually(lambda: probes(service, "rejected") == 1)
    assert engine.calls == 0
    assert (await ask(client, SPEECH, probe_header())).error is None


async def test_a_failed_transcription_is_answered_failed(start_stt: StartStt, client: Bus) -> None:
    service = await start_stt(engine=BrokenEngine())
    result = await ask(client, SPEECH, probe_header("sess-f"))
    assert result.error == "failed"
    assert result.session_id == "sess-f"
    assert probes(service, "error") == 1
    assert (await ask(client, SPEECH, probe_header("sess-f"))).error == "failed"  # still serving


async def test_probes_publish_nothing_durable(start_stt: StartStt, client: Bus) -> None:
    await start_stt(engine=FakeEngine())
    assert (await ask(client, SPEECH, probe_header("sess-d"))).error is None
    stream = await client.js.stream_info(subjects.STREAM_TRANSCRIPTS)
    assert stream.state.messages == 0


async def test_probes_off_means_this_worker_is_not_in_the_group(
    start_stt: StartStt, client: Bus
) -> None:
    await start_stt(engine=FakeEngine(name="no-probes"), probe_concurrency=0)
    await start_stt(engine=FakeEngine(name="prober"))
    for _ in range(6):
        assert (await ask(client, SPEECH, probe_header())).model == "prober"


async def test_a_draining_worker_finishes_its_probe_and_takes_no_more(
    start_stt: StartStt, client: Bus
) -> None:
    gated = FakeEngine(name="draining", gated=True)
    try:
        leaving = await start_stt(engine=gated, drain_timeout_s=WAIT_S)
        in_flight = asyncio.create_task(ask(client, SPEECH, probe_header("sess-g")))
        assert await asyncio.to_thread(gated.started.wait, WAIT_S)
        await start_stt(engine=FakeEngine(name="staying"))

        drain = asyncio.create_task(leaving.drain(), name="drain")
        await eventually(lambda: leaving.probes is not None and leaving.probes.draining)
        for _ in range(4):  # new probes go to the worker that stays
            assert (await ask(client, SPEECH, probe_header("sess-g"))).model == "staying"
        gated.release.set()
        answered = await in_flight
        assert (answered.model, answered.error) == ("draining", None)
        await asyncio.wait_for(drain, WAIT_S)
        assert gated.calls == 1
    finally:
        gated.release.set()


async def test_a_pre_transcribed_utterance_is_published_without_decoding(
    start_stt: StartStt, client: Bus
) -> None:
    engine = FakeEngine(text="decoded again: wrong")
    service = await start_stt(engine=engine)
    started = now() - 0.5
    meta = utterance_meta("sess-s", SPEECH).model_copy(
        update={
            "transcript": SpeculativeTranscript(
                probe_id="probe_1",
                text="Tuesday at nine works.",
                language="en",
                confidence=0.7,
                no_speech_prob=0.02,
                stt_ms=321.0,
                model="tiny.en",
                started=started,
            )
        }
    )
    sub = await client.nc.subscribe(subjects.transcript("sess-s"))
    await publish_utterance(client, meta, SPEECH)

    transcript = await next_transcript(sub)
    assert transcript.utterance_id == meta.utterance_id
    assert transcript.text == "Tuesday at nine works."
    assert (transcript.language, transcript.confidence, transcript.no_speech_prob) == (
        "en",
        0.7,
        0.02,
    )
    assert transcript.stt_ms == 321.0
    assert transcript.model == "tiny.en"
    assert transcript.audio_ms == pytest.approx(1000.0)
    t = transcript.timings
    assert t.speech_end == meta.timings.speech_end
    assert t.stt_started == started
    assert t.transcript_published is not None
    assert t.transcript_published >= started
    await eventually(lambda: counter(service, "stt_jobs_total", result="speculative") == 1)
    assert engine.calls == 0
    assert counter(service, "stt_jobs_total", result="ok") == 0


async def test_a_pre_transcribed_utterance_is_still_validated(
    start_stt: StartStt, client: Bus
) -> None:
    engine = FakeEngine()
    service = await start_stt(engine=engine)
    spec = SpeculativeTranscript(probe_id="p", text="hi", stt_ms=1.0, model="m", started=now())
    meta = utterance_meta("sess-v", SPEECH).model_copy(
        update={"transcript": spec, "sample_rate": 16000}
    )
    await publish_utterance(client, meta, SPEECH)
    await eventually(lambda: counter(service, "stt_jobs_total", result="rejected") == 1)
    assert counter(service, "stt_jobs_total", result="speculative") == 0


# ------------------------------------------------------------------ the real model


class CountingEngine:
    """The real model, counting how often it is asked."""

    def __init__(self, inner: WhisperEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def transcribe(self, audio: Any) -> TranscribeResult:
        self.calls += 1
        return self.inner.transcribe(audio)


async def test_whisper_answers_a_probe_and_its_words_become_the_transcript(
    start_stt: StartStt,
    client: Bus,
    whisper_engine: WhisperEngine,
    speak: Callable[[str], bytes],
) -> None:
    engine = CountingEngine(whisper_engine)
    service = await start_stt(engine=engine)
    audio = await asyncio.to_thread(speak, SENTENCE)
    asked = now()
    result = await ask(client, audio, probe_header("sess-w"))
    assert result.error is None
    assert jiwer.wer(normalise(SENTENCE), normalise(result.text)) < 0.2
    assert result.language == "en"
    assert result.confidence is not None
    assert result.model == "tiny.en"
    assert result.audio_ms == pytest.approx(len(audio) / 8.0, abs=1.0)
    assert engine.calls == 1

    # The turn ended with no speech after the probe: the utterance carries its words.
    spec = SpeculativeTranscript(
        probe_id=result.probe_id,
        text=result.text,
        language=result.language,
        confidence=result.confidence,
        no_speech_prob=result.no_speech_prob,
        stt_ms=result.stt_ms,
        model=result.model,
        started=asked,
    )
    meta = utterance_meta("sess-w", audio).model_copy(update={"transcript": spec})
    sub = await client.nc.subscribe(subjects.transcript("sess-w"))
    await publish_utterance(client, meta, audio)
    transcript: Transcript = await next_transcript(sub)
    assert transcript.utterance_id == meta.utterance_id
    assert transcript.text == result.text
    assert transcript.stt_ms == result.stt_ms
    assert transcript.timings.stt_started == asked
    assert engine.calls == 1  # not decoded again
    await eventually(lambda: counter(service, "stt_jobs_total", result="speculative") == 1)
    stream = await client.js.stream_info(subjects.STREAM_TRANSCRIPTS)
    assert stream.state.messages == 1  # the transcript is durable; the probe left nothing
