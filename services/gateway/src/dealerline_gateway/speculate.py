"""The I/O of turn taking for one call: the turn model run in a worker thread, and the
``stt.probe`` request (a speculative transcript of the caller's speech so far).

- :class:`ModelRunner` runs :meth:`TurnModel.predict` one at a time per call; a pause
  that comes while one runs waits, and a newer one replaces it (the caller went on: the
  older pause's answer would be ignored anyway).
- :func:`stt_probe` asks the STT queue group (core NATS request/reply) and returns its
  :class:`~dealerline_common.speculation.SttProbeResult`, or None with the outcome
  (``error``, ``timeout``, ``no_responders``): a lost answer only means the end of the
  turn is decided on timers and STT transcribes the utterance itself.
- :func:`load_turn_model` loads the turn model once per process (None: the gateway ends
  turns on the silence rule instead, with a warning).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from pydantic import ValidationError

from dealerline_common import subjects, tracing
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.messages import new_id
from dealerline_common.speculation import SttProbe, SttProbeResult

from .settings import GatewaySettings
from .telemetry import GatewayMetrics
from .turn_model import SmartTurn, TurnModel

log = get_logger(__name__)

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def load_turn_model(settings: GatewaySettings) -> TurnModel | None:
    """The turn model for ``end_of_turn=smart`` (loaded once per gateway process), or None
    when the silence rule is configured or the model cannot be loaded (logged)."""
    if settings.end_of_turn != "smart":
        return None
    try:
        model = SmartTurn(
            settings.turn_model_path,
            threads=settings.turn_model_threads,
            concurrency=settings.turn_model_concurrency,
        )
    except Exception as exc:
        log.warning(
            "turn model not loaded: turns end on the silence rule",
            path=str(settings.turn_model_path or "default"),
            error=str(exc),
        )
        return None
    log.info("turn model loaded", model=model.name, threads=settings.turn_model_threads)
    return model


class ModelRunner:
    """One call's turn model runs: at most one at a time in a worker thread, newest wins."""

    def __init__(
        self,
        model: TurnModel,
        gm: GatewayMetrics,
        spawn: Spawn,
        on_result: Callable[[int, float], None],
    ) -> None:
        """``on_result(pause_id, prob)`` is called on the event loop for each answer."""
        self._model = model
        self._gm = gm
        self._spawn = spawn
        self._on_result = on_result
        self._waiting: tuple[int, bytes] | None = None
        self._running = False

    def submit(self, pause_id: int, ulaw: bytes) -> None:
        if self._waiting is not None:
            self._gm.turn_model_runs.labels("superseded").inc()
        self._waiting = (pause_id, ulaw)
        if not self._running:
            self._running = True
            self._spawn("turn_model", self._work())

    async def _work(self) -> None:
        try:
            while self._waiting is not None:
                (pause_id, ulaw), self._waiting = self._waiting, None
                prob = await self._run(ulaw)
                if prob is not None:
                    self._on_result(pause_id, prob)
        finally:
            self._running = False

    async def _run(self, ulaw: bytes) -> float | None:
        started = time.perf_counter()
        try:
            prob = await asyncio.to_thread(self._model.predict, ulaw)
        except Exception:
            log.exception("turn model failed")
            self._gm.turn_model_runs.labels("error").inc()
            return None
        self._gm.turn_model_latency.observe(time.perf_counter() - started)
        self._gm.turn_model_runs.labels("ok").inc()
        return prob


async def stt_probe(
    bus: Bus,
    gm: GatewayMetrics,
    session_id: str,
    ulaw: bytes,
    timeout_s: float,
    purpose: str,
) -> SttProbeResult | None:
    """Transcribe ``ulaw`` now on an STT worker; None when there is no usable answer
    (counted by outcome in ``gateway_stt_probes_total``)."""
    probe = SttProbe(session_id=session_id, probe_id=new_id("probe"))
    started = time.perf_counter()
    outcome = "ok"
    result: SttProbeResult | None = None
    headers = probe.header()
    if tracing.enabled():  # the STT worker's span joins the call's trace
        headers = tracing.inject(headers)
    try:
        msg = await bus.nc.request(subjects.STT_PROBE, ulaw, timeout=timeout_s, headers=headers)
        result = SttProbeResult.model_validate_json(msg.data)
        if result.error is not None or result.probe_id != probe.probe_id:
            outcome, result = "error", None
    except nats.errors.NoRespondersError:
        outcome = "no_responders"
    except nats.errors.TimeoutError:
        outcome = "timeout"
    except (nats.errors.Error, ValidationError, ValueError):
        outcome = "error"
    gm.stt_probes.labels(purpose, outcome).inc()
    if outcome == "ok":
        gm.stt_probe_latency.labels(purpose).observe(time.perf_counter() - started)
    else:
        log.debug("stt probe unanswered", session_id=session_id, outcome=outcome)
    return result
