"""The STT worker against a real nats-server and the real Whisper model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
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
from dealerline_common.audio import ULAW_SILENCE
from dealerline_common.bus import Bus
from dealerline_stt.engine import TranscribeResult, WhisperEngine


async def test_transcribes_an_utterance(
    start_stt: StartStt, client: Bus, whisper_engine: WhisperEngine, speak: Callable[[str], bytes]
) -> None:
    service = await start_stt(engine=whisper_engine)
    audio = await asyncio.to_thread(speak, SENTENCE)
    meta = utterance_meta("sess-1", audio)
    sub = await client.nc.subscribe(subjects.transcript("sess-1"))
    await publish_utterance(client, meta, audio)

    transcript = await next_transcript(sub)
    assert transcript.utterance_id == meta.utterance_id
    assert transcript.session_id == "sess-1"
    assert jiwer.wer(normalise(SENTENCE), normalise(transcript.text)) < 0.2
    assert transcript.text == transcript.text.strip()
    assert transcript.language == "en"
    assert transcript.confidence is not None
    assert 0.0 <= transcript.confidence <= 1.0
    assert transcript.audio_ms == pytest.approx(len(audio) / 8.0, abs=1.0)
    assert transcript.stt_ms > 0
    assert transcript.model == "tiny.en"
    t = transcript.timings
    assert t.speech_end == meta.timings.speech_end
    assert t.utterance_published is not None
    assert t.stt_started is not None
    assert t.transcript_published is not None
    assert t.utterance_published <= t.stt_started <= t.transcript_published
    await eventually(lambda: counter(service, "stt_jobs_total", result="ok") == 1)


async def test_noise_gives_an_empty_transcript(
    start_stt: StartStt, client: Bus, whisper_engine: WhisperEngine
) -> None:
    await start_stt(engine=whisper_engine)
    silence = bytes([ULAW_SILENCE]) * 8000
    meta = utterance_meta("sess-2", silence)
    sub = await client.nc.subscribe(subjects.transcript("sess-2"))
    await publish_utterance(client, meta, silence)

    transcript = await next_transcript(sub)
    assert transcript.utterance_id == meta.utterance_id
    assert transcript.text == ""


async def test_poison_message_is_terminated_and_the_worker_keeps_serving(
    start_stt: StartStt, client: Bus, whisper_engine: WhisperEngine, speak: Callable[[str], bytes]
) -> None:
    service = await start_stt(engine=whisper_engine)
    sub = await client.nc.subscribe(subjects.transcript("sess-3"))
    await client.publish_durable(subjects.utterance("sess-3"), b"\xff" * 800)  # no header
    audio = await asyncio.to_thread(speak, "Yes, that works for me.")
    meta = utterance_meta("sess-3", audio, index=1)
    await publish_utterance(client, meta, audio)

    transcript = await next_transcript(sub)
    assert transcript.utterance_id == meta.utterance_id  # the poison one produced nothing
    assert counter(service, "stt_jobs_total", result="rejected") == 1

    async def queue_empty() -> bool:
        # Terminated and acked jobs both leave the work queue.
        stream = await client.js.stream_info(subjects.STREAM_UTTERANCES)
        return stream.state.messages == 0

    await eventually(queue_empty)
    info = await client.js.consumer_info(subjects.STREAM_UTTERANCES, subjects.GROUP_STT)
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 0


class BlockingEngine:
    """Takes a job and never finishes it until released: a worker about to crash."""

    name = "blocking"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def transcribe(self, audio: object) -> TranscribeResult:
        self.started.set()
        self.release.wait(WAIT_S)
        return TranscribeResult(
            text="never published", language="en", confidence=None, no_speech_prob=None
        )


async def test_a_dead_workers_job_is_redelivered_to_another(
    start_stt: StartStt, client: Bus, whisper_engine: WhisperEngine, speak: Callable[[str], bytes]
) -> None:
    blocking = BlockingEngine()
    try:
        doomed = await start_stt(engine=blocking, ack_wait_s=1.0)
        audio = await asyncio.to_thread(speak, "My check engine light came on yesterday.")
        meta = utterance_meta("sess-4", audio)
        sub = await client.nc.subscribe(subjects.transcript("sess-4"))
        await publish_utterance(client, meta, audio)
        assert await asyncio.to_thread(blocking.started.wait, WAIT_S)
        await doomed.kill()

        survivor = await start_stt(engine=whisper_engine, ack_wait_s=1.0)
        transcript = await next_transcript(sub)
        assert transcript.utterance_id == meta.utterance_id
        assert "engine" in normalise(transcript.text)
        assert transcript.model == "tiny.en"
        assert counter(survivor, "bus_redelivered_total", subject_kind="stt") == 1
    finally:
        blocking.release.set()


async def test_readiness_follows_the_lifecycle(
    start_stt: StartStt, whisper_engine: WhisperEngine
) -> None:
    service = await start_stt(engine=whisper_engine)
    base = f"http://127.0.0.1:{service.http.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        metrics = (await http.get("/metrics")).text
        assert "dealerline_stt_jobs_in_flight" in metrics
        assert "dealerline_stt_real_time_factor" in metrics
        service.health.draining = True
        assert (await http.get("/readyz")).status_code == 503


# ------------------------------------------------------------------ drain (SIGTERM)


class GatedEngine:
    """The real model behind a gate: a job stays in flight until the test opens it."""

    def __init__(self, inner: WhisperEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def transcribe(self, audio: Any) -> TranscribeResult:
        self.calls += 1
        self.started.set()
        self.release.wait(WAIT_S)
        return self.inner.transcribe(audio)


async def test_drain_finishes_the_job_in_flight_and_takes_no_new_one(
    start_stt: StartStt, client: Bus, whisper_engine: WhisperEngine, speak: Callable[[str], bytes]
) -> None:
    gated = GatedEngine(whisper_engine)
    try:
        service = await start_stt(engine=gated, drain_timeout_s=WAIT_S)
        audio = await asyncio.to_thread(speak, "Can you check my brakes on Friday?")
        first = utterance_meta("sess-6", audio)
        second = utterance_meta("sess-6", audio, index=1)
        sub = await client.nc.subscribe(subjects.transcript("sess-6"))
        await publish_utterance(client, first, audio)
        assert await asyncio.to_thread(gated.started.wait, WAIT_S)
        assert counter(service, "stt_jobs_in_flight") == 1
        assert counter(service, "stt_worker_capacity") == 1

        drain = asyncio.create_task(service.drain(), name="drain")
        await eventually(lambda: service.health.draining)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as http:
            assert (await http.get("/readyz")).status_code == 503  # out of the load balancer
            assert (await http.get("/livez")).status_code == 200
        assert counter(service, "stt_worker_capacity") == 0  # the autoscaler stops counting it
        assert counter(service, "service_draining") == 1
        await publish_utterance(client, second, audio)  # arrives while draining

        gated.release.set()
        transcript = await next_transcript(sub)
        assert transcript.utterance_id == first.utterance_id  # the job in flight finished
        assert "brakes" in normalise(transcript.text)
        await asyncio.wait_for(drain, WAIT_S)
        assert gated.calls == 1  # the draining worker started nothing new

        info = await client.js.consumer_info(subjects.STREAM_UTTERANCES, subjects.GROUP_STT)
        assert info.num_ack_pending == 0  # acked the finished job; nothing left held
        stream = await client.js.stream_info(subjects.STREAM_UTTERANCES)
        assert stream.state.messages == 1  # only the second is waiting, for another worker

        await start_stt(engine=whisper_engine)
        transcript = await next_transcript(sub)
        assert transcript.utterance_id == second.utterance_id
    finally:
        gated.release.set()


async def test_a_job_unfinished_at_the_drain_deadline_is_handed_back_at_once(
    start_stt: StartStt, client: Bus, whisper_engine: WhisperEngine, speak: Callable[[str], bytes]
) -> None:
    blocking = BlockingEngine()
    try:
        # ack_wait far beyond the test's patience: only a hand-back brings the job back.
        doomed = await start_stt(engine=blocking, drain_timeout_s=2.0, ack_wait_s=3600.0)
        audio = await asyncio.to_thread(speak, "My check engine light came on yesterday.")
        meta = utterance_meta("sess-7", audio)
        sub = await client.nc.subscribe(subjects.transcript("sess-7"))
        await publish_utterance(client, meta, audio)
        assert await asyncio.to_thread(blocking.started.wait, WAIT_S)

        await asyncio.wait_for(doomed.drain(), WAIT_S)
        assert counter(doomed, "bus_handed_back_total", subject_kind="stt", reason="deadline") == 1

        survivor = await start_stt(engine=whisper_engine, ack_wait_s=3600.0)
        transcript = await next_transcript(sub)
        assert transcript.utterance_id == meta.utterance_id
        assert "engine" in normalise(transcript.text)
        assert counter(survivor, "bus_redelivered_total", subject_kind="stt") == 1
    finally:
        blocking.release.set()
