"""The TTS worker against a real nats-server and the real Kokoro model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from nats.aio.subscription import Subscription
from structlog.testing import capture_logs

from dealerline_common import subjects
from dealerline_common.audio import float_to_ulaw, ulaw_to_pcm16
from dealerline_common.bus import Bus
from dealerline_common.messages import (
    AudioMeta,
    BargeIn,
    Say,
    StreamStarted,
    StreamStopped,
    TurnTimings,
    from_header,
    now,
)
from dealerline_tts.engine import KokoroEngine
from dealerline_tts.service import TtsService
from dealerline_tts.settings import DEFAULT_PREWARM
from dealerline_tts.text import normalize_text

WAIT_S = 120  # a safety net against hanging, not a latency assertion

StartTts = Callable[..., Awaitable[TtsService]]


async def eventually(check: Callable[[], Any]) -> None:
    """Wait for a condition that follows an event the test already caused; the limit only
    guards against hanging."""
    for _ in range(WAIT_S * 20):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never became true")


def sample(service: TtsService, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(f"dealerline_{name}", labels or None)
    return value or 0.0


async def say(
    client: Bus,
    session_id: str,
    turn_id: str,
    seq: int,
    text: str,
    last: bool = False,
    expects: Any = None,
    voice: str | None = None,
) -> None:
    message = Say(
        session_id=session_id,
        turn_id=turn_id,
        utterance_id="utt_1",
        seq=seq,
        text=text,
        last=last,
        timings=TurnTimings(first_sentence=now()) if seq == 0 else TurnTimings(),
        expects=expects,
        voice=voice,
    )
    await client.publish_durable(subjects.say(session_id), message)


async def next_audio(sub: Subscription) -> tuple[AudioMeta, bytes]:
    msg = await sub.next_msg(timeout=WAIT_S)
    return from_header(AudioMeta, dict(msg.headers or {})), bytes(msg.data)


async def test_a_sentence_becomes_mulaw_audio(
    start_tts: StartTts, client: Bus, kokoro_engine: KokoroEngine
) -> None:
    service = await start_tts(engine=kokoro_engine)
    sub = await client.nc.subscribe(subjects.audio("sess-1"))
    await say(client, "sess-1", "turn_1", 0, "Sure, I can book that oil change for you.")
    await say(client, "sess-1", "turn_1", 1, "", last=True)

    meta, audio = await next_audio(sub)
    assert (meta.session_id, meta.turn_id, meta.utterance_id, meta.seq) == (
        "sess-1",
        "turn_1",
        "utt_1",
        0,
    )
    assert meta.last is False
    assert meta.text == "Sure, I can book that oil change for you."
    assert meta.duration_ms == pytest.approx(len(audio) / 8.0, abs=0.2)
    assert 1000 < meta.duration_ms < 6000  # ~9 words of speech
    assert meta.synth_ms > 0
    pcm = np.abs(ulaw_to_pcm16(audio).astype(np.int32))
    assert pcm.max() > 3000  # speech, not silence
    onset = int(np.argmax(pcm > pcm.max() * 0.01))
    assert onset < 8000 * 0.1  # leading silence trimmed: sound starts within 100 ms
    t = meta.timings
    assert t.first_sentence is not None
    assert t.tts_started is not None
    assert t.first_audio is not None
    assert t.first_sentence <= t.tts_started <= t.first_audio

    end, payload = await next_audio(sub)
    assert (end.seq, end.last, end.duration_ms, payload) == (1, True, 0.0, b"")
    assert end.timings.first_audio is None  # only the first sentence stamps first_audio
    await eventually(lambda: sample(service, "tts_jobs_total", result="empty") == 1)
    assert sample(service, "tts_jobs_total", result="ok") == 1


async def test_a_barge_in_cancels_the_turn_before_synthesis(
    start_tts: StartTts, client: Bus, kokoro_engine: KokoroEngine
) -> None:
    service = await start_tts(engine=kokoro_engine)
    sub = await client.nc.subscribe(subjects.audio("sess-2"))
    await client.publish(subjects.control("sess-2"), b"not json")  # ignored, logged
    barge = BargeIn(session_id="sess-2", turn_id="turn_1", heard_text="Sure,", heard_seqs=[0])
    await client.publish(subjects.control("sess-2"), barge)
    await eventually(lambda: service.cancelled.is_cancelled("sess-2", "turn_1"))

    await say(client, "sess-2", "turn_1", 1, "This sentence must never be heard.")
    await say(client, "sess-2", "turn_1", 2, "", last=True)
    await say(client, "sess-2", "turn_2", 0, "Okay.", last=True)

    meta, audio = await next_audio(sub)  # the worker runs one job at a time, in order
    assert (meta.turn_id, meta.seq, meta.last) == ("turn_2", 0, True)
    assert audio
    assert sample(service, "tts_dropped_total", stage="before_synthesis") == 2


class GatedEngine:
    """Holds each synthesis until released, so a test can act while it runs."""

    name = "gated"
    sample_rate = 24000

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def synthesize(self, text: str) -> np.ndarray:
        self.started.set()
        self.release.wait(WAIT_S)
        return np.full(2400, 0.1, dtype=np.float32)


async def test_a_barge_in_during_synthesis_drops_the_result(
    start_tts: StartTts, client: Bus
) -> None:
    gated = GatedEngine()
    try:
        service = await start_tts(engine=gated)
        sub = await client.nc.subscribe(subjects.audio("sess-3"))
        await say(client, "sess-3", "turn_1", 0, "A long answer the caller talks over.")
        assert await asyncio.to_thread(gated.started.wait, WAIT_S)
        await client.publish(
            subjects.control("sess-3"),
            BargeIn(session_id="sess-3", turn_id="turn_1", heard_text=""),
        )
        await eventually(lambda: service.cancelled.is_cancelled("sess-3", "turn_1"))
        gated.release.set()
        await eventually(lambda: sample(service, "tts_dropped_total", stage="before_publish") == 1)
        await say(client, "sess-3", "turn_2", 0, "Next.", last=True)
        meta, _ = await next_audio(sub)
        assert meta.turn_id == "turn_2"
    finally:
        gated.release.set()


async def test_a_stopped_stream_drops_its_sentences_until_it_resumes(
    start_tts: StartTts, client: Bus, kokoro_engine: KokoroEngine
) -> None:
    service = await start_tts(engine=kokoro_engine)
    sub = await client.nc.subscribe(subjects.audio("sess-4"))
    await client.publish(subjects.control("sess-4"), StreamStopped(session_id="sess-4"))
    await eventually(lambda: service.cancelled.is_cancelled("sess-4", "any"))
    await say(client, "sess-4", "turn_1", 0, "Nobody is on the line.", last=True)
    await eventually(lambda: sample(service, "tts_dropped_total", stage="before_synthesis") == 1)

    resumed = StreamStarted(
        session_id="sess-4", call_sid="CA1", stream_sid="MZ2", resumed=True, reason="return"
    )
    await client.publish(subjects.control("sess-4"), resumed)
    await eventually(lambda: not service.cancelled.is_cancelled("sess-4", "turn_2"))
    await say(client, "sess-4", "turn_2", 0, "Welcome back.", last=True)
    meta, audio = await next_audio(sub)
    assert meta.turn_id == "turn_2"
    assert audio


async def test_poison_message_is_terminated_and_the_worker_keeps_serving(
    start_tts: StartTts, client: Bus, kokoro_engine: KokoroEngine
) -> None:
    service = await start_tts(engine=kokoro_engine)
    sub = await client.nc.subscribe(subjects.audio("sess-5"))
    await client.publish_durable(subjects.say("sess-5"), b"{not a say")
    await say(client, "sess-5", "turn_1", 0, "Still here.", last=True)

    meta, audio = await next_audio(sub)
    assert meta.text == "Still here."
    assert audio
    assert sample(service, "tts_jobs_total", result="rejected") == 1
    info = await client.js.consumer_info(subjects.STREAM_SAY, subjects.GROUP_TTS)
    assert info.num_redelivered == 0


async def test_a_dead_workers_sentence_is_redelivered_to_another(
    start_tts: StartTts, client: Bus, kokoro_engine: KokoroEngine
) -> None:
    gated = GatedEngine()
    try:
        doomed = await start_tts(engine=gated, ack_wait_s=1.0)
        sub = await client.nc.subscribe(subjects.audio("sess-6"))
        await say(client, "sess-6", "turn_1", 0, "Your car is ready for pick up.", last=True)
        assert await asyncio.to_thread(gated.started.wait, WAIT_S)
        await doomed.kill()

        survivor = await start_tts(engine=kokoro_engine, ack_wait_s=1.0)
        meta, audio = await next_audio(sub)
        assert meta.text == "Your car is ready for pick up."
        assert len(audio) > 8000 * 0.5  # real speech from the survivor, not the gated tone
        assert sample(survivor, "bus_redelivered_total", subject_kind="tts") == 1
    finally:
        gated.release.set()


async def test_readiness_and_metrics_endpoints(
    start_tts: StartTts, kokoro_engine: KokoroEngine
) -> None:
    service = await start_tts(engine=kokoro_engine)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as http:
        assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        body = (await http.get("/metrics")).text
        assert "dealerline_tts_dropped_total" in body
        assert "dealerline_tts_synth_seconds" in body
        service.health.draining = True
        assert (await http.get("/readyz")).status_code == 503


class ToneEngine:
    """A fast stand-in for the model: a short tone for any text."""

    name = "tone"
    sample_rate = 24000

    def __init__(self) -> None:
        self.calls = 0

    def synthesize(self, text: str) -> np.ndarray:
        self.calls += 1
        return np.full(2400, 0.1, dtype=np.float32)


class FailingEngine(ToneEngine):
    """Fails the first ``failures`` syntheses (every one by default)."""

    name = "failing"

    def __init__(self, failures: int = 1_000_000) -> None:
        super().__init__()
        self.failures = failures

    def synthesize(self, text: str) -> np.ndarray:
        audio = super().synthesize(text)
        if self.calls <= self.failures:
            raise RuntimeError("synthesis exploded")
        return audio


async def test_a_late_stop_of_the_replaced_stream_does_not_silence_the_resumed_call(
    start_tts: StartTts, client: Bus
) -> None:
    service = await start_tts(engine=ToneEngine())
    sub = await client.nc.subscribe(subjects.audio("sess-7"))
    control = subjects.control("sess-7")
    await client.publish(
        control, StreamStarted(session_id="sess-7", call_sid="CA7", stream_sid="MZ1")
    )
    resumed = StreamStarted(
        session_id="sess-7", call_sid="CA7", stream_sid="MZ2", resumed=True, reason="return"
    )
    await client.publish(control, resumed)
    # The first stream's stop, torn down slowly by another gateway, lands after the resume.
    await client.publish(control, StreamStopped(session_id="sess-7", stream_sid="MZ1"))
    await eventually(lambda: sample(service, "tts_control_ignored_total", reason="stale_stop") == 1)
    assert not service.cancelled.is_cancelled("sess-7", "turn_1")

    await say(client, "sess-7", "turn_1", 0, "Welcome back.", last=True)
    meta, audio = await next_audio(sub)
    assert (meta.turn_id, meta.seq, meta.last) == ("turn_1", 0, True)
    assert audio

    # The resumed stream's own stop still mutes the session.
    await client.publish(control, StreamStopped(session_id="sess-7", stream_sid="MZ2"))
    await eventually(lambda: service.cancelled.is_cancelled("sess-7", "turn_2"))
    await say(client, "sess-7", "turn_2", 0, "Nobody is on the line.", last=True)
    await eventually(lambda: sample(service, "tts_dropped_total", stage="before_synthesis") == 1)
    assert sample(service, "tts_control_ignored_total", reason="stale_stop") == 1


async def test_a_sentence_that_never_synthesizes_still_gets_an_empty_answer(
    start_tts: StartTts, client: Bus
) -> None:
    engine = FailingEngine()
    service = await start_tts(engine=engine, max_deliver=2)
    sub = await client.nc.subscribe(subjects.audio("sess-8"))
    await say(client, "sess-8", "turn_1", 0, "This can never be spoken.")
    await say(client, "sess-8", "turn_1", 1, "", last=True)

    answers = sorted([await next_audio(sub), await next_audio(sub)], key=lambda a: a[0].seq)
    (failed, silence), (end, end_payload) = answers
    assert (failed.turn_id, failed.utterance_id, failed.seq, failed.last) == (
        "turn_1",
        "utt_1",
        0,
        False,
    )
    assert (silence, failed.text, failed.duration_ms, failed.synth_ms) == (b"", "", 0.0, 0.0)
    assert failed.timings.first_sentence is not None  # the turn's timings travel on
    assert failed.timings.first_audio is None  # no audio was made
    assert (end.seq, end.last, end_payload) == (1, True, b"")
    assert engine.calls == 2  # tried on every delivery, answered only on the last
    assert sample(service, "tts_failed_total", reason="error") == 1
    assert sample(service, "tts_jobs_total", result="error") == 2

    # A failing closing sentence keeps its `last`, so the gateway closes the turn.
    await say(client, "sess-8", "turn_2", 0, "Goodbye.", last=True)
    meta, payload = await next_audio(sub)
    assert (meta.turn_id, meta.seq, meta.last, meta.text, payload) == (
        "turn_2",
        0,
        True,
        "",
        b"",
    )
    assert sample(service, "tts_failed_total", reason="error") == 2

    async def settled() -> bool:  # terminated, neither pending nor waiting for an ack
        info = await client.js.consumer_info(subjects.STREAM_SAY, subjects.GROUP_TTS)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    for _ in range(WAIT_S * 20):
        if await settled():
            break
        await asyncio.sleep(0.05)
    assert await settled()


async def test_a_retried_sentence_gets_no_failure_answer_before_it_succeeds(
    start_tts: StartTts, client: Bus
) -> None:
    engine = FailingEngine(failures=1)
    service = await start_tts(engine=engine, max_deliver=3)
    sub = await client.nc.subscribe(subjects.audio("sess-9"))
    await say(client, "sess-9", "turn_1", 0, "Second time lucky.", last=True)

    meta, audio = await next_audio(sub)  # a failure answer would have come first
    assert (meta.seq, meta.last, meta.text) == (0, True, "Second time lucky.")
    assert audio
    assert engine.calls == 2
    assert sample(service, "tts_jobs_total", result="error") == 1
    assert sample(service, "tts_failed_total", reason="error") == 0


async def test_a_rejected_sentence_that_names_its_place_gets_an_empty_answer(
    start_tts: StartTts, client: Bus
) -> None:
    service = await start_tts(engine=ToneEngine(), max_text_chars=20)
    sub = await client.nc.subscribe(subjects.ALL_AUDIO)
    subject = subjects.say("sess-10")
    await say(client, "sess-10", "turn_1", 0, "A sentence far longer than twenty characters.")
    unknown_field = {
        "type": "dealerline.say.v1",
        "session_id": "sess-10",
        "turn_id": "turn_1",
        "seq": 1,
        "text": "Bye.",
        "last": True,
        "mood": "cheerful",
    }
    await client.publish_durable(subject, json.dumps(unknown_field).encode())
    await client.publish_durable(subject, b"{not a say")  # nothing to answer
    elsewhere = Say(session_id="sess-other", turn_id="turn_1", seq=2, text="Hi.", last=True)
    await client.publish_durable(subject, elsewhere)  # whose session? not answered
    await say(client, "sess-10", "turn_2", 0, "Okay.", last=True)

    # One worker, no retries: the answers come in the order the sentences were stored.
    first, first_payload = await next_audio(sub)
    assert (first.session_id, first.turn_id, first.seq, first.last, first.text) == (
        "sess-10",
        "turn_1",
        0,
        False,
        "",
    )
    assert (first_payload, first.duration_ms) == (b"", 0.0)
    second, second_payload = await next_audio(sub)
    assert (second.turn_id, second.seq, second.last, second.text, second_payload) == (
        "turn_1",
        1,
        True,
        "",
        b"",
    )
    third, third_payload = await next_audio(sub)
    assert (third.session_id, third.turn_id, third.text) == ("sess-10", "turn_2", "Okay.")
    assert third_payload
    assert sample(service, "tts_jobs_total", result="rejected") == 4
    assert sample(service, "tts_failed_total", reason="rejected") == 2


class FailingGatedEngine(GatedEngine):
    def synthesize(self, text: str) -> np.ndarray:
        super().synthesize(text)
        raise RuntimeError("synthesis exploded")


async def test_a_cancelled_turn_gets_no_failure_answer(start_tts: StartTts, client: Bus) -> None:
    gated = FailingGatedEngine()
    try:
        service = await start_tts(engine=gated, max_deliver=1)
        sub = await client.nc.subscribe(subjects.audio("sess-11"))
        await say(client, "sess-11", "turn_1", 0, "The caller talks over this.", last=True)
        assert await asyncio.to_thread(gated.started.wait, WAIT_S)
        await client.publish(
            subjects.control("sess-11"),
            BargeIn(session_id="sess-11", turn_id="turn_1", heard_text=""),
        )
        await eventually(lambda: service.cancelled.is_cancelled("sess-11", "turn_1"))
        gated.release.set()
        await eventually(lambda: sample(service, "tts_dropped_total", stage="after_failure") == 1)
        service.engine = ToneEngine()
        await say(client, "sess-11", "turn_2", 0, "Next.", last=True)
        meta, audio = await next_audio(sub)
        assert meta.turn_id == "turn_2"
        assert audio
        assert sample(service, "tts_failed_total", reason="error") == 0
    finally:
        gated.release.set()


# ---------------------------------------------------------------------- phrase cache


class ToneByTextEngine(ToneEngine):
    """A tone whose length depends on the text, so each phrase has its own audio."""

    name = "tone-by-text"

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def synthesize(self, text: str) -> np.ndarray:
        self.calls += 1
        self.texts.append(text)
        return np.full(240 * len(text), 0.1, dtype=np.float32)


async def test_a_cached_phrase_is_published_without_synthesis(
    start_tts: StartTts, client: Bus
) -> None:
    engine = ToneByTextEngine()
    service = await start_tts(engine=engine, prewarm=["Sure,", "One moment."])
    assert engine.texts == ["Sure,", "One moment."]  # spoken before any work was taken
    assert "Sure," in service.phrases and "One moment." in service.phrases
    sub = await client.nc.subscribe(subjects.audio("sess-c1"))
    await say(client, "sess-c1", "turn_1", 0, "Sure,")
    await say(client, "sess-c1", "turn_1", 1, "I can book that.")
    await say(client, "sess-c1", "turn_1", 2, "", last=True, expects="phone")

    first, audio = await next_audio(sub)
    assert (first.seq, first.text, first.synth_ms) == (0, "Sure,", 0.0)
    assert audio == float_to_ulaw(np.full(240 * 5, 0.1, dtype=np.float32), 24000)
    assert first.duration_ms == pytest.approx(len(audio) / 8.0, abs=0.2)
    assert first.timings.first_audio is not None  # a cached first piece stamps it too
    second, _ = await next_audio(sub)
    assert (second.seq, second.text) == (1, "I can book that.")
    closing, payload = await next_audio(sub)
    assert (closing.seq, closing.last, closing.expects, payload) == (2, True, "phone", b"")
    assert engine.texts[2:] == ["I can book that."]  # the cached phrase was not synthesized
    assert first.expects is None and second.expects is None

    # A short sentence, once synthesized, is kept too; a long one never is.
    long = "This sentence is far too long to be kept in the phrase cache, which holds up to eighty."
    await say(client, "sess-c1", "turn_2", 0, "I can book that.")
    await say(client, "sess-c1", "turn_2", 1, long, last=True, expects="yes_no")
    again, _ = await next_audio(sub)
    assert (again.text, again.synth_ms) == ("I can book that.", 0.0)
    closing, audio = await next_audio(sub)
    assert (closing.text, closing.last, closing.expects) == (long, True, "yes_no")
    assert audio and long not in service.phrases
    assert engine.texts[2:] == ["I can book that.", long]
    await eventually(lambda: sample(service, "tts_cache_total", result="bypass") == 1)
    assert sample(service, "tts_cache_total", result="hit") == 2
    assert sample(service, "tts_cache_total", result="miss") == 1
    assert sample(service, "tts_cache_entries") == 3
    assert sample(service, "tts_cache_bytes") == service.phrases.bytes > 0


async def test_the_default_openers_are_spoken_into_the_cache_before_work(
    start_tts: StartTts,
) -> None:
    engine = ToneByTextEngine()
    too_long = "A phrase longer than the cache keeps is not spoken at start, since it runs well past eighty characters."
    service = await start_tts(engine=engine, prewarm=[*DEFAULT_PREWARM, too_long, "  "])
    assert engine.texts == list(DEFAULT_PREWARM)  # the long and the empty one skipped
    assert len(service.phrases) == len(DEFAULT_PREWARM)
    for phrase in ("Sure,", "Okay,", "Of course,", "Got it.", "Let me check that for you."):
        assert phrase in service.phrases
    assert sample(service, "tts_cache_entries") == len(DEFAULT_PREWARM)
    assert service.health.ready

    # No cache (TTS_CACHE_MAX_CHARS=0): nothing is pre-warmed, the plain warm-up runs.
    bare = ToneByTextEngine()
    off = await start_tts(engine=bare, prewarm=["Sure,"], cache_max_chars=0)
    assert bare.texts == [] and len(off.phrases) == 0


class IdentifiedEngine(ToneByTextEngine):
    """A fake that can say what its audio depends on, so its phrases may be saved."""

    def __init__(self, identity: str) -> None:
        super().__init__()
        self.identity = identity
        self.warm_ups = 0

    def warm_up(self) -> None:
        self.warm_ups += 1


def phrase_files(folder: Path) -> int:
    return len(list(folder.glob("*.phrases")))


async def test_prewarmed_phrases_are_saved_for_the_next_start(
    start_tts: StartTts, tmp_path: Path
) -> None:
    store = {"cache_store": True, "cache_store_dir": str(tmp_path)}
    phrases = ["Sure,", "Okay,", "One moment."]
    first = IdentifiedEngine("model A")
    one = await start_tts(engine=first, prewarm=phrases, **store)
    assert first.texts == phrases
    assert phrase_files(tmp_path) == 1

    again = IdentifiedEngine("model A")
    two = await start_tts(engine=again, prewarm=[*phrases, "Got it."], **store)
    assert again.texts == ["Got it."]  # only the phrase the file did not hold
    assert again.warm_ups == 0  # speaking it warmed the model up
    for phrase in phrases:
        assert two.phrases.get(phrase) == one.phrases.get(phrase)
    third = IdentifiedEngine("model A")
    three = await start_tts(engine=third, prewarm=phrases, **store)
    assert (third.texts, third.warm_ups, len(three.phrases)) == ([], 1, 4)

    other = IdentifiedEngine("model B")  # another model: its own file, spoken afresh
    await start_tts(engine=other, prewarm=phrases, **store)
    assert other.texts == phrases
    assert phrase_files(tmp_path) == 2


async def test_a_prewarmed_phrase_is_what_kokoro_says(
    start_tts: StartTts, client: Bus, kokoro_engine: KokoroEngine, tmp_path: Path
) -> None:
    store = {"cache_store": True, "cache_store_dir": str(tmp_path)}
    first = await start_tts(engine=kokoro_engine, prewarm=["Sure,", "Got it."], **store)
    await first.drain()
    # The next start finds the phrases in the file the first one saved.
    service = await start_tts(engine=kokoro_engine, prewarm=["Sure,", "Got it."], **store)
    assert service.phrases.get("Sure,") == first.phrases.get("Sure,")
    sub = await client.nc.subscribe(subjects.audio("sess-c2"))
    await say(client, "sess-c2", "turn_1", 0, "Sure,")
    await say(client, "sess-c2", "turn_1", 1, "", last=True, expects="datetime")

    meta, audio = await next_audio(sub)
    assert (meta.text, meta.synth_ms) == ("Sure,", 0.0)
    fresh = float_to_ulaw(kokoro_engine.synthesize(normalize_text("Sure,")), 24000)
    assert audio == fresh  # Kokoro is deterministic: the cache changes nothing heard
    pcm = np.abs(ulaw_to_pcm16(audio).astype(np.int32))
    assert pcm.max() > 3000 and 0.2 < len(audio) / 8000 < 1.5  # a short spoken word
    closing, _ = await next_audio(sub)
    assert (closing.last, closing.expects) == (True, "datetime")
    assert sample(service, "tts_cache_total", result="hit") == 1
    assert sample(service, "tts_cache_total", result="miss") == 0


# ---------------------------------------------------------------------- the Say's voice


async def test_a_sentence_is_spoken_in_the_voice_it_asks_for_when_the_model_has_it(
    start_tts: StartTts,
    client: Bus,
    kokoro_engine: KokoroEngine,
) -> None:
    default = kokoro_engine.settings.voice
    other = sorted(kokoro_engine.voices - {default})[0]
    # The opener is pre-warmed in the default voice: a sentence in another voice must not
    # be answered with it.
    service = await start_tts(engine=kokoro_engine, prewarm=["Sure,"])
    sub = await client.nc.subscribe(subjects.audio("sess-v1"))
    with capture_logs() as logs:
        await say(client, "sess-v1", "turn_1", 0, "Sure,", voice=other)
        await say(client, "sess-v1", "turn_1", 1, "Sure,", voice=default)
        await say(client, "sess-v1", "turn_1", 2, "Sure,", voice="af_nobody")
        await say(client, "sess-v1", "turn_1", 3, "Sure,", voice="af_nobody", last=True)

        in_other, audio_other = await next_audio(sub)
        assert in_other.synth_ms > 0  # synthesized, not the default voice's cached phrase
        assert audio_other == float_to_ulaw(kokoro_engine.synthesize_as("Sure,", other), 24000)
        in_default, audio_default = await next_audio(sub)
        assert in_default.synth_ms == 0.0  # the pre-warmed phrase
        assert audio_default == float_to_ulaw(kokoro_engine.synthesize("Sure,"), 24000)
        assert audio_default != audio_other
        for _ in range(2):  # a voice the pack lacks: the default voice, logged once
            _meta, audio = await next_audio(sub)
            assert audio == audio_default
        assert service.unknown_voices == {"af_nobody"}
    warned = [e for e in logs if "a voice the model does not have" in e.get("event", "")]
    assert [e["voice"] for e in warned] == ["af_nobody"]  # logged once
    assert service.phrases.get("Sure,", other) == audio_other  # kept under its own voice
