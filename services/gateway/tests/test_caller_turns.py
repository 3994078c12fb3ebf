"""The caller's audio path wired to the real end-of-turn decider and barge-in judge, frame by
frame, with the turn model's and STT's answers given by the test (they are I/O: the media
session runs them): when a turn ends, which transcript travels with it, and what speech
over our audio does to playback."""

from __future__ import annotations

from typing import Any

from gw_testkit import make_settings, silence, voiced_signal

from dealerline_common import audio
from dealerline_common.messages import AudioMeta
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
    Speculation,
)
from dealerline_gateway.codec import MediaFrame
from dealerline_gateway.playback import Playback
from dealerline_gateway.vad import SpeechStart

# webrtcvad's own hangover: the first ~120 ms of silence after speech still count as voiced
HANG = 0.12
PROBE = HANG + 0.22  # silence after speech by which the pause's probe is due (200 ms)


class Line:
    """One caller's audio fed frame by frame into CallerAudio, events kept in order."""

    def __init__(self, smart: bool = True, **overrides: Any) -> None:
        self.settings = make_settings("nats://127.0.0.1:1", **overrides)
        self.playback = Playback(64)
        self.events: list[CallerEvent] = []
        self.caller = CallerAudio(self.settings, self.playback, self.events.append, smart=smart)

    def say(self, ulaw: bytes) -> None:
        for frame in audio.frames(ulaw):
            self.caller.feed(MediaFrame(frame))

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def last_probe(self) -> ProbeDue:
        probes = self.of(ProbeDue)
        assert probes, "no probe was asked for"
        return probes[-1]

    def transcribed(self, probe: ProbeDue | BargeProbeDue, text: str) -> SttProbeResult:
        return SttProbeResult(
            session_id="sess_x",
            probe_id=f"probe_{getattr(probe, 'pause_id', getattr(probe, 'barge_id', 0))}",
            text=text,
            confidence=0.9,
            no_speech_prob=0.02,
            audio_ms=audio.duration_ms(probe.audio),
            stt_ms=350.0,
            model="tiny.en",
        )

    def answer(self, text: str | None, prob: float | None) -> ProbeDue:
        """Answer the newest pause's probe: its transcript, then the model."""
        probe = self.last_probe()
        if text is not None:
            self.caller.probe_result(probe.pause_id, self.transcribed(probe, text))
        if prob is not None:
            self.caller.model_result(probe.pause_id, prob)
        return probe

    def agent_asks(self, expects: Expects | None) -> None:
        """Our last turn's closing message, as TTS sends it (no audio: nothing plays)."""
        meta = AudioMeta(
            session_id="sess_x",
            turn_id="turn_q",
            seq=0,
            last=True,
            text="",
            duration_ms=0,
            synth_ms=0,
            expects=expects,
        )
        self.playback.offer(meta, b"", 1.0)

    def agent_speaks(self) -> None:
        meta = AudioMeta(
            session_id="sess_x",
            turn_id="turn_a",
            seq=0,
            last=False,
            text="We are open until nine tonight and on Saturdays.",
            duration_ms=3000,
            synth_ms=1,
        )
        self.playback.offer(meta, b"\x11" * 24000, 1.0)
        assert self.playback.active()


# ----------------------------------------------------------------- end of turn


def test_a_phone_number_read_with_pauses_is_not_cut() -> None:
    line = Line()
    line.agent_asks("phone")
    line.say(silence(0.3) + voiced_signal(0.9) + silence(PROBE))  # "five five five" …
    assert len(line.of(SpeechStart)) == 1
    # the model hears a complete phrase, but the number is not whole yet
    line.answer("Five, five, five,", 0.93)
    line.say(silence(0.4))
    line.say(voiced_signal(0.9) + silence(PROBE))  # … "one two three" …
    assert line.of(Speculation)[0].outcome == "spoke_on"
    line.answer("Five, five, five, one, two, three,", 0.9)
    line.say(silence(0.5))
    assert line.of(Heard) == []
    line.say(voiced_signal(1.1) + silence(PROBE))  # … "four five six seven"
    final = line.answer("555-123-4567.", 0.4)
    [heard] = line.of(Heard)  # one utterance: the whole number
    assert len(line.of(SpeechStart)) == 1
    eot = heard.end_of_turn
    assert eot is not None
    assert (eot.reason, eot.expects) == ("entity_complete", "phone")
    assert eot.model_prob == 0.4
    assert 200 <= eot.silence_ms < 2000
    assert heard.utterance.duration_ms >= 900 + 340 + 400 + 900 + 340 + 500 + 1100
    # the last pause's transcript travels with it: STT does not decode it again
    assert heard.transcript is not None
    assert heard.transcript.text == "555-123-4567."
    assert heard.transcript.started == final.at == heard.speculation_started
    assert [s.outcome for s in line.of(Speculation)] == ["spoke_on", "spoke_on", "used"]


def test_without_an_entity_the_model_ends_a_complete_turn_at_once() -> None:
    line = Line()
    line.say(silence(0.2) + voiced_signal(1.2) + silence(PROBE))
    probe = line.last_probe()
    assert probe.audio == line.caller.endpointer.audio_so_far()[: len(probe.audio)]
    line.answer("I'd like to book an oil change for Tuesday.", None)
    assert line.of(Heard) == []  # the words alone do not end it: the model has a say
    line.caller.model_result(probe.pause_id, 0.97)
    [heard] = line.of(Heard)
    assert heard.end_of_turn is not None and heard.end_of_turn.reason == "model"
    assert heard.transcript is not None and heard.transcript.model == "tiny.en"
    assert not line.caller.endpointer.in_speech
    # late answers for a finished turn change nothing
    line.caller.model_result(probe.pause_id, 0.1)
    line.caller.probe_result(probe.pause_id, line.transcribed(probe, "again"))
    assert len(line.of(Heard)) == 1


def test_a_transcript_is_dropped_when_the_caller_goes_on() -> None:
    line = Line()
    line.say(voiced_signal(0.8) + silence(PROBE))
    first = line.answer("I want to", None)  # trails off: not the end
    line.say(voiced_signal(0.7))  # the caller goes on
    # answers for the pause the caller spoke through are ignored
    line.caller.model_result(first.pause_id, 0.99)
    line.caller.probe_result(first.pause_id, line.transcribed(first, "I want to"))
    assert line.of(Heard) == []
    line.say(silence(PROBE))
    second = line.last_probe()
    assert second.pause_id != first.pause_id
    line.caller.model_result(second.pause_id, 0.9)  # no words for this pause (STT lost it)
    line.say(silence(1.0))  # the decider waits for words, then decides on the model alone
    [heard] = line.of(Heard)
    assert heard.end_of_turn is not None and heard.end_of_turn.reason == "no_transcript"
    assert heard.transcript is None  # the first pause's words are not the utterance's
    assert heard.speculation_started == second.at
    assert heard.utterance.duration_ms >= 800 + 340 + 700
    assert [s.outcome for s in line.of(Speculation)] == ["spoke_on", "unanswered"]


def test_a_failed_probe_means_no_transcript() -> None:
    line = Line()
    line.say(voiced_signal(0.8) + silence(PROBE))
    probe = line.last_probe()
    line.caller.probe_result(probe.pause_id, None)
    assert line.of(Heard) == []
    line.caller.model_result(probe.pause_id, 0.95)  # no words will come: the model decides
    [heard] = line.of(Heard)
    assert heard.transcript is None
    assert heard.end_of_turn is not None and heard.end_of_turn.reason == "no_transcript"
    assert [s.outcome for s in line.of(Speculation)] == ["failed"]


def test_the_hangover_is_only_the_hard_maximum() -> None:
    line = Line(eot_unsure_max_ms=1000, eot_entity_max_ms=1400, eot_transcript_wait_ms=1200)
    line.agent_asks("vin")
    line.say(voiced_signal(0.8) + silence(PROBE))
    line.answer("One H G C M", 0.2)  # half a VIN: wait up to the entity maximum
    line.say(silence(1.4 - 0.22 - 0.04))
    assert line.of(Heard) == []
    line.say(silence(0.1))
    [heard] = line.of(Heard)
    assert heard.end_of_turn is not None and heard.end_of_turn.reason == "entity_timeout"
    assert heard.end_of_turn.silence_ms >= 1400


def test_the_silence_rule_ends_on_the_fixed_hangover() -> None:
    line = Line(smart=False)
    line.agent_asks("phone")
    line.say(voiced_signal(0.9) + silence(0.6 + HANG + 0.02))
    assert line.of(ProbeDue) == []
    [heard] = line.of(Heard)
    eot = heard.end_of_turn
    assert eot is not None
    assert (eot.reason, eot.expects, eot.silence_ms) == ("silence", "phone", 600)
    assert heard.transcript is None and heard.speculation_started is None


def test_the_carrier_stall_still_ends_an_utterance() -> None:
    clock = [100.0]
    line = Line()
    line.caller = CallerAudio(
        line.settings, line.playback, line.events.append, smart=True, monotonic=lambda: clock[0]
    )
    line.say(voiced_signal(0.6))
    line.caller.end_if_stalled()
    assert line.of(Heard) == []
    clock[0] += 10.0
    line.caller.end_if_stalled()
    [heard] = line.of(Heard)
    assert heard.end_of_turn is not None and heard.end_of_turn.reason == "flush"


# ----------------------------------------------------------------- over our audio


def test_a_backchannel_over_playback_resumes_it_and_is_not_a_turn() -> None:
    line = Line()
    line.agent_speaks()
    line.say(voiced_signal(0.3))
    assert len(line.of(HoldDue)) == 1
    [probe] = line.of(BargeProbeDue)
    assert 240 <= audio.duration_ms(probe.audio) <= 240 + 200 + 60  # the words so far
    line.caller.barge_result(probe.barge_id, line.transcribed(probe, "Mm-hmm."))
    assert [r.verdict for r in line.of(ResumeDue)] == ["backchannel"]
    line.say(silence(PROBE))
    line.answer("Mm-hmm.", 0.9)  # the end of the utterance as usual…
    assert line.of(Heard) == []  # …but it is not a turn
    assert len(line.of(NotATurn)) == 1
    assert line.of(BargeInDue) == []


def test_an_interruption_over_playback_barges_in_and_is_a_turn() -> None:
    line = Line()
    line.agent_speaks()
    line.say(voiced_signal(0.3))
    [probe] = line.of(BargeProbeDue)
    line.caller.barge_result(probe.barge_id, line.transcribed(probe, "Wait, no,"))
    assert [b.reason for b in line.of(BargeInDue)] == ["words"]
    assert line.of(ResumeDue) == []
    line.say(voiced_signal(0.5) + silence(PROBE))
    line.answer("Wait, no, Tuesday.", 0.9)
    [heard] = line.of(Heard)
    assert heard.during_playback


def test_a_short_utterance_over_playback_is_judged_on_its_pause_transcript() -> None:
    line = Line()
    line.agent_speaks()
    line.say(voiced_signal(0.1) + silence(PROBE))  # "okay", shorter than the probe point
    assert line.of(BargeProbeDue) == []
    line.answer("Okay.", 0.9)  # the pause's probe heard all of it: no second probe
    assert line.of(BargeProbeDue) == []
    assert [r.verdict for r in line.of(ResumeDue)] == ["backchannel"]
    assert line.of(Heard) == [] and len(line.of(NotATurn)) == 1


def test_a_parked_interruption_goes_out_with_the_probe_transcript() -> None:
    line = Line(smart=False)
    line.agent_speaks()
    line.say(
        voiced_signal(0.1) + silence(0.6 + HANG + 0.02)
    )  # ends on the silence rule, then judged
    [probe] = line.of(BargeProbeDue)
    assert line.of(Heard) == []
    line.caller.barge_result(probe.barge_id, line.transcribed(probe, "Stop."))
    assert [b.reason for b in line.of(BargeInDue)] == ["words"]
    [heard] = line.of(Heard)
    assert heard.during_playback
    assert heard.transcript is not None and heard.transcript.text == "Stop."
    assert heard.speculation_started == probe.at


def test_speech_past_the_maximum_hold_barges_in_without_an_answer() -> None:
    line = Line()
    line.agent_speaks()
    line.say(voiced_signal(0.8))
    assert len(line.of(BargeProbeDue)) == 1
    assert [b.reason for b in line.of(BargeInDue)] == ["max_hold"]
