"""What ``make demo`` prints per turn: why the turn ended, whether its transcript was made
during the caller's pause, and every stage (the system stage among them); and what the
bench adds up from such turns."""

from __future__ import annotations

from dealerline_common.messages import LatencyEvent, TurnTimings
from dealerline_common.speculation import EndOfTurnInfo
from dealerline_sim.bench import Samples, stage_table
from dealerline_sim.demo import (
    CallReport,
    TurnReport,
    describe_end_of_turn,
    format_report,
    word_error_rate,
)
from dealerline_sim.phone import Turn


def timings(speculative: bool) -> TurnTimings:
    t0 = 1000.0
    return TurnTimings(
        speech_end=t0,
        utterance_published=t0 + 0.42,
        stt_started=t0 + 0.21 if speculative else t0 + 0.43,
        transcript_published=t0 + 0.425 if speculative else t0 + 0.8,
        llm_request=t0 + 0.43,
        first_token=t0 + 0.68,
        first_sentence=t0 + 0.75,
        first_audio=t0 + 0.76,
        first_media=t0 + 0.77,
        speculation_started=t0 + 0.21 if speculative else None,
    )


def turn(index: int, speculative: bool, info: EndOfTurnInfo | None) -> TurnReport:
    t = timings(speculative)
    latency = LatencyEvent(session_id="s", turn_id=f"t{index}", timings=t, stages_ms=t.stages_ms())
    return TurnReport(
        index=index,
        caller_said="five five five one two three four five six seven",
        stt_heard="555 123 4567",
        agent_answered="Thanks.",
        caller_heard="Thanks.",
        latency=latency,
        sim_turn=Turn(index, "x", None, None, []),
        end_of_turn=info,
        speculative=speculative,
    )


def test_each_turn_says_why_it_ended_and_whether_stt_was_speculative() -> None:
    info = EndOfTurnInfo(reason="entity_complete", expects="phone", model_prob=0.82, silence_ms=420)
    report = CallReport("s", [turn(1, True, info), turn(2, False, None)], call=None)  # type: ignore[arg-type]
    text = format_report(report)
    first, second = text.split("── Turn 2")
    assert (
        "end of turn: entity_complete (expects phone, P(done) 0.82, after 420 ms of silence)"
        in first
    )
    assert "utterance → transcript (speculative)" in first
    assert "end of turn: (not said)" in second
    assert "(decoded after the end)" in second
    for text_part in (first, second):
        assert "turn less the LLM's time to its first sentence" in text_part  # system
        assert "sentence → first sentence synthesized" in text_part  # tts first audio
        assert "end of speech → first media frame (turn)" in text_part
    # system = total less the LLM's time from its request to its first sentence
    assert "   450" in first  # 770 - (750 - 430)
    assert describe_end_of_turn(EndOfTurnInfo(reason="silence", silence_ms=600)) == (
        "silence (after 600 ms of silence)"
    )


def test_the_bench_adds_up_the_system_stage_reasons_and_speculation() -> None:
    info = EndOfTurnInfo(reason="model", model_prob=0.9, silence_ms=260)
    report = CallReport("s", [turn(1, True, info), turn(2, False, info)], call=None)  # type: ignore[arg-type]
    samples = Samples()
    samples.add(report)
    samples.note_greeting(380.0)
    samples.note_greeting(None)
    assert samples.caller_turns == 2
    assert samples.reasons == {"model": 2}
    assert samples.speculative == 1
    assert samples.stages["system"] == [450.0, 450.0]
    table = stage_table(samples)
    assert "| turn less the LLM's time to its first sentence | 450 | 450 | 2 |" in table
    assert "| the caller's stream start → greeting's first frame heard | 380 | 380 | 1 |" in table


def test_word_error_rate_counts_a_number_said_two_ways_as_the_same() -> None:
    said = "Tuesday at nine a.m. is open. Shall I book it?"
    assert word_error_rate(said, "Tuesday at 9am is open, shall I book it") == 0.0
    assert word_error_rate("around 2 p.m.", "around two PM") == 0.0
    # A different number, or a misheard word, still counts.
    assert word_error_rate(said, "Tuesday at 10am is open. Shall I book it?") > 0.0
    assert word_error_rate("for your car then", "for your card and") == 0.5
