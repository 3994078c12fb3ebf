"""What the parts of a call leg need from each other.

:class:`LegContext` is what a leg needs from the simulator that owns it (``TwilioSim``);
:class:`RunningLeg` is what executing TwiML needs from the leg it runs on (a
:class:`~dealerline_sim.legs.CallLeg`). A TwiML step ends in one of three ways: go on with
the next verb (``None``), go on with a newly fetched document (:class:`Doc`), or stop
because the leg is over (:data:`END`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from dealerline_sim.callbacks import CallbackDispatcher, WebhookClient
from dealerline_sim.conference import Conferences, Participant
from dealerline_sim.humans import HumanScript
from dealerline_sim.tasks import TaskSet
from dealerline_sim.timeline import SimClock, Timeline
from dealerline_sim.twiml import TwimlVerb

if TYPE_CHECKING:
    from dealerline_sim.call import Call

__all__ = ["END", "Doc", "End", "LegContext", "RunningLeg", "Step"]


class LegContext(Protocol):
    """What a leg needs from the simulator that owns it (``TwilioSim``)."""

    account_sid: str
    clock: SimClock
    timeline: Timeline
    dispatcher: CallbackDispatcher
    webhooks: WebhookClient
    conferences: Conferences
    tasks: TaskSet
    dial_delay_s: float

    def error(self, call_sid: str | None, code: int, message: str) -> None: ...


class RunningLeg(Protocol):
    """What executing TwiML reads and records on its leg."""

    sid: str
    ctx: LegContext
    human: HumanScript | None  # the scripted person on an outbound leg
    customer: Call | None  # the caller's call on an inbound leg
    heard: list[str]  # every <Say>, in order
    pressed: list[str]  # the keys pressed at each <Gather> that got input
    gathers: int  # <Gather>s run so far
    participant: Participant | None  # while in a conference
    dial_action: tuple[str, str] | None  # the live <Dial>'s action URL and method

    @property
    def is_final(self) -> bool: ...

    def call_params(self) -> dict[str, str]: ...

    async def hang_up_from_twiml(self, by: str) -> None: ...


@dataclass
class Doc:
    """A TwiML document to run: its verbs and the URL relative ones resolve against."""

    verbs: list[TwimlVerb]
    url: str | None


class End:
    """The leg is over: stop executing."""


END: Final = End()
Step = Doc | End | None  # None: go on with the next verb
