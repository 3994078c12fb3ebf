"""The caller's side of one call: Twilio's media payloads re-cut into 20 ms frames
(silence put back where the carrier sent nothing), voice activity per frame, the
endpointer's onsets, the end of the caller's turn, and what to do when the caller speaks
over our audio.

End of turn (``end_of_turn=smart``): every frame inside an utterance feeds
:class:`~.endofturn.EndOfTurn` (``voiced``/``silent``) on the audio's own clock (frame
``i`` at ``i`` × 20 ms; answers count at the last frame fed), so a burst of late frames
counts as the audio it carries, as the hangover always did. When it asks for a
:class:`~.endofturn.Probe`, the utterance so far is snapshot and :class:`ProbeDue` goes
out (the session runs the turn model and an ``stt.probe`` on it and feeds the answers
back with :meth:`CallerAudio.model_result` / :meth:`CallerAudio.probe_result`); on
:class:`~.endofturn.End` the endpointer finishes the utterance at once. The
endpointer's silence hangover is only the hard maximum. The utterance carries why it
ended (:class:`~dealerline_common.speculation.EndOfTurnInfo`) and, when the probe of its
last pause answered and no voiced frame came after that probe's snapshot, the probe's
:class:`~dealerline_common.speculation.SpeculativeTranscript` (STT then does not decode
it again). A probe of a pause the caller spoke through is dropped. With
``end_of_turn=silence`` (or no turn model) the fixed hangover ends the turn, as before.

Over our audio (:mod:`.backchannel`): onset → :class:`HoldDue`; then
:class:`BargeProbeDue` (the words are judged on its answer, :meth:`CallerAudio.
barge_result`) → :class:`ResumeDue` (a backchannel: the utterance is :class:`NotATurn`)
or :class:`BargeInDue`.

It does no I/O: every event goes, as it happens, to the ``on_event`` callback the media
session gives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from dealerline_common import audio
from dealerline_common.speculation import (
    EndOfTurnInfo,
    Expects,
    SpeculativeTranscript,
    SttProbeResult,
)

from .backchannel import BargeGate, GateAction, Hold, Interrupt, JudgeDue, Release, Resume, judge
from .codec import MediaFrame
from .endofturn import Decision, EndOfTurn, EotConfig, Probe
from .playback import Playback
from .settings import GatewaySettings
from .vad import Discarded, Endpointer, EndpointerConfig, SpeechStart, Utterance, make_vad

SILENT_FRAME = bytes([audio.ULAW_SILENCE]) * audio.FRAME_BYTES
FRAME_S = audio.FRAME_MS / 1000.0
# The carrier stops sending frames mid-speech: the utterance ends this long after the
# last frame, past the hangover.
_STALL_MARGIN_S = 0.2
# end_of_turn=smart: the hangover (hard maximum) lies this far past the decider's own
# longest wait, so that the decider's reason is the one recorded.
_HARD_MAX_MARGIN_MS = 2 * audio.FRAME_MS


@dataclass(frozen=True)
class Heard:
    """An utterance that is a turn; ``during_playback``: it began over our audio or barged
    in; ``speculation_started``: when the probe of its last pause was sent."""

    utterance: Utterance
    during_playback: bool
    end_of_turn: EndOfTurnInfo | None = None
    transcript: SpeculativeTranscript | None = None
    speculation_started: float | None = None


@dataclass(frozen=True)
class ProbeDue:
    """Run the turn model and an ``stt.probe`` on the utterance so far (a pause began)."""

    pause_id: int
    audio: bytes
    at: float


@dataclass(frozen=True)
class HoldDue:
    """The caller speaks over our audio: hold playback."""

    at: float


@dataclass(frozen=True)
class BargeProbeDue:
    """Send an ``stt.probe`` of the caller's words over held playback, to judge them."""

    barge_id: int
    audio: bytes
    at: float


@dataclass(frozen=True)
class ResumeDue:
    """A backchannel (or no speech, or a blip): play on from where playback held."""

    verdict: str
    at: float


@dataclass(frozen=True)
class BargeInDue:
    """Barge in now (``reason``: words, max_hold, kept_talking, probe_failed)."""

    at: float
    reason: str = "words"


@dataclass(frozen=True)
class NotATurn:
    """An utterance over our audio judged a backchannel: dropped, not published."""

    heard: Heard


@dataclass(frozen=True)
class Speculation:
    """What became of a pause's probe: used, spoke_on, unanswered or failed."""

    outcome: str


CallerEvent = (
    SpeechStart
    | Discarded
    | Heard
    | ProbeDue
    | HoldDue
    | BargeProbeDue
    | ResumeDue
    | BargeInDue
    | NotATurn
    | Speculation
)


def eot_config(s: GatewaySettings) -> EotConfig:
    return EotConfig(
        probe_after_ms=s.eot_probe_after_ms,
        model_threshold=s.eot_model_threshold,
        unsure_max_ms=s.eot_unsure_max_ms,
        entity_max_ms=s.eot_entity_max_ms,
        transcript_wait_ms=s.eot_transcript_wait_ms,
        veto_prob=s.eot_veto_prob,
        open_entity_prob=s.eot_open_entity_prob,
        model_alone_prob=s.eot_model_alone_prob,
    )


def endpointer_for(s: GatewaySettings, smart: bool = False) -> Endpointer:
    """The endpointer; with ``smart`` its hangover is the end-of-turn's hard maximum."""
    hangover = s.end_silence_ms
    if smart:
        longest = max(s.eot_entity_max_ms, s.eot_unsure_max_ms, s.eot_transcript_wait_ms)
        hangover = longest + _HARD_MAX_MARGIN_MS
    return Endpointer(
        EndpointerConfig.from_ms(
            start_frames=s.speech_start_frames,
            start_window=max(s.speech_start_window, s.speech_start_frames),
            end_silence_ms=hangover,
            min_speech_ms=s.min_speech_ms,
            preroll_ms=s.preroll_ms,
            tail_ms=s.tail_ms,
            max_utterance_s=s.max_utterance_s,
        )
    )


@dataclass
class _Pause:
    """The probe of the utterance's open pause."""

    pause_id: int
    snap_index: int  # frames before this index are in the probe's audio
    started: float
    result: SttProbeResult | None = None
    failed: bool = False


class CallerAudio:
    def __init__(
        self,
        settings: GatewaySettings,
        playback: Playback,
        on_event: Callable[[CallerEvent], None],
        *,
        smart: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``smart``: end turns with the end-of-turn decision (a turn model is there)."""
        s = settings
        self.vad = make_vad(s.vad_kind, s.vad_aggressiveness, s.energy_threshold)
        self.eot: EndOfTurn | None = EndOfTurn(eot_config(s)) if smart else None
        self.endpointer = endpointer_for(s, smart)
        self.gate = BargeGate(s.barge_probe_ms, s.barge_max_hold_ms)
        hangover_s = self.endpointer.config.end_silence_frames * FRAME_S
        self._stall_s = hangover_s + _STALL_MARGIN_S
        self._playback = playback
        self._on_event = on_event
        self._clock = clock
        self._monotonic = monotonic
        self._inbuf = b""
        self._next_ts: float | None = None
        self._last_frame_at = monotonic()
        self._during_playback = False  # this utterance began while we were playing
        self._barged = False  # this utterance barged in
        self._expects: Expects | None = None  # what our last turn asked for, at onset
        self._pause: _Pause | None = None
        self._parked: Heard | None = None  # ended over held playback, being judged
        self._judging: tuple[int, bool, float] | None = None  # barge id, of parked, sent

    # ----------------------------------------------------------------- frames

    def feed(self, frame: MediaFrame) -> None:
        """One inbound media frame (any length; Twilio's timestamps reveal skipped silence).

        Runs on the event loop: its work is linear in the payload, which the codec bounds
        (1 s at most), and the voice activity detector costs a few microseconds per 20 ms
        frame (webrtcvad and the mu-law decode: ~3 us measured on a 2-core Xeon), so one
        frame holds the loop well under a millisecond. The turn model, the only inference
        that costs milliseconds, runs in a worker thread (:mod:`.speculate`)."""
        data, ts = frame.payload, frame.timestamp
        now = self._clock()
        self._last_frame_at = self._monotonic()
        if ts is not None and self._next_ts is not None and not self._inbuf:
            gap = ts - self._next_ts
            if gap >= audio.FRAME_MS:  # the carrier sent nothing during silence
                cap = self.endpointer.config.end_silence_frames + 1
                for _ in range(min(int(gap // audio.FRAME_MS), cap)):
                    self._process(SILENT_FRAME, False, now)
        if ts is not None:
            self._next_ts = ts + audio.duration_ms(data)
        # Cut whole frames at offsets and keep only the remainder (under one frame): the
        # work is linear in the payload (re-slicing the buffer per frame was quadratic).
        buf = self._inbuf + data if self._inbuf else data
        whole = len(buf) - len(buf) % audio.FRAME_BYTES
        for start in range(0, whole, audio.FRAME_BYTES):
            chunk = buf[start : start + audio.FRAME_BYTES]
            self._process(chunk, self.vad.is_speech(audio.ulaw_to_pcm16(chunk)), now)
        self._inbuf = buf[whole:]

    def end_if_stalled(self) -> None:
        """End the utterance in progress when the carrier stopped sending frames mid-speech."""
        if self.endpointer.in_speech and self._monotonic() - self._last_frame_at > self._stall_s:
            ev = self.endpointer.flush(self._clock())
            if ev is not None:
                self._endpoint(ev, self._clock())

    def _process(self, chunk: bytes, voiced: bool, at: float) -> None:
        t = self.endpointer.index * FRAME_S  # the audio clock: frame i is at i * 20 ms
        for ev in self.endpointer.feed(chunk, voiced, at):
            self._endpoint(ev, at)
        if self.endpointer.in_speech:
            self._inside(voiced, at, t)

    def _inside(self, voiced: bool, at: float, t: float) -> None:
        """A frame inside an utterance (at audio time ``t``)."""
        if self.eot is not None:
            if voiced:
                self.eot.voiced(t)
                if self._pause is not None:  # the caller went on: that probe is moot
                    self._pause = None
                    self._on_event(Speculation("spoke_on"))
            else:
                self._decide(self.eot.silent(t), at)
        if self.endpointer.in_speech:
            playing = self._playback.active()
            self._gate(self.gate.frame(self.endpointer.voiced_ms, playing, at))

    def _audio_now(self) -> float:
        """The audio clock at the last frame fed (answers arrive between frames)."""
        return max(0, self.endpointer.index - 1) * FRAME_S

    # ----------------------------------------------------------------- end of turn

    def model_result(self, pause_id: int, prob: float) -> None:
        """The turn model's P(complete) for a pause's snapshot."""
        if self.eot is not None and self.endpointer.in_speech:
            self._decide(self.eot.model(pause_id, prob, self._audio_now()), self._clock())

    def probe_result(self, pause_id: int, result: SttProbeResult | None) -> None:
        """The ``stt.probe`` answer for a pause's snapshot (None: error or timeout)."""
        pause = self._pause
        if pause is None or pause.pause_id != pause_id or self.eot is None:
            return  # the caller went on, or the utterance ended: dropped
        if result is None:
            pause.failed = True  # the decider goes on without a transcript, at once
            self._decide(self.eot.transcript_failed(pause_id, self._audio_now()), self._clock())
            return
        pause.result = result
        self._decide(self.eot.transcript(pause_id, result.text, self._audio_now()), self._clock())

    def _decide(self, decision: Decision | None, at: float) -> None:
        if decision is None:
            return
        if isinstance(decision, Probe):
            ep = self.endpointer
            self._pause = _Pause(decision.pause_id, ep.index, at)
            self._on_event(ProbeDue(decision.pause_id, ep.audio_so_far(), at))
            return
        ev = self.endpointer.finish(at, decision.info.reason)
        if ev is not None:
            self._endpoint(ev, at, decision.info)

    # ----------------------------------------------------------------- utterances

    def _endpoint(
        self, ev: SpeechStart | Utterance | Discarded, at: float, info: EndOfTurnInfo | None = None
    ) -> None:
        if isinstance(ev, SpeechStart):
            self._onset(ev, at)
            return
        heard = self._heard(ev, info) if isinstance(ev, Utterance) else None
        self._pause = None
        if self.eot is not None:
            self.eot.reset()
        fate, actions = self.gate.ended(heard is not None, at)
        if heard is None:
            self._on_event(ev)
        elif fate == "park":
            self._parked = heard
        self._gate(actions)  # publishes an earlier parked utterance first, if due
        if heard is not None and fate == "publish":
            self._publish(heard)
        elif heard is not None and fate == "drop":
            self._on_event(NotATurn(heard))
        self._during_playback = self._barged = False

    def _onset(self, ev: SpeechStart, at: float) -> None:
        self._during_playback = self._playback.active()
        self._barged = False
        self._expects = self._playback.expects
        self._pause = None
        if self.eot is not None:
            self.eot.reset()
            self.eot.expect(self._expects)
        self._on_event(ev)
        self._gate(self.gate.onset(self._during_playback, at))

    def _heard(self, utt: Utterance, info: EndOfTurnInfo | None) -> Heard:
        """The utterance with why it ended and, if it still holds, its pause's transcript."""
        if info is None:  # the endpointer's own end: hangover, max length or flush
            silence = (utt.end_index - utt.last_voiced_index) * audio.FRAME_MS
            info = EndOfTurnInfo(reason=utt.reason, expects=self._expects, silence_ms=silence)
        pause = self._pause
        if pause is None:
            return Heard(utt, self._during_playback or self._barged, info)
        transcript = None
        if pause.result is not None and utt.last_voiced_index < pause.snap_index:
            r = pause.result
            transcript = SpeculativeTranscript(
                probe_id=r.probe_id,
                text=r.text,
                language=r.language,
                confidence=r.confidence,
                no_speech_prob=r.no_speech_prob,
                stt_ms=r.stt_ms,
                model=r.model,
                started=pause.started,
            )
        outcome = "used" if transcript else "failed" if pause.failed else "unanswered"
        self._on_event(Speculation(outcome))
        return Heard(utt, self._during_playback or self._barged, info, transcript, pause.started)

    def _publish(self, heard: Heard) -> None:
        self._on_event(heard)

    # ----------------------------------------------------------------- over our audio

    def barge_result(self, barge_id: int, result: SttProbeResult | None) -> None:
        """The answer of a :class:`BargeProbeDue` probe (None: error or timeout)."""
        verdict = None if result is None else judge(result.text, result.no_speech_prob)
        judging = self._judging
        if result is not None and judging is not None and judging[:2] == (barge_id, True):
            parked = self._parked
            if parked is not None and parked.transcript is None:  # it heard all of it
                transcript = SpeculativeTranscript(
                    probe_id=result.probe_id,
                    text=result.text,
                    language=result.language,
                    confidence=result.confidence,
                    no_speech_prob=result.no_speech_prob,
                    stt_ms=result.stt_ms,
                    model=result.model,
                    started=judging[2],
                )
                self._parked = replace(
                    parked, transcript=transcript, speculation_started=judging[2]
                )
        self._gate(self.gate.answer(barge_id, verdict, self._clock()))

    def _judge(self, due: JudgeDue) -> None:
        parked = self._parked if due.parked else None
        if parked is not None and parked.transcript is not None:
            # its pause's probe heard all of it already: judge those words
            t = parked.transcript
            verdict = judge(t.text, t.no_speech_prob)
            self._gate(self.gate.answer(due.barge_id, verdict, due.at))
            return
        data = parked.utterance.audio if parked else self.endpointer.audio_so_far()
        self._judging = (due.barge_id, parked is not None, due.at)
        self._on_event(BargeProbeDue(due.barge_id, data, due.at))

    def _gate(self, actions: list[GateAction]) -> None:
        for a in actions:
            if isinstance(a, Hold):
                self._on_event(HoldDue(a.at))
            elif isinstance(a, JudgeDue):
                self._judge(a)
            elif isinstance(a, Resume):
                self._on_event(ResumeDue(a.verdict, a.at))
            elif isinstance(a, Interrupt):
                self._barged = True
                self._on_event(BargeInDue(a.at, a.reason))
            elif isinstance(a, Release):
                parked, self._parked = self._parked, None
                if parked is not None and a.publish:
                    self._publish(replace(parked, during_playback=True))
                elif parked is not None:
                    self._on_event(NotATurn(parked))
