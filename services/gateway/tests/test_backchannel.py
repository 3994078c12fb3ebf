"""The barge-in judge: which words over our audio are a backchannel, and the hold state
machine (hold → judge → resume or barge in), with injected times."""

from __future__ import annotations

import pytest

from dealerline_gateway.backchannel import (
    BargeGate,
    Hold,
    Interrupt,
    JudgeDue,
    Release,
    Resume,
    is_backchannel,
    judge,
)


@pytest.mark.parametrize(
    "text",
    [
        "Uh-huh.",
        "uh huh",
        "Mm-hmm.",
        "Mm hmm",
        "Mhm.",
        "Okay.",
        "OK",
        "O.K.",
        "Yeah.",
        "Yep!",
        "Yes.",
        "Right.",
        "Sure.",
        "Got it.",
        "I see.",
        "Alright.",
        "All right.",
        "Cool.",
        "Great.",
        "Yeah, yeah.",
        "Okay, okay, okay.",
        "Uh-huh, got it.",
        "Yeah. Right. Sure.",
        "Uh.",  # the first half of "uh-huh", as a probe 240 ms in hears it
        "Mm.",
        "  Okay  ",
    ],
)
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)
    assert judge(text, no_speech_prob=0.1) == "backchannel"


@pytest.mark.parametrize(
    "text",
    [
        "Wait.",
        "No, Tuesday.",
        "Hold on.",
        "What time do you close?",
        "Okay, but what about Tuesday?",
        "Yes, that's my number.",
        "Sure, five five five.",
        "I see, so the oil change is extra?",
        "Right now?",
        "Stop.",
        "Thank you.",
        "Great, can I book it?",
        "Nope.",
        "Uh-huh, and the price?",
    ],
)
def test_interruptions(text: str) -> None:
    assert not is_backchannel(text)
    assert judge(text, no_speech_prob=0.05) == "speech"


@pytest.mark.parametrize(
    ("text", "no_speech_prob"),
    [("", None), ("   ", 0.0), (" . ", 0.1), ("...", None), ("Thank you.", 0.9), ("Wait.", 0.6)],
)
def test_no_speech(text: str, no_speech_prob: float | None) -> None:
    assert judge(text, no_speech_prob) == "no_speech"


# ----------------------------------------------------------------- the gate


def gate() -> BargeGate:
    return BargeGate(probe_ms=240, max_hold_ms=700)


def test_speech_not_over_playback_is_left_alone() -> None:
    g = gate()
    assert g.onset(playing=False, at=1.0) == []
    assert g.frame(500, playing=False, at=1.5) == []
    assert g.ended(kept=True, at=2.0) == ("publish", [])
    assert not g.holding


def test_backchannel_resumes_and_the_utterance_is_dropped() -> None:
    g = gate()
    assert g.onset(playing=True, at=1.0) == [Hold(1.0)]
    assert g.holding
    assert g.frame(200, True, 1.2) == []
    [due] = g.frame(240, True, 1.24)
    assert isinstance(due, JudgeDue) and not due.parked
    assert g.frame(300, True, 1.3) == []  # one probe only
    assert g.answer(due.barge_id, "backchannel", 1.5) == [Resume("backchannel", 1.5)]
    assert not g.holding
    assert g.ended(kept=True, at=1.6) == ("drop", [])


def test_interruption_barges_in_and_the_utterance_is_a_turn() -> None:
    g = gate()
    g.onset(True, 1.0)
    [due] = g.frame(240, True, 1.24)
    assert isinstance(due, JudgeDue)
    assert g.answer(due.barge_id, "speech", 1.5) == [Interrupt("words", 1.5)]
    assert not g.holding
    assert g.frame(800, False, 1.8) == []  # no second barge-in
    assert g.ended(True, 2.0) == ("publish", [])


def test_a_failed_probe_barges_in() -> None:
    g = gate()
    g.onset(True, 1.0)
    [due] = g.frame(260, True, 1.26)
    assert isinstance(due, JudgeDue)
    assert g.answer(due.barge_id, None, 3.0) == [Interrupt("probe_failed", 3.0)]


def test_speech_past_the_maximum_hold_barges_in_before_the_answer() -> None:
    g = gate()
    g.onset(True, 1.0)
    [due] = g.frame(240, True, 1.24)
    assert isinstance(due, JudgeDue)
    assert g.frame(680, True, 1.7) == []
    assert g.frame(700, True, 1.72) == [Interrupt("max_hold", 1.72)]
    assert g.answer(due.barge_id, "backchannel", 1.8) == []  # too late: ignored


def test_going_on_after_a_backchannel_verdict_is_held_and_judged_afresh() -> None:
    g = gate()
    g.onset(True, 1.0)
    [due] = g.frame(240, True, 1.24)
    assert isinstance(due, JudgeDue)
    assert g.answer(due.barge_id, "backchannel", 1.4) == [Resume("backchannel", 1.4)]
    assert g.frame(240, True, 1.42) == []  # nothing voiced since the verdict
    assert g.frame(260, True, 1.44) == [Hold(1.44)]  # "okay, …" goes on: held again
    assert g.frame(460, True, 1.64) == []
    [again] = g.frame(480, True, 1.66)  # 240 ms voiced since the verdict: judged afresh
    assert isinstance(again, JudgeDue) and again.barge_id != due.barge_id
    assert g.answer(again.barge_id, "speech", 1.9) == [Interrupt("words", 1.9)]  # "… but Tuesday?"
    assert g.ended(True, 2.5) == ("publish", [])
    # speech going on while held again is cut at the maximum hold, counted afresh too
    g.onset(True, 3.0)
    [due] = g.frame(240, True, 3.24)
    g.answer(due.barge_id, "no_speech", 3.4)  # line noise before the word
    assert g.frame(260, True, 3.44) == [Hold(3.44)]
    assert g.frame(939, True, 4.1) != [Interrupt("max_hold", 4.1)]
    assert g.frame(940, True, 4.12) == [Interrupt("max_hold", 4.12)]
    # the same after our audio ended: a turn, with nothing left to cut
    g.onset(True, 5.0)
    [due] = g.frame(240, True, 5.24)
    assert isinstance(due, JudgeDue)
    g.answer(due.barge_id, "backchannel", 5.4)
    assert g.frame(700, False, 5.8) == []
    assert g.ended(True, 6.5) == ("publish", [])


def test_a_short_utterance_is_parked_then_judged_whole() -> None:
    g = gate()
    g.onset(True, 1.0)
    assert g.frame(200, True, 1.2) == []
    fate, actions = g.ended(kept=True, at=1.5)
    assert fate == "park"
    [due] = actions
    assert isinstance(due, JudgeDue) and due.parked
    assert g.holding
    assert g.answer(due.barge_id, "no_speech", 1.9) == [Release(False), Resume("no_speech", 1.9)]
    assert not g.parked and not g.holding


def test_a_parked_interruption_is_published_with_the_barge_in() -> None:
    g = gate()
    g.onset(True, 1.0)
    _, [due] = g.ended(True, 1.3)
    assert isinstance(due, JudgeDue)
    assert g.answer(due.barge_id, "speech", 1.7) == [Interrupt("words", 1.7), Release(True)]


def test_a_blip_over_playback_resumes_at_once() -> None:
    g = gate()
    g.onset(True, 1.0)
    assert g.ended(kept=False, at=1.1) == ("drop", [Resume("blip", 1.1)])
    assert not g.holding


def test_speaking_again_while_being_judged_keeps_holding() -> None:
    g = gate()
    g.onset(True, 1.0)
    _, [first] = g.ended(True, 1.3)  # "mm-hmm" parked, its probe in flight
    assert isinstance(first, JudgeDue)
    assert g.onset(True, 1.4) == []  # "yeah" while it is judged: still held
    assert g.frame(260, True, 1.66) == []  # its own probe waits for the first answer
    assert g.answer(first.barge_id, "backchannel", 1.7) == [Release(False)]
    assert g.holding  # the second one is still to be judged
    [second] = g.frame(280, True, 1.72)
    assert isinstance(second, JudgeDue) and not second.parked
    assert g.answer(second.barge_id, "backchannel", 2.0) == [Resume("backchannel", 2.0)]
    assert g.ended(True, 2.1) == ("drop", [])


def test_two_parked_utterances_are_more_than_a_backchannel() -> None:
    g = gate()
    g.onset(True, 1.0)
    g.ended(True, 1.3)
    g.onset(True, 1.4)
    fate, actions = g.ended(True, 1.6)
    assert fate == "publish"
    assert actions == [Interrupt("kept_talking", 1.6), Release(True)]


def test_our_audio_starting_while_the_caller_speaks_holds_it() -> None:
    g = gate()
    g.onset(False, 1.0)
    assert g.frame(100, False, 1.1) == []
    assert g.frame(120, True, 1.12) == [Hold(1.12)]
    [due] = g.frame(240, True, 1.24)
    assert isinstance(due, JudgeDue)
    # a caller already talking long when our audio starts: barge in at once
    g2 = gate()
    g2.onset(False, 1.0)
    assert g2.frame(900, True, 1.9) == [Hold(1.9), Interrupt("max_hold", 1.9)]
