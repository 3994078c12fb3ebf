"""The STT worker: a member of the ``stt`` JetStream consumer group on utterances.

Each utterance (8 kHz mu-law payload, ``UtteranceMeta`` header) is transcribed in a
thread and its ``Transcript`` published durably *before* the handler returns, so the
utterance is acknowledged only once its transcript is safe: at-least-once, and the
transcript's ``Nats-Msg-Id`` (the utterance id) makes a redelivered job's second
publish a no-op.

An utterance that arrives pre-transcribed (``UtteranceMeta.transcript``: the gateway's
``stt.probe`` of exactly this audio, see :mod:`.probe`) is published from that transcript
at once, without decoding again. The worker also answers those probes (core
request/reply, queue group ``stt-probe``), at most ``probe_concurrency`` at a time.

Each job is one ``stt.transcribe`` span (a child of the gateway's turn through the
utterance's ``traceparent``); the transcript carries it on to the agent. Jobs in flight,
capacity and queue wait are measured by :class:`ModelWorker` for every worker kind.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.msg import Msg

from dealerline_common import subjects, tracing
from dealerline_common.audio import SAMPLE_RATE
from dealerline_common.bus import Reject, headers_of, msg_payload
from dealerline_common.logs import get_logger
from dealerline_common.messages import Transcript, UtteranceMeta, from_header, now
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health
from dealerline_common.service import ModelWorker

from .engine import SpeechToText, WhisperEngine, transcribe_ulaw
from .probe import ProbeAnswerer, ProbeMetrics
from .settings import SttSettings

log = get_logger(__name__)

RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
# Headers that carry one call's trace from hop to hop: passed through as they came when
# this worker does not trace (the bus replaces them with its own span's when it does).
TRACE_HEADERS = ("traceparent", "tracestate")


class SttMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.duration = metrics.histogram(
            "stt_duration_seconds", "Transcription time per utterance"
        )
        self.rtf = metrics.histogram(
            "stt_real_time_factor", "Transcription time / utterance duration", buckets=RTF_BUCKETS
        )
        self.jobs = metrics.counter(
            "stt_jobs_total",
            "Utterances handled, by result (ok, empty, speculative, rejected, error)",
            ["result"],
        )


def trace_headers(msg: Msg) -> dict[str, str]:
    headers = headers_of(msg)
    return {k: headers[k] for k in TRACE_HEADERS if k in headers}


class SttService(ModelWorker[SpeechToText]):
    """One STT worker process.

    In-process use (tests, benchmarks)::

        service = SttService(SttSettings(nats_url=url, http_port=0))
        await service.start()      # bus, streams, /readyz, model + warm-up, consumer
        ...
        await service.drain()      # stop taking work, finish jobs in flight, close

    ``engine`` replaces the model (a loaded ``WhisperEngine`` shared between instances,
    or a fake with the ``SpeechToText`` shape).
    """

    name = "stt"
    subject = subjects.ALL_UTTERANCES
    stream = subjects.STREAM_UTTERANCES
    group = subjects.GROUP_STT

    def __init__(
        self,
        settings: SttSettings,
        *,
        engine: SpeechToText | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, engine=engine, metrics=metrics, health=health)
        self.settings: SttSettings = settings
        self.m = SttMetrics(self.metrics)
        self.probe_metrics = ProbeMetrics(self.metrics)
        self.probes: ProbeAnswerer | None = None

    def create_engine(self) -> SpeechToText:
        return WhisperEngine(self.settings)

    async def before_consuming(self) -> None:
        engine = self.engine
        if engine is None:  # load_model runs first; this cannot happen
            raise RuntimeError("model not loaded")
        self.probes = ProbeAnswerer(
            self.bus,
            engine,
            self.probe_metrics,
            concurrency=self.settings.probe_concurrency,
            max_audio_s=self.settings.probe_max_audio_s,
        )
        await self.probes.start()

    async def on_drain(self) -> None:
        await super().on_drain()
        if self.probes is not None:
            # Probes are short and advisory: a quarter of the drain budget at most.
            await self.probes.close(self.settings.drain_timeout_s * 0.25)

    # ----------------------------------------------------------------- work

    async def handle(self, msg: Msg) -> None:
        stt_started = now()
        meta, payload = self._validate(msg)
        with tracing.span(
            "stt.transcribe",
            session_id=meta.session_id,
            utterance_id=meta.utterance_id,
            audio_ms=round(len(payload) * 1000.0 / SAMPLE_RATE, 1),
            speculative=meta.transcript is not None,
        ) as sp:
            if meta.transcript is not None:
                await self._publish_speculative(msg, meta, payload)
            else:
                await self._transcribe(msg, meta, payload, stt_started, sp)

    async def _transcribe(
        self,
        msg: Msg,
        meta: UtteranceMeta,
        payload: bytes,
        stt_started: float,
        sp: tracing.Span,
    ) -> None:
        engine = self.engine
        if engine is None:  # consumers start only after the model; this cannot happen
            raise RuntimeError("model not loaded")

        clock = time.perf_counter()
        try:
            result = await asyncio.to_thread(transcribe_ulaw, engine, payload)
        except Exception:
            self.m.jobs.labels("error").inc()
            raise  # nak: another attempt, up to max_deliver
        stt_s = time.perf_counter() - clock
        audio_s = len(payload) / SAMPLE_RATE
        self.m.duration.observe(stt_s)
        self.m.rtf.observe(stt_s / audio_s)

        transcript = Transcript(
            session_id=meta.session_id,
            utterance_id=meta.utterance_id,
            text=result.text,
            language=result.language,
            confidence=result.confidence,
            no_speech_prob=result.no_speech_prob,
            audio_ms=round(audio_s * 1000.0, 1),
            stt_ms=round(stt_s * 1000.0, 1),
            model=engine.name,
            timings=meta.timings.model_copy(
                update={"stt_started": stt_started, "transcript_published": now()}
            ),
        )
        await self._publish(msg, transcript)
        self.m.jobs.labels("ok" if result.text else "empty").inc()
        # The words themselves stay out of the trace: callers say names and numbers.
        sp.set_attributes(
            {"stt.ms": transcript.stt_ms, "stt.chars": len(result.text), "stt.model": engine.name}
        )
        log.info(
            "transcribed",
            session_id=meta.session_id,
            utterance_id=meta.utterance_id,
            chars=len(result.text),
            audio_ms=transcript.audio_ms,
            stt_ms=transcript.stt_ms,
        )

    async def _publish_speculative(self, msg: Msg, meta: UtteranceMeta, payload: bytes) -> None:
        """The gateway's probe transcribed exactly this audio: its words are the transcript."""
        spec = meta.transcript
        if spec is None:
            raise RuntimeError("not a pre-transcribed utterance")
        transcript = Transcript(
            session_id=meta.session_id,
            utterance_id=meta.utterance_id,
            text=spec.text,
            language=spec.language,
            confidence=spec.confidence,
            no_speech_prob=spec.no_speech_prob,
            audio_ms=round(len(payload) * 1000.0 / SAMPLE_RATE, 1),
            stt_ms=spec.stt_ms,
            model=spec.model,
            timings=meta.timings.model_copy(
                update={"stt_started": spec.started, "transcript_published": now()}
            ),
        )
        await self._publish(msg, transcript)
        self.m.jobs.labels("speculative").inc()
        log.info(
            "pre-transcribed",
            session_id=meta.session_id,
            utterance_id=meta.utterance_id,
            probe_id=spec.probe_id,
            chars=len(spec.text),
            audio_ms=transcript.audio_ms,
        )

    async def _publish(self, msg: Msg, transcript: Transcript) -> None:
        """Durably, before the job is acked; the utterance id makes a redelivery's no-op."""
        await self.bus.publish_durable(
            subjects.transcript(transcript.session_id),
            transcript,
            headers=trace_headers(msg),
            msg_id=transcript.utterance_id,
        )

    def _validate(self, msg: Msg) -> tuple[UtteranceMeta, bytes]:
        """The utterance's metadata and audio, or Reject: such a message never succeeds."""
        try:
            meta = from_header(UtteranceMeta, headers_of(msg))
            sid = subjects.session_of(msg.subject)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            self.m.jobs.labels("rejected").inc()
            raise Reject(f"bad utterance header: {exc}") from exc
        payload = msg_payload(msg)
        problem = None
        if sid != meta.session_id:
            problem = f"header session {meta.session_id!r} does not match subject {msg.subject!r}"
        elif meta.sample_rate != SAMPLE_RATE:
            problem = f"unsupported sample rate {meta.sample_rate}"
        elif not payload:
            problem = "empty audio"
        elif len(payload) > self.settings.max_audio_s * SAMPLE_RATE:
            problem = f"utterance longer than {self.settings.max_audio_s} s"
        if problem:
            self.m.jobs.labels("rejected").inc()
            raise Reject(problem)
        return meta, payload
