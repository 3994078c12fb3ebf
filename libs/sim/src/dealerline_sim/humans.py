"""Scripted people at the staff phones the escalation service calls.

Register one per phone number with ``TwilioSim.add_human(number, script)``; when a REST
``Calls.json`` create dials that number, the outbound leg rings and then behaves as the
script says. All durations are simulated seconds (see ``dealerline_sim.timeline``).

The presets match the situations the escalation flow must survive (staff who are busy,
unreachable, screened by voicemail, who decline, or who accept):

=======================================  ==============================================
preset                                   what the call does
=======================================  ==============================================
``never_answers()``                      rings until the REST ``Timeout`` → ``no-answer``
``busy()``                               rings briefly → ``busy``
``fails()``                              ``initiated`` → ``failed`` (unreachable)
``call_screening()``                     answers (in-progress), hears every prompt,
                                         never presses a key → each ``<Gather>`` times
                                         out and falls through (e.g. to ``<Hangup/>``)
``presses_then_declines()``              presses a key at the first ``<Gather>`` (proves
                                         a human), then a key other than 1 at the second
``accepts_then_hangs_up(talk_s)``        presses a key, then 1; joins the conference and
                                         hangs up ``talk_s`` after it has started
``accepts_customer_hangs_up_first()``    presses a key, then 1; stays in the conference
                                         until it ends (the test hangs the customer up)
=======================================  ==============================================

``keys`` holds what the person presses at each ``<Gather>``, in order: a string of DTMF
keys (``"1"``, ``"1234#"``) or ``None`` for "presses nothing". Gathers beyond the tuple get
no input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["AnsweredBy", "HumanOutcome", "HumanScript"]

HumanOutcome = Literal["answer", "no-answer", "busy", "failed"]
AnsweredBy = Literal[
    "human",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "fax",
    "unknown",
]
_DTMF = set("0123456789*#")


@dataclass(frozen=True)
class HumanScript:
    """How the person at one phone behaves when the simulator rings it."""

    outcome: HumanOutcome = "answer"
    ring_s: float = 2.0
    """Seconds of ringing before answering / busy; no-answer rings until ``Timeout``."""
    keys: tuple[str | None, ...] = ()
    """What is pressed at each ``<Gather>``, in order (None: nothing)."""
    press_after_s: float = 1.0
    """Seconds after a ``<Gather>``'s prompt has finished before the keys are pressed."""
    talk_s: float | None = None
    """Hang up this long after the conference has started (None: stay until it ends)."""
    max_wait_for_conference_s: float = 120.0
    """Hang up if the conference has not started this long after joining it."""
    hang_up_after_s: float | None = None
    """Hang up this long after answering, wherever the call is (None: never)."""
    answered_by: AnsweredBy = "human"
    """``AnsweredBy`` when the create request asked for ``MachineDetection``."""
    name: str = "custom"

    def __post_init__(self) -> None:
        for value, label in (
            (self.ring_s, "ring_s"),
            (self.press_after_s, "press_after_s"),
            (self.max_wait_for_conference_s, "max_wait_for_conference_s"),
        ):
            if value < 0:
                raise ValueError(f"{label} must not be negative")
        if self.talk_s is not None and self.talk_s < 0:
            raise ValueError("talk_s must not be negative")
        if self.hang_up_after_s is not None and self.hang_up_after_s < 0:
            raise ValueError("hang_up_after_s must not be negative")
        for keys in self.keys:
            if keys is not None and (not keys or set(keys) - _DTMF):
                raise ValueError(f"not a DTMF key sequence: {keys!r}")

    def keys_for(self, gather_index: int) -> str | None:
        """What is pressed at the ``gather_index``-th ``<Gather>`` (0-based)."""
        return self.keys[gather_index] if gather_index < len(self.keys) else None

    def with_(self, **changes: object) -> HumanScript:
        """A copy with some fields changed (``HumanScript.busy().with_(ring_s=5)``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # -- presets --------------------------------------------------------------------------

    @classmethod
    def never_answers(cls) -> HumanScript:
        return cls(outcome="no-answer", name="never_answers")

    @classmethod
    def busy(cls, ring_s: float = 1.0) -> HumanScript:
        return cls(outcome="busy", ring_s=ring_s, name="busy")

    @classmethod
    def fails(cls) -> HumanScript:
        return cls(outcome="failed", ring_s=0.0, name="fails")

    @classmethod
    def call_screening(cls, ring_s: float = 2.0) -> HumanScript:
        return cls(outcome="answer", ring_s=ring_s, keys=(), name="call_screening")

    @classmethod
    def presses_then_declines(
        cls, first: str = "5", decline: str = "2", ring_s: float = 2.0
    ) -> HumanScript:
        if decline == "1":
            raise ValueError("declining means pressing anything but 1")
        return cls(
            outcome="answer", ring_s=ring_s, keys=(first, decline), name="presses_then_declines"
        )

    @classmethod
    def accepts_then_hangs_up(
        cls, talk_s: float = 3.0, first: str = "5", ring_s: float = 2.0
    ) -> HumanScript:
        return cls(
            outcome="answer",
            ring_s=ring_s,
            keys=(first, "1"),
            talk_s=talk_s,
            name="accepts_then_hangs_up",
        )

    @classmethod
    def accepts_customer_hangs_up_first(cls, first: str = "5", ring_s: float = 2.0) -> HumanScript:
        return cls(
            outcome="answer",
            ring_s=ring_s,
            keys=(first, "1"),
            talk_s=None,
            max_wait_for_conference_s=600.0,
            name="accepts_customer_hangs_up_first",
        )
