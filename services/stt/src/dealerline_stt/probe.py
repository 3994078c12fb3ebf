"""Speculative transcription: the worker's answer to ``stt.probe`` requests.

While the caller pauses, the gateway asks "what has been said so far?" (core NATS
request/reply to the ``stt-probe`` queue group; :class:`SttProbe` in the ``Dl-Meta``
header, 8 kHz mu-law as the payload). The answer is advisory and time-critical, so:

- the subscription's handler never waits for the model: each request runs in its own
  task, at most ``probe_concurrency`` at once; one more is answered ``"busy"`` at once
  (the gateway then decides on its timers instead of waiting for a late answer);
- a bad request is answered ``"invalid: <why>"`` (and counted), a failed transcription
  ``"failed"``, a request to a draining worker ``"draining"``; a request without a reply
  subject is dropped (counted as rejected: there is nobody to answer);
- nothing durable is published: the answer goes to the requester only;
- the words stay out of logs and spans (callers say names and numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dealerline_common import subjects, tracing
from dealerline_common.audio import SAMPLE_RATE
from dealerline_common.bus import Bus, headers_of, msg_payload
from dealerline_common.logs import get_logger
from dealerline_common.messages import from_header
from dealerline_common.metrics import Metrics
from dealerline_common.speculation import SttProbe, SttProbeResult

from .engine import SpeechToText, transcribe_ulaw

log = get_logger(__name__)

# The ``error`` of an SttProbeResult; any error means "no transcript from this probe".
ERROR_BUSY = "busy"  # every probe slot of this worker is taken: no queueing
ERROR_DRAINING = "draining"  # the worker is shutting down
ERROR_INVALID = "invalid"  # "invalid: <why>": the request can never succeed
ERROR_FAILED = "failed"  # the model raised

PROBE_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class InvalidProbe(ValueError):
    """A request that can never be answered with a transcript (the message says why)."""

    def __init__(self, detail: str, session_id: str = "", probe_id: str = "") -> None:
        super().__init__(detail)
        self.session_id = session_id
        self.probe_id = probe_id


def read_probe(
    headers: dict[str, str], payload: bytes, max_audio_s: float
) -> tuple[SttProbe, bytes]:
    """The probe's header and audio, or :class:`InvalidProbe`."""
    try:
        probe = from_header(SttProbe, headers)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidProbe(f"bad probe header: {_first_line(exc)}") from exc
    ids = (probe.session_id, probe.probe_id)
    try:
        subjects.check_session_id(probe.session_id)
    except ValueError as exc:
        raise InvalidProbe("bad session id", "", probe.probe_id) from exc
    if probe.sample_rate != SAMPLE_RATE:
        raise InvalidProbe(f"unsupported sample rate {probe.sample_rate}", *ids)
    if not payload:
        raise InvalidProbe("empty audio", *ids)
    if len(payload) > max_audio_s * SAMPLE_RATE:
        raise InvalidProbe(f"audio longer than {max_audio_s:g} s", *ids)
    return probe, payload


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class ProbeMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.probes = metrics.counter(
            "stt_probes_total",
            "Speculative transcription requests, by result (ok, empty, busy, rejected, error)",
            ["result"],
        )
        self.seconds = metrics.histogram(
            "stt_probe_seconds",
            "Transcription time of an answered probe (request taken to answer sent)",
            buckets=PROBE_BUCKETS,
        )
        self.in_flight = metrics.gauge("stt_probes_in_flight", "Probes being transcribed now")


class ProbeAnswerer:
    """Answers ``stt.probe`` for one worker with its (already loaded) model."""

    def __init__(
        self,
        bus: Bus,
        engine: SpeechToText,
        metrics: ProbeMetrics,
        *,
        concurrency: int,
        max_audio_s: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.bus = bus
        self.engine = engine
        self.m = metrics
        self.concurrency = concurrency
        self.max_audio_s = max_audio_s
        self.clock = clock
        self.draining = False
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Join the ``stt-probe`` queue group (nothing when probes are switched off)."""
        if self.concurrency > 0:
            self._sub = await self.bus.subscribe(
                subjects.STT_PROBE, self.on_request, queue=subjects.GROUP_STT_PROBE
            )

    async def on_request(self, msg: Msg) -> None:
        """The subscription's handler: answers or spawns at once, never waits for the model."""
        if not msg.reply:
            self.m.probes.labels("rejected").inc()
            log.warning("probe without a reply subject dropped", subject=msg.subject)
            return
        try:
            probe, payload = read_probe(headers_of(msg), msg_payload(msg), self.max_audio_s)
        except InvalidProbe as exc:
            self.m.probes.labels("rejected").inc()
            log.warning("probe rejected", session_id=exc.session_id or None, reason=str(exc))
            reply = SttProbeResult(
                session_id=exc.session_id, probe_id=exc.probe_id, error=f"{ERROR_INVALID}: {exc}"
            )
            await _respond(msg, reply)
            return
        refusal = ERROR_DRAINING if self.draining else None
        if refusal is None and len(self._tasks) >= self.concurrency:
            refusal = ERROR_BUSY
        if refusal is not None:
            self.m.probes.labels("busy").inc()
            reply = SttProbeResult(
                session_id=probe.session_id, probe_id=probe.probe_id, error=refusal
            )
            await _respond(msg, reply)
            return
        task = asyncio.create_task(self._answer(msg, probe, payload), name="stt-probe")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.m.in_flight.set(len(self._tasks))
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("probe task failed", error=repr(exc), exc_info=exc)

    async def _answer(self, msg: Msg, probe: SttProbe, payload: bytes) -> None:
        self.m.in_flight.set(len(self._tasks))
        audio_ms = round(len(payload) * 1000.0 / SAMPLE_RATE, 1)
        ids: dict[str, Any] = {"session_id": probe.session_id, "probe_id": probe.probe_id}
        with tracing.span("stt.probe", audio_ms=audio_ms, **ids) as sp:
            started = self.clock()
            try:
                result = await asyncio.to_thread(transcribe_ulaw, self.engine, payload)
            except Exception as exc:
                self.m.probes.labels("error").inc()
                log.exception("probe transcription failed", **ids)
                tracing.record_error(sp, exc)
                await _respond(msg, SttProbeResult(**ids, audio_ms=audio_ms, error=ERROR_FAILED))
                return
            stt_s = self.clock() - started
            reply = SttProbeResult(
                **ids,
                text=result.text,
                language=result.language,
                confidence=result.confidence,
                no_speech_prob=result.no_speech_prob,
                audio_ms=audio_ms,
                stt_ms=round(stt_s * 1000.0, 1),
                model=self.engine.name,
            )
            await _respond(msg, reply)
            self.m.seconds.observe(stt_s)
            self.m.probes.labels("ok" if result.text else "empty").inc()
            sp.set_attributes({"stt.ms": reply.stt_ms, "stt.chars": len(result.text)})
        log.debug("probe answered", chars=len(result.text), audio_ms=audio_ms, **ids)

    async def close(self, timeout_s: float) -> None:
        """Stop taking probes (those already received are answered ``"draining"``), then
        let the ones being transcribed answer within ``timeout_s``; cancel the rest."""
        self.draining = True
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # closed connection, or the deadline
                await asyncio.wait_for(sub.drain(), max(timeout_s, 0.01))  # type: ignore[no-untyped-call]
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(timeout_s, 0.01))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)


async def _respond(msg: Msg, reply: SttProbeResult) -> None:
    """Answer the requester; one who has gone away (timed out) is no error of ours."""
    try:
        await msg.respond(reply.dumps())
    except Exception as exc:  # connection closed while draining: the gateway falls back
        log.warning("probe answer not sent", probe_id=reply.probe_id, error=repr(exc))
