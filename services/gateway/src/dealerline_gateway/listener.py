"""What the caller's audio asks for, done: :class:`~.caller_audio.CallerAudio` is pure and
emits events; the :class:`Listener` of a media session runs them.

- a finished utterance (:class:`~.caller_audio.Heard`) goes to the outbox for STT, its
  end-of-turn reason counted;
- a pause (:class:`~.caller_audio.ProbeDue`): the turn model (:class:`~.speculate.
  ModelRunner`, one at a time per call) and an ``stt.probe`` on the snapshot, their
  answers fed back to the caller's audio;
- speech over our audio: hold playback (:class:`~.caller_audio.HoldDue`), probe the
  words (:class:`~.caller_audio.BargeProbeDue`), then resume
  (:class:`~.caller_audio.ResumeDue`) or barge in (:class:`~.caller_audio.BargeInDue`:
  ``clear`` and a ``BargeIn`` per turn cut). Hold, resume and barge-in are counted and
  are events on the call's span.
"""

from __future__ import annotations

import time

from dealerline_common import audio, tracing
from dealerline_common.logs import get_logger
from dealerline_common.speculation import SttProbeResult

from .call import StreamCall
from .caller_audio import (
    BargeInDue,
    BargeProbeDue,
    CallerAudio,
    CallerEvent,
    Heard,
    HoldDue,
    NotATurn,
    ProbeDue,
    ResumeDue,
    Speculation,
)
from .control_lane import ControlLane
from .outbox import Outbox
from .playback import Playback
from .sender import Sender
from .speculate import ModelRunner, Spawn, stt_probe
from .streams import StreamDeps
from .turns import TurnLatency
from .vad import Discarded, SpeechStart

log = get_logger(__name__)

_Attr = str | int | float | list[str]


class Listener:
    def __init__(
        self,
        deps: StreamDeps,
        call: StreamCall,
        caller: CallerAudio,
        playback: Playback,
        sender: Sender,
        control: ControlLane,
        turns: TurnLatency,
        outbox: Outbox,
        spawn: Spawn,
    ) -> None:
        self._deps = deps
        self._gm = deps.gm
        self._call = call
        self._caller = caller
        self._playback = playback
        self._sender = sender
        self._control = control
        self._turns = turns
        self._outbox = outbox
        self._spawn = spawn
        model = deps.turn_model if caller.eot is not None else None
        self._model = (
            ModelRunner(model, deps.gm, spawn, caller.model_result) if model is not None else None
        )

    def on_event(self, ev: CallerEvent) -> None:
        if isinstance(ev, SpeechStart):
            log.debug("speech onset", session_id=self._call.session_id, frame=ev.index)
        elif isinstance(ev, Discarded):
            self._gm.blips.inc()
        elif isinstance(ev, Heard):
            reason = ev.end_of_turn.reason if ev.end_of_turn is not None else "unknown"
            self._gm.end_of_turn.labels(reason).inc()
            self._publish(ev)
        elif isinstance(ev, ProbeDue):
            self._pause(ev)
        elif isinstance(ev, Speculation):
            self._gm.speculations.labels(ev.outcome).inc()
        elif isinstance(ev, HoldDue):
            self._hold(ev)
        elif isinstance(ev, BargeProbeDue):
            self._spawn("barge_probe", self._judge(ev))
        elif isinstance(ev, ResumeDue):
            self._resume(ev)
        elif isinstance(ev, BargeInDue):
            self._barge_in(ev)
        elif isinstance(ev, NotATurn):
            log.info("speech over playback not a turn", session_id=self._call.session_id)

    def _publish(self, heard: Heard) -> None:
        """Queue the utterance for STT, unless the call's queue already holds
        ``utterance_backlog_s`` of audio (the bus is behind, or the caller sends audio far
        faster than anyone speaks): then it is dropped, counted and logged."""
        limit = self._deps.settings.utterance_backlog_s * audio.SAMPLE_RATE
        if self._outbox.pending_audio + len(heard.utterance.audio) > limit:
            self._gm.utterances_dropped.labels("backlog").inc()
            log.warning(
                "utterance dropped: the call's bus backlog is full",
                session_id=self._call.session_id,
                duration_ms=round(heard.utterance.duration_ms),
                backlog_ms=round(self._outbox.pending_audio * 1000.0 / audio.SAMPLE_RATE),
            )
            return
        self._outbox.put(self._turns.utterance(heard))

    # ----------------------------------------------------------------- end of turn

    def _pause(self, ev: ProbeDue) -> None:
        if self._model is not None:
            self._model.submit(ev.pause_id, ev.audio)
        self._spawn("stt_probe", self._probe_pause(ev))

    async def _probe_pause(self, ev: ProbeDue) -> None:
        result = await self._ask(ev.audio, "pause")
        self._caller.probe_result(ev.pause_id, result)

    async def _ask(self, ulaw: bytes, purpose: str) -> SttProbeResult | None:
        """An ``stt.probe`` answer, or None (an unexpected error is logged: the probe is
        advisory, it never takes the call down)."""
        s = self._deps.settings
        try:
            with tracing.attached(self._call.ctx):  # the probe is part of the call's trace
                return await stt_probe(
                    self._deps.bus,
                    self._gm,
                    self._call.session_id,
                    ulaw,
                    s.probe_timeout_s,
                    purpose,
                )
        except Exception:
            log.exception("stt probe failed", session_id=self._call.session_id)
            self._gm.stt_probes.labels(purpose, "error").inc()
            return None

    # ----------------------------------------------------------------- over our audio

    def _hold(self, ev: HoldDue) -> None:
        if not self._playback.hold(ev.at):
            return
        log.debug("playback held", session_id=self._call.session_id)
        self._event("hold", {}, ev.at)

    async def _judge(self, ev: BargeProbeDue) -> None:
        result = await self._ask(ev.audio, "barge")
        self._caller.barge_result(ev.barge_id, result)

    def _resume(self, ev: ResumeDue) -> None:
        held_s = self._playback.resume(time.time())
        self._gm.holds.labels(ev.verdict).inc()
        self._gm.hold_duration.observe(held_s)
        if ev.verdict == "backchannel":
            self._gm.backchannels.inc()
        log.info("playback resumed", session_id=self._call.session_id, verdict=ev.verdict)
        self._event("resume", {"verdict": ev.verdict, "held_ms": round(held_s * 1000.0)}, None)

    def _barge_in(self, due: BargeInDue) -> None:
        now = time.time()
        playback = self._playback
        held_ms = 0.0
        if playback.held_since is not None:
            held_s = max(0.0, now - playback.held_since)
            held_ms = round(held_s * 1000.0)
            self._gm.holds.labels(due.reason).inc()
            self._gm.hold_duration.observe(held_s)
        results = playback.barge_in(due.at)
        self._gm.barge_ins.inc()
        attrs: dict[str, _Attr] = {
            "turn_ids": [r.turn_id for r in results],
            "reason": due.reason,
            "held_ms": held_ms,
        }
        self._event("barge_in", attrs, due.at)
        self._spawn("clear", self._sender.clear())
        self._control.barge_in(results)

    def _event(self, name: str, attrs: dict[str, _Attr], at: float | None) -> None:
        span = self._call.span
        if span.is_recording():
            span.add_event(name, attrs, tracing.ns(at) if at is not None else None)
