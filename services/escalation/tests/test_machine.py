"""The human-call state machine, exhaustively: every pair of states, every Twilio status in
every state, and which failures end the escalation."""

from __future__ import annotations

import itertools

import pytest

from dealerline_common.messages import HumanCallStatus as S
from dealerline_escalation.machine import (
    ATTEMPT_REASONS,
    FINAL_REASONS,
    KEY_PRESSED,
    REASONS,
    IllegalTransition,
    Outcome,
    can_start_attempt,
    escalation_final,
    interpret,
    is_behind,
    is_final,
    transition,
)

HAPPY = [
    S.NONE,
    S.CALLING,
    S.RINGING,
    S.WAITING_CONFIRMATION,
    S.CONFIRMED,
    S.IN_CONFERENCE,
    S.COMPLETED,
]
LEGAL = {
    (S.NONE, S.CALLING),
    (S.CALLING, S.RINGING),
    (S.CALLING, S.WAITING_CONFIRMATION),  # a lost "ringing" callback
    (S.RINGING, S.WAITING_CONFIRMATION),
    (S.WAITING_CONFIRMATION, S.CONFIRMED),
    (S.CONFIRMED, S.IN_CONFERENCE),
    (S.IN_CONFERENCE, S.COMPLETED),
    *((s, S.FAILED) for s in HAPPY[:-1]),  # any non-final state may fail
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair_is_legal_exactly_when_listed(current: S, target: S) -> None:
    if (current, target) in LEGAL:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(current, target)
        assert info.value.current is current and info.value.target is target
        assert f"{current.value} -> {target.value}" in str(info.value)


def test_final_states_never_move() -> None:
    for final in (S.COMPLETED, S.FAILED):
        assert is_final(final)
        for target in S:
            with pytest.raises(IllegalTransition):
                transition(final, target)
            assert is_behind(final, target)  # anything reported about them is stale
    assert not any(is_final(s) for s in HAPPY[:-1])


def test_happy_path_walks_forward_and_never_back() -> None:
    for i, current in enumerate(HAPPY[:-1]):
        for earlier in HAPPY[: i + 1]:
            assert is_behind(current, earlier)
        for later in HAPPY[i + 1 :]:
            assert not is_behind(current, later)


@pytest.mark.parametrize(
    ("call_status", "current", "detail", "expected"),
    [
        ("queued", S.NONE, None, Outcome(S.CALLING)),
        ("initiated", S.NONE, None, Outcome(S.CALLING)),
        ("initiated", S.CALLING, None, None),  # repeated
        ("ringing", S.CALLING, None, Outcome(S.RINGING)),
        ("ringing", S.WAITING_CONFIRMATION, None, None),  # late
        ("in-progress", S.RINGING, None, Outcome(S.WAITING_CONFIRMATION)),
        ("in-progress", S.CALLING, None, Outcome(S.WAITING_CONFIRMATION)),
        ("in-progress", S.CONFIRMED, None, None),
        ("in-progress", S.IN_CONFERENCE, None, None),
        ("busy", S.RINGING, None, Outcome(S.FAILED, "busy")),
        ("no-answer", S.RINGING, None, Outcome(S.FAILED, "no_answer")),
        ("failed", S.CALLING, None, Outcome(S.FAILED, "failed")),
        ("canceled", S.RINGING, None, Outcome(S.FAILED, "canceled")),
        ("completed", S.RINGING, None, Outcome(S.FAILED, "no_key")),
        ("completed", S.WAITING_CONFIRMATION, None, Outcome(S.FAILED, "no_key")),
        ("completed", S.WAITING_CONFIRMATION, KEY_PRESSED, Outcome(S.FAILED, "declined")),
        ("completed", S.CONFIRMED, None, Outcome(S.FAILED, "human_ended")),
        ("completed", S.IN_CONFERENCE, None, Outcome(S.COMPLETED, "human_ended", True)),
        ("failed", S.IN_CONFERENCE, None, Outcome(S.COMPLETED, "human_ended", True)),
        ("completed", S.COMPLETED, None, None),  # never downgraded / repeated
        ("ringing", S.FAILED, "busy", None),
        ("busy", S.FAILED, "no_answer", None),
        ("Completed ", S.RINGING, None, Outcome(S.FAILED, "no_key")),  # tolerant of case
        ("unknown-status", S.RINGING, None, None),
    ],
)
def test_interpret_twilio_status(
    call_status: str, current: S, detail: str | None, expected: Outcome | None
) -> None:
    assert interpret(call_status, current, detail) == expected


def test_every_interpretation_is_a_legal_move() -> None:
    statuses = [
        "queued", "initiated", "ringing", "in-progress", "answered",
        "completed", "busy", "no-answer", "failed", "canceled",
    ]  # fmt: skip
    for call_status, current, detail in itertools.product(statuses, S, (None, KEY_PRESSED)):
        outcome = interpret(call_status, current, detail)
        if outcome is not None:
            assert transition(current, outcome.status) is outcome.status
            assert outcome.reason is None or outcome.reason in REASONS


def test_reasons_split_into_attempt_and_final() -> None:
    assert ATTEMPT_REASONS | FINAL_REASONS == REASONS
    assert not ATTEMPT_REASONS & FINAL_REASONS
    assert {"exhausted", "customer_hung_up", "human_ended", "error"} == FINAL_REASONS
    for reason in ATTEMPT_REASONS:
        assert not escalation_final(S.FAILED, reason)
        assert can_start_attempt(S.FAILED, reason)
    for reason in FINAL_REASONS:
        assert escalation_final(S.FAILED, reason)
        assert not can_start_attempt(S.FAILED, reason)
    assert escalation_final(S.COMPLETED, "human_ended")
    assert escalation_final(S.COMPLETED, None)
    assert can_start_attempt(S.NONE, None)
    for live in HAPPY[1:-1]:
        assert not escalation_final(live, None)
        assert not can_start_attempt(live, None)
