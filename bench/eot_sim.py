"""The gateway's turn-taking path, run offline on a virtual clock with the real models.

One dev-set clip goes through the gateway's own :class:`CallerAudio` (webrtcvad mode 3 on
20 ms frames, the endpointer, the end-of-turn decider, the barge-in gate) frame by frame:
frame ``i`` arrives at ``(i + 1) × 20 ms`` of virtual time. When the gateway asks for a
probe (a pause, or speech over playback), the real Smart Turn model and the real Whisper
tiny.en (the STT worker's :class:`WhisperEngine` with its default settings) run on the
snapshot *now*, in two threads at once as they would in the fleet (the turn model in the
gateway, Whisper in the STT worker), and their answers are delivered back at the probe's
virtual time plus the measured wall time of each. So every delay includes the real
compute on this CPU. The resources are modelled as in the fleet: the gateway runs one
turn model at a time per call (a newer pause replaces a waiting one) and the STT worker
takes one probe at a time (one more is answered "busy" at once). NATS round trips are
not added (~1 ms on one host).

Answers are cached per snapshot (sha1 of the audio), so configurations that probe the
same audio (same ``probe_after_ms``) reuse them, with their measured times.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dealerline_common import audio
from dealerline_common.speculation import Expects, SttProbeResult
from dealerline_gateway.caller_audio import (
    BargeInDue,
    BargeProbeDue,
    CallerAudio,
    CallerEvent,
    Heard,
    HoldDue,
    NotATurn,
    ProbeDue,
    ResumeDue,
)
from dealerline_gateway.codec import MediaFrame
from dealerline_gateway.settings import GatewaySettings
from dealerline_gateway.turn_model import SmartTurn
from dealerline_stt.engine import WhisperEngine, transcribe_ulaw
from dealerline_stt.settings import SttSettings

FRAME_S = audio.FRAME_MS / 1000.0
SILENT_FRAME = bytes([audio.ULAW_SILENCE]) * audio.FRAME_BYTES


def gateway_settings(**overrides: Any) -> GatewaySettings:
    """The gateway's defaults (plus ``overrides``); the URL and token are placeholders."""
    return GatewaySettings(
        public_url="https://bench.invalid", twilio_auth_token="bench", **overrides
    )


@dataclass(frozen=True)
class ModelAnswer:
    prob: float
    ms: float


@dataclass(frozen=True)
class SttAnswer:
    text: str
    no_speech_prob: float | None
    confidence: float | None
    ms: float


class Engines:
    """The real turn model and Whisper, with a per-snapshot cache of their answers."""

    def __init__(self, model_threads: int) -> None:
        self.turn = SmartTurn(threads=model_threads)
        self.whisper = WhisperEngine(SttSettings())
        self.whisper.warm_up()
        self.turn.predict(SILENT_FRAME * 50)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="eot-bench")
        self._model: dict[str, ModelAnswer] = {}
        self._stt: dict[str, SttAnswer] = {}
        self.model_runs: list[float] = []
        self.stt_runs: list[float] = []

    def close(self) -> None:
        self._pool.shutdown()

    def _run_model(self, ulaw: bytes) -> ModelAnswer:
        started = time.perf_counter()
        prob = self.turn.predict(ulaw)
        ms = (time.perf_counter() - started) * 1000.0
        self.model_runs.append(ms)
        return ModelAnswer(prob, ms)

    def _run_stt(self, ulaw: bytes) -> SttAnswer:
        started = time.perf_counter()
        r = transcribe_ulaw(self.whisper, ulaw)
        ms = (time.perf_counter() - started) * 1000.0
        self.stt_runs.append(ms)
        return SttAnswer(r.text, r.no_speech_prob, r.confidence, ms)

    def answers(
        self, ulaw: bytes, *, model: bool, stt: bool
    ) -> tuple[ModelAnswer | None, SttAnswer | None]:
        """What is asked for, run at the same time in two threads when both are new."""
        key = hashlib.sha1(ulaw).hexdigest()
        need_model = model and key not in self._model
        need_stt = stt and key not in self._stt
        fm = self._pool.submit(self._run_model, ulaw) if need_model else None
        fs = self._pool.submit(self._run_stt, ulaw) if need_stt else None
        if fm is not None:
            self._model[key] = fm.result()
        if fs is not None:
            self._stt[key] = fs.result()
        return (self._model[key] if model else None, self._stt[key] if stt else None)


class _Line:
    """Stands in for the gateway's Playback: whether our audio plays, what it asked for."""

    def __init__(self, playing: bool, expects: Expects | None) -> None:
        self.playing = playing
        self.expects = expects

    def active(self) -> bool:
        return self.playing


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """What the gateway did with one clip (virtual seconds from the clip's start)."""

    ends: list[tuple[float, Heard]] = field(default_factory=list)
    holds: list[float] = field(default_factory=list)
    resumes: list[tuple[float, str]] = field(default_factory=list)
    barge_ins: list[tuple[float, str]] = field(default_factory=list)
    not_turns: list[float] = field(default_factory=list)
    probes: int = 0
    busy: int = 0  # probes the STT worker answered "busy"


class _Sim:
    """One clip through one CallerAudio on the virtual clock."""

    def __init__(
        self,
        settings: GatewaySettings,
        smart: bool,
        engines: Engines,
        line: _Line,
    ) -> None:
        self.clock = _Clock()
        self.events: list[CallerEvent] = []
        self.caller = CallerAudio(
            settings,
            line,  # type: ignore[arg-type]
            self.events.append,
            smart=smart,
            clock=self.clock,
            monotonic=self.clock,
        )
        self.engines = engines
        self.smart = smart
        self.run = Run()
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._model_free = 0.0
        self._model_waiting: tuple[int, bytes] | None = None
        self._stt_free = 0.0

    def _at(self, due: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._pending, (due, next(self._seq), fn))

    def advance(self, until: float) -> None:
        """Deliver every answer due by ``until`` (in time order), then set the clock."""
        while self._pending and self._pending[0][0] <= until:
            due, _, fn = heapq.heappop(self._pending)
            self.clock.now = due
            fn()
            self.handle()
        self.clock.now = until

    def feed(self, index: int, frame: bytes) -> None:
        self.caller.feed(MediaFrame(frame, timestamp=index * float(audio.FRAME_MS)))
        self.handle()

    def handle(self) -> None:
        while self.events:
            ev = self.events.pop(0)
            now = self.clock.now
            if isinstance(ev, Heard):
                self.run.ends.append((now, ev))
            elif isinstance(ev, ProbeDue):
                self._probe_pause(ev)
            elif isinstance(ev, BargeProbeDue):
                self._probe_barge(ev)
            elif isinstance(ev, HoldDue):
                self.run.holds.append(now)
            elif isinstance(ev, ResumeDue):
                self.run.resumes.append((now, ev.verdict))
            elif isinstance(ev, BargeInDue):
                self.run.barge_ins.append((now, ev.reason))
            elif isinstance(ev, NotATurn):
                self.run.not_turns.append(now)

    # -- the turn model: one at a time, a newer pause replaces a waiting one -------------

    def _probe_pause(self, ev: ProbeDue) -> None:
        self.run.probes += 1
        now = self.clock.now
        if self._model_free <= now:
            self._start_model(ev.pause_id, ev.audio, now)
        else:
            if self._model_waiting is None:
                self._at(self._model_free, self._model_freed)
            self._model_waiting = (ev.pause_id, ev.audio)
        self._ask_stt(
            ev.audio, lambda r, pid=ev.pause_id: self.caller.probe_result(pid, r), model=True
        )

    def _start_model(self, pause_id: int, ulaw: bytes, now: float) -> None:
        model, _ = self.engines.answers(ulaw, model=True, stt=True)
        assert model is not None
        due = now + model.ms / 1000.0
        self._model_free = due
        self._at(due, lambda: self.caller.model_result(pause_id, model.prob))

    def _model_freed(self) -> None:
        waiting, self._model_waiting = self._model_waiting, None
        if waiting is not None:
            self._start_model(waiting[0], waiting[1], self.clock.now)

    # -- the STT worker: one probe at a time, one more is answered "busy" ----------------

    def _probe_barge(self, ev: BargeProbeDue) -> None:
        self.run.probes += 1
        self._ask_stt(
            ev.audio, lambda r, bid=ev.barge_id: self.caller.barge_result(bid, r), model=False
        )

    def _ask_stt(
        self, ulaw: bytes, deliver: Callable[[SttProbeResult | None], None], *, model: bool
    ) -> None:
        now = self.clock.now
        if self._stt_free > now:
            self.run.busy += 1
            self._at(now + 0.001, lambda: deliver(None))
            return
        _, stt = self.engines.answers(ulaw, model=model, stt=True)
        assert stt is not None
        due = now + stt.ms / 1000.0
        self._stt_free = due
        result = SttProbeResult(
            session_id="bench",
            probe_id="p",
            text=stt.text,
            confidence=stt.confidence,
            no_speech_prob=stt.no_speech_prob,
            audio_ms=audio.duration_ms(ulaw),
            stt_ms=stt.ms,
            model=self.engines.whisper.name,
        )
        self._at(due, lambda: deliver(result))


def run_clip(
    ulaw: bytes,
    settings: GatewaySettings,
    *,
    smart: bool,
    engines: Engines,
    playing: bool = False,
    expects: Expects | None = None,
    tail_ms: float = 1500.0,
    stop: Callable[[Run], bool] | None = None,
) -> Run:
    """Feed ``ulaw`` (then ``tail_ms`` of digital silence) through the gateway's caller
    path; ``playing``: our audio plays throughout (speech is over it); ``expects``: what
    our last turn asked for. ``stop(run)`` ends the clip early once it has what it needs."""
    sim = _Sim(settings, smart, engines, _Line(playing, expects))
    frames = audio.frames(ulaw) + [SILENT_FRAME] * int(tail_ms / audio.FRAME_MS)
    for i, frame in enumerate(frames):
        sim.advance((i + 1) * FRAME_S)
        sim.feed(i, frame)
        if stop is not None and stop(sim.run):
            break
    return sim.run


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")
