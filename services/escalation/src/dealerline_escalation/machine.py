"""The human-call state machine, in one place.

One escalation rings the people of a hunt list one after the other; each of those
outbound calls (an *attempt*) walks this machine::

    NONE -> CALLING -> RINGING -> WAITING_CONFIRMATION -> CONFIRMED -> IN_CONFERENCE -> COMPLETED
      any non-final state -> FAILED

``COMPLETED`` and ``FAILED`` are final for the call: nothing moves them again, so a late or
repeated Twilio callback can never downgrade them. A ``FAILED`` attempt does not end the
escalation: the next person is rung (a fresh attempt starting at ``NONE``) unless the failure
reason is one that ends everything (:data:`FINAL_REASONS`).

Everything here is pure (no I/O), so every rule is unit-tested exhaustively, and the
orchestrator, the webhooks and the watchdog all decide through the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from dealerline_common.messages import EscalationReason, HumanCallStatus

S = HumanCallStatus

TRANSITIONS: dict[HumanCallStatus, frozenset[HumanCallStatus]] = {
    S.NONE: frozenset({S.CALLING, S.FAILED}),
    # A lost "ringing" callback: the watchdog (or the answer webhook) may see the call
    # answered straight from CALLING.
    S.CALLING: frozenset({S.RINGING, S.WAITING_CONFIRMATION, S.FAILED}),
    S.RINGING: frozenset({S.WAITING_CONFIRMATION, S.FAILED}),
    S.WAITING_CONFIRMATION: frozenset({S.CONFIRMED, S.FAILED}),
    S.CONFIRMED: frozenset({S.IN_CONFERENCE, S.FAILED}),
    S.IN_CONFERENCE: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}

FINAL_STATES = frozenset({S.COMPLETED, S.FAILED})

# Position on the happy path: a report "behind" the current state is a stale callback.
_RANK = {
    S.NONE: 0,
    S.CALLING: 1,
    S.RINGING: 2,
    S.WAITING_CONFIRMATION: 3,
    S.CONFIRMED: 4,
    S.IN_CONFERENCE: 5,
    S.COMPLETED: 6,
    S.FAILED: 6,
}

REASONS: frozenset[str] = frozenset(get_args(EscalationReason))
# An attempt that failed for one of these moves on to the next person on the hunt list.
ATTEMPT_REASONS: frozenset[str] = frozenset(
    {"busy", "no_answer", "failed", "canceled", "no_key", "declined"}
)
# These end the whole escalation.
FINAL_REASONS: frozenset[str] = REASONS - ATTEMPT_REASONS

# EscalationInfo.detail while WAITING_CONFIRMATION: the person pressed the first key (a
# human, not call screening), so hanging up now is a decline, not "no key".
KEY_PRESSED = "key_pressed"


class IllegalTransition(ValueError):
    """A move the machine does not allow (it is refused and logged, never applied)."""

    def __init__(self, current: HumanCallStatus, target: HumanCallStatus) -> None:
        super().__init__(f"illegal human-call transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


def transition(current: HumanCallStatus, target: HumanCallStatus) -> HumanCallStatus:
    """``target`` if the machine allows ``current -> target``; else IllegalTransition.

    Staying in the same state is not a transition (callers treat it as a no-op first).
    """
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target


def is_final(status: HumanCallStatus) -> bool:
    return status in FINAL_STATES


def is_behind(current: HumanCallStatus, target: HumanCallStatus) -> bool:
    """True when ``target`` is at or before ``current`` on the happy path, or ``current`` is
    final: a report that arrived late or twice, to be ignored quietly (not an error)."""
    return is_final(current) or _RANK[target] <= _RANK[current]


def escalation_final(status: HumanCallStatus, reason: str | None) -> bool:
    """Whether the escalation as a whole is over in this state."""
    if status is S.COMPLETED:
        return True
    return status is S.FAILED and reason in FINAL_REASONS


def can_start_attempt(status: HumanCallStatus, reason: str | None) -> bool:
    """A new attempt (the next person) may start from nothing, or after a failed one."""
    return status is S.NONE or (status is S.FAILED and reason in ATTEMPT_REASONS)


@dataclass(frozen=True)
class Outcome:
    """What a report about a human call means for its attempt."""

    status: HumanCallStatus
    reason: str | None = None
    # IN_CONFERENCE and the person's call ended: whether the caller is still on the line
    # decides the reason, so the orchestrator fetches the caller's call first.
    human_left: bool = False


_PROGRESS = {
    "queued": S.CALLING,
    "initiated": S.CALLING,
    "ringing": S.RINGING,
    "in-progress": S.WAITING_CONFIRMATION,
    "answered": S.WAITING_CONFIRMATION,
}
_UNANSWERED = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "canceled"}
TWILIO_FINAL = frozenset({"completed", *_UNANSWERED})


def interpret(call_status: str, current: HumanCallStatus, detail: str | None) -> Outcome | None:
    """What Twilio's ``CallStatus`` of the human call means in state ``current``; None when
    it says nothing new (unknown status, or progress the call has already made).

    ``detail`` is the attempt's recorded detail (:data:`KEY_PRESSED` after the first key).
    """
    status = call_status.strip().lower()
    if status in _PROGRESS:
        target = _PROGRESS[status]
        # Behind (late, repeated) or a jump the machine does not make (an attempt that
        # has not started yet): nothing to apply.
        return Outcome(target) if target in TRANSITIONS[current] else None
    if status not in TWILIO_FINAL or is_final(current):
        return None
    if current is S.IN_CONFERENCE:
        return Outcome(S.COMPLETED, "human_ended", human_left=True)
    if current is S.CONFIRMED:
        # Accepted, then gone before the caller was moved: the escalation ends here (a
        # second "confirmed" for the same task would reuse the agent's turn id).
        return Outcome(S.FAILED, "human_ended")
    if status in _UNANSWERED:
        return Outcome(S.FAILED, _UNANSWERED[status])
    # "completed" before acceptance: they answered, then the call ended without a "1".
    if current is S.WAITING_CONFIRMATION and detail == KEY_PRESSED:
        return Outcome(S.FAILED, "declined")
    return Outcome(S.FAILED, "no_key")
