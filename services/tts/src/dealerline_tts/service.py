"""The TTS worker: a member of the ``tts`` JetStream consumer group on sentences to say.

Each ``Say`` becomes one core-NATS message on ``call.<sid>.audio``: 8 kHz mu-law as the
payload, ``AudioMeta`` in the header. Sentences of one turn may be spoken by different
workers at once; the gateway puts them back in ``seq`` order, so every ``Say`` gets an
answer (empty audio when there is nothing to speak) unless its turn was cancelled. That
holds for a sentence that cannot be spoken at all, too: when synthesis fails on the last
delivery, or the message is rejected but still names its session, turn, ``seq`` and
``last``, an empty answer goes out before the job is terminated, so the gateway's
in-order playback does not wait for a sentence that will never come.

Barge-in arrives on the control lane, which every worker hears; a cancelled turn's
sentences are acknowledged and dropped before synthesis and again before publishing. A
``StreamStopped`` mutes its session until the next ``StreamStarted``, unless it names a
stream other than the session's latest started one (a late stop of a replaced stream).

Short texts are kept in a :class:`~.phrase_cache.PhraseCache` (filled before the worker
takes work with the ``TTS_PREWARM`` openers, then with every short sentence it speaks): a
cached phrase is published at once, with ``synth_ms`` 0. The ``expects`` of a ``Say``
(what the turn asks the caller for, on its closing message) travels on in the
``AudioMeta``.

Each sentence is one ``tts.synthesize`` span (a child of the agent's turn through the
``say`` message's ``traceparent``); the audio message carries it on to the gateway's
playback. Jobs in flight, capacity and queue wait are measured by :class:`ModelWorker`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import cast

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects, tracing
from dealerline_common.audio import SAMPLE_RATE, float_to_ulaw
from dealerline_common.bus import Reject, headers_of
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    AudioMeta,
    BargeIn,
    Say,
    StreamStarted,
    StreamStopped,
    TurnTimings,
    loads,
    now,
    parse_control,
)
from dealerline_common.metrics import Metrics
from dealerline_common.models import default_cache_dir
from dealerline_common.ops import Health
from dealerline_common.service import ModelWorker
from dealerline_common.speculation import EXPECTS

from .cancel import CancelledTurns
from .engine import KokoroEngine, MultiVoice, NothingToSay, TextToSpeech
from .phrase_cache import PhraseCache
from .settings import TtsSettings
from .text import normalize_text

log = get_logger(__name__)

RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
# Passed through as they came when this worker does not trace (the bus replaces them
# with its own span's when it does).
TRACE_HEADERS = ("traceparent", "tracestate")
SAY_TYPE = Say.model_fields["type"].default


class TtsMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.synth = metrics.histogram("tts_synth_seconds", "Synthesis time per sentence")
        self.rtf = metrics.histogram(
            "tts_real_time_factor", "Synthesis time / audio duration", buckets=RTF_BUCKETS
        )
        self.jobs = metrics.counter(
            "tts_jobs_total",
            "Sentences handled, by result (ok, empty, rejected; error per failed attempt)",
            ["result"],
        )
        self.dropped = metrics.counter(
            "tts_dropped_total", "Sentences dropped because their turn was cancelled", ["stage"]
        )
        self.failed = metrics.counter(
            "tts_failed_total",
            "Sentences that could not be spoken and got an empty answer, by reason "
            "(error: synthesis failed on the last delivery, rejected: invalid message)",
            ["reason"],
        )
        self.control_ignored = metrics.counter(
            "tts_control_ignored_total",
            "Control messages ignored, by reason (invalid, stale_stop)",
            ["reason"],
        )
        self.cache = metrics.counter(
            "tts_cache_total",
            "Sentences looked up in the phrase cache, by result (hit, miss; bypass: too long)",
            ["result"],
        )
        self.cache_entries = metrics.gauge("tts_cache_entries", "Phrases in the phrase cache")
        self.cache_bytes = metrics.gauge("tts_cache_bytes", "Audio bytes in the phrase cache")


class TtsService(ModelWorker[TextToSpeech]):
    """One TTS worker process.

    In-process use (tests, benchmarks)::

        service = TtsService(TtsSettings(nats_url=url, http_port=0))
        await service.start()   # bus, streams, /readyz, model + warm-up, control, consumer
        ...
        await service.drain()   # stop taking work, finish jobs in flight, close

    ``engine`` replaces the model (a loaded ``KokoroEngine`` shared between instances, or
    a fake with the ``TextToSpeech`` shape).
    """

    name = "tts"
    subject = subjects.ALL_SAY
    stream = subjects.STREAM_SAY
    group = subjects.GROUP_TTS

    def __init__(
        self,
        settings: TtsSettings,
        *,
        engine: TextToSpeech | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, engine=engine, metrics=metrics, health=health)
        self.settings: TtsSettings = settings
        self.m = TtsMetrics(self.metrics)
        self.cancelled = CancelledTurns(settings.cancel_ttl_s, settings.cancel_capacity)
        self.control: Subscription | None = None
        # Voices a ``Say`` asked for that the model does not have: logged once each.
        self.unknown_voices: set[str] = set()
        self.phrases = PhraseCache(
            settings.voice,
            settings.speed,
            max_chars=settings.cache_max_chars,
            max_entries=settings.cache_entries,
            max_bytes=settings.cache_max_bytes,
        )

    def create_engine(self) -> TextToSpeech:
        return KokoroEngine(self.settings)

    async def load_model(self) -> None:
        """Load the model and speak the ``TTS_PREWARM`` phrases into the cache (those the
        phrase file does not hold), which warms the model up too; with none to speak, the
        engine's own warm-up runs. The model counts as loaded (``/readyz``) once they
        are all in the cache."""
        texts = [normalize_text(p) for p in self.settings.prewarm]
        texts = list(dict.fromkeys(t for t in texts if self.phrases.cacheable(t)))
        if not texts:
            await super().load_model()
            return
        started = time.perf_counter()
        engine = self.engine
        if engine is None:
            engine = await asyncio.to_thread(self.create_engine)
        store = self._store_path(engine)
        loaded = await asyncio.to_thread(self.phrases.load, store) if store else 0
        spoken = await self._prewarm(engine, [t for t in texts if t not in self.phrases])
        warm_up = getattr(engine, "warm_up", None)
        if not spoken and callable(warm_up):
            await asyncio.to_thread(warm_up)  # every phrase came from the file
        if store and spoken:
            try:
                await asyncio.to_thread(self.phrases.save, store)
            except OSError as exc:
                log.warning("could not save the phrases", path=str(store), error=str(exc))
        self._cache_gauges()
        self.engine = engine
        log.info(
            "tts model warm",
            seconds=round(time.perf_counter() - started, 2),
            phrases=len(self.phrases),
            loaded=loaded,
            spoken=spoken,
            cache_bytes=self.phrases.bytes,
        )

    async def _prewarm(self, engine: TextToSpeech, texts: list[str]) -> int:
        """Speak ``texts`` into the cache; returns how many were spoken."""
        spoken = 0
        for text in texts:
            try:
                ulaw = await asyncio.to_thread(_synthesize, engine, text)
            except NothingToSay:
                log.warning("pre-warm phrase has nothing to say", phrase=text[:80])
                continue
            spoken += self.phrases.put(text, ulaw)
        return spoken

    def _store_path(self, engine: TextToSpeech) -> Path | None:
        """The file of this engine's pre-warmed phrases, named by a digest of all the
        audio depends on; None when the engine cannot say that (``identity``)."""
        identity = getattr(engine, "identity", None)
        if not self.settings.cache_store or not isinstance(identity, str):
            return None
        folder = self.settings.cache_store_dir or str(default_cache_dir() / "tts-phrases")
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return Path(folder) / f"{digest}.phrases"

    def _cache_gauges(self) -> None:
        self.m.cache_entries.set(len(self.phrases))
        self.m.cache_bytes.set(self.phrases.bytes)

    async def before_consuming(self) -> None:
        # Control first: a barge-in must be known before the sentences it cancels arrive.
        self.control = await self.bus.subscribe(subjects.ALL_CONTROL, self.on_control)

    # ----------------------------------------------------------------- control lane

    async def on_control(self, msg: Msg) -> None:
        try:
            control = parse_control(msg.data)
        except ValidationError as exc:
            self.m.control_ignored.labels("invalid").inc()
            log.warning("ignored control message", subject=msg.subject, error=str(exc)[:200])
            return
        if isinstance(control, BargeIn):
            self.cancelled.cancel_turn(control.session_id, control.turn_id)
            log.info("turn cancelled", session_id=control.session_id, turn_id=control.turn_id)
        elif isinstance(control, StreamStopped):
            if self.cancelled.stop_session(control.session_id, control.stream_sid):
                log.info(
                    "session muted", session_id=control.session_id, stream_sid=control.stream_sid
                )
            else:
                self.m.control_ignored.labels("stale_stop").inc()
                log.info(
                    "ignored stop of a replaced stream",
                    session_id=control.session_id,
                    stream_sid=control.stream_sid,
                    current_stream_sid=self.cancelled.current_stream(control.session_id),
                )
        elif isinstance(control, StreamStarted):
            self.cancelled.resume_session(control.session_id, control.stream_sid)

    def _drop(self, say: Say, stage: str) -> bool:
        if not self.cancelled.is_cancelled(say.session_id, say.turn_id):
            return False
        self.m.dropped.labels(stage).inc()
        tracing.annotate(dropped=stage)
        log.info(
            "dropped cancelled sentence",
            session_id=say.session_id,
            turn_id=say.turn_id,
            seq=say.seq,
            stage=stage,
        )
        return True

    # ----------------------------------------------------------------- work

    async def handle(self, msg: Msg) -> None:
        """Speak one ``Say``; a sentence that can never be spoken still gets an empty
        answer before the error reaches the consumer (which terminates the job)."""
        tts_started = now()
        say: Say | None = None
        try:
            say = self._validate(msg)
            with tracing.span(
                "tts.synthesize",
                session_id=say.session_id,
                turn_id=say.turn_id,
                seq=say.seq,
                last=say.last,
                chars=len(say.text),
            ):
                await self._speak(msg, say, tts_started)
        except Reject:
            await self._answer_unspoken(msg, salvage_say(msg.data, msg.subject), "rejected")
            raise
        except Exception:
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            if delivered >= self.settings.max_deliver:  # the consumer terminates it now
                await self._answer_unspoken(msg, say, "error", tts_started)
            raise

    async def _speak(self, msg: Msg, say: Say, tts_started: float) -> None:
        if self._drop(say, "before_synthesis"):
            return
        engine = self.engine
        if engine is None:  # consumers start only after the model; this cannot happen
            raise RuntimeError("model not loaded")

        ulaw, synth_s = await self._audio_for(engine, say)
        if self._drop(say, "before_publish"):
            return

        first_audio = now()
        timings = say.timings.model_copy(
            update={"tts_started": tts_started}
            | ({"first_audio": first_audio} if say.seq == 0 else {})
        )
        meta = AudioMeta(
            session_id=say.session_id,
            turn_id=say.turn_id,
            utterance_id=say.utterance_id,
            seq=say.seq,
            last=say.last,
            text=say.text,
            duration_ms=round(len(ulaw) * 1000.0 / SAMPLE_RATE, 1),
            synth_ms=round(synth_s * 1000.0, 1),
            timings=timings,
            expects=say.expects,
        )
        headers = headers_of(msg)
        trace = {k: headers[k] for k in TRACE_HEADERS if k in headers}
        await self.bus.publish(subjects.audio(say.session_id), ulaw, headers=meta.header() | trace)
        # Core NATS has no ack: before the job is acked, the server must have the audio (a
        # NATS restart could otherwise swallow it, and the caller would never hear the
        # sentence). A failed confirm fails the job; the redelivered one publishes again
        # and the gateway drops the copy it may already have.
        await self.bus.confirm()
        self.m.jobs.labels("ok" if ulaw else "empty").inc()
        tracing.annotate(audio_ms=meta.duration_ms, synth_ms=meta.synth_ms)
        log.info(
            "spoke",
            session_id=say.session_id,
            turn_id=say.turn_id,
            seq=say.seq,
            last=say.last,
            audio_ms=meta.duration_ms,
            synth_ms=meta.synth_ms,
        )

    async def _answer_unspoken(
        self, msg: Msg, say: Say | None, reason: str, tts_started: float | None = None
    ) -> None:
        """Publish an empty answer for a sentence that will never be spoken, keeping its
        ``seq`` and ``last`` so the gateway's in-order playback moves past it."""
        if say is None:  # not even its session, turn and place in the turn are known
            return
        if self.cancelled.is_cancelled(say.session_id, say.turn_id):
            self.m.dropped.labels("after_failure").inc()
            return
        timings = say.timings
        if tts_started is not None:
            timings = timings.model_copy(update={"tts_started": tts_started})
        meta = AudioMeta(
            session_id=say.session_id,
            turn_id=say.turn_id,
            utterance_id=say.utterance_id,
            seq=say.seq,
            last=say.last,
            text="",
            duration_ms=0.0,
            synth_ms=0.0,
            timings=timings,
            expects=say.expects,
        )
        headers = headers_of(msg)
        trace = {k: headers[k] for k in TRACE_HEADERS if k in headers}
        try:
            await self.bus.publish(
                subjects.audio(say.session_id), b"", headers=meta.header() | trace
            )
        except Exception:
            log.exception(
                "could not answer an unspoken sentence",
                session_id=say.session_id,
                turn_id=say.turn_id,
                seq=say.seq,
            )
            return
        self.m.failed.labels(reason).inc()
        log.warning(
            "answered an unspoken sentence with silence",
            session_id=say.session_id,
            turn_id=say.turn_id,
            seq=say.seq,
            last=say.last,
            reason=reason,
        )

    async def _audio_for(self, engine: TextToSpeech, say: Say) -> tuple[bytes, float]:
        """The sentence's mu-law audio (empty when there is nothing to say) and the
        seconds synthesis took (0 for a phrase from the cache)."""
        text = normalize_text(say.text)
        if not text:
            return b"", 0.0
        voice = self._voice_for(engine, say)
        if not self.phrases.cacheable(text):
            self.m.cache.labels("bypass").inc()
        else:
            cached = self.phrases.get(text, voice)
            self.m.cache.labels("miss" if cached is None else "hit").inc()
            if cached is not None:
                tracing.annotate(cache="hit")
                return cached, 0.0
        clock = time.perf_counter()
        try:
            ulaw = await asyncio.to_thread(_synthesize, engine, text, voice)
        except NothingToSay:
            log.warning("nothing to say", session_id=say.session_id, text=say.text[:80])
            ulaw = b""
        except Exception:
            self.m.jobs.labels("error").inc()
            raise  # nak: another attempt, up to max_deliver
        synth_s = time.perf_counter() - clock
        self.m.synth.observe(synth_s)
        if ulaw:
            self.m.rtf.observe(synth_s / (len(ulaw) / SAMPLE_RATE))
            if self.phrases.put(text, ulaw, voice):
                self._cache_gauges()
        return ulaw, synth_s

    def _voice_for(self, engine: TextToSpeech, say: Say) -> str | None:
        """The voice the sentence asks for (the dealership's), when it is not the worker's
        default and the model has it; None = the default. A voice the model lacks is
        logged once, and the sentence is spoken in the default voice."""
        wanted = say.voice
        if not wanted or wanted == self.settings.voice:
            return None
        has_voice = getattr(engine, "has_voice", None)
        if callable(has_voice) and has_voice(wanted):
            return wanted
        if wanted not in self.unknown_voices and len(self.unknown_voices) < 64:
            self.unknown_voices.add(wanted)
            log.warning(
                "asked for a voice the model does not have; speaking with the default",
                voice=wanted,
                default=self.settings.voice,
                session_id=say.session_id,
            )
        return None

    def _validate(self, msg: Msg) -> Say:
        """The sentence, or Reject: such a message can never succeed."""
        try:
            say = loads(Say, msg.data)
            sid = subjects.session_of(msg.subject)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            self.m.jobs.labels("rejected").inc()
            raise Reject(f"bad say message: {str(exc)[:200]}") from exc
        problem = None
        if sid != say.session_id:
            problem = f"message session {say.session_id!r} does not match subject {msg.subject!r}"
        elif len(say.text) > self.settings.max_text_chars:
            problem = f"sentence longer than {self.settings.max_text_chars} characters"
        if problem:
            self.m.jobs.labels("rejected").inc()
            raise Reject(problem)
        return say


def _synthesize(engine: TextToSpeech, text: str, voice: str | None = None) -> bytes:
    """``text`` as the mu-law audio the worker publishes: ``voice`` (an engine's other
    voice, see ``MultiVoice``) or the engine's default one."""
    if voice is None:
        audio = engine.synthesize(text)
    else:
        audio = cast(MultiVoice, engine).synthesize_as(text, voice)
    return float_to_ulaw(audio, engine.sample_rate)


def salvage_say(data: bytes, subject: str) -> Say | None:
    """What an invalid ``say`` message still says about its place in a turn: a ``Say`` with
    its session, turn, ``seq``, ``last`` (and utterance, timings when valid) and no text,
    or None when any of the four is missing or wrong, when its session is not the
    subject's, or when it is another type of message."""
    try:
        sid = subjects.session_of(subject)
        raw = json.loads(data)
    except (ValueError, RecursionError):  # includes JSON and UTF-8 decoding errors
        return None
    if not isinstance(raw, dict) or raw.get("type", SAY_TYPE) != SAY_TYPE:
        return None
    turn_id, seq, last = raw.get("turn_id"), raw.get("seq"), raw.get("last", False)
    if (
        raw.get("session_id") != sid
        or not isinstance(turn_id, str)
        or not turn_id
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 0
        or not isinstance(last, bool)
    ):
        return None
    utterance_id = raw.get("utterance_id")
    expects = raw.get("expects")
    try:
        timings = TurnTimings.model_validate(raw.get("timings") or {})
    except ValidationError:
        timings = TurnTimings()
    return Say(
        session_id=sid,
        turn_id=turn_id,
        utterance_id=utterance_id if isinstance(utterance_id, str) else None,
        seq=seq,
        text="",
        last=last,
        timings=timings,
        expects=expects if expects in EXPECTS else None,
    )
