"""What a tool call changes in the conversation state, and how that change is applied.

Tools never write the state: each returns a :class:`ToolEffect` as the artifact of its
``ToolMessage`` (``model_dump(mode="json")``), and the graph applies it with
:func:`apply_effect`. Keeping the change as data makes it replayable: the effect is
applied to the turn's working copy right after the tools step (so later tool calls in the
turn see it) and again when the turn's state is written back under optimistic locking,
possibly more than once on a conflict retry. Applying an effect twice is therefore the
same as applying it once.

An effect also says what the turn changed outside the conversation (an appointment
booked, moved or cancelled; a callback request taken): the service publishes those as
events once the turn's state is stored (:meth:`ToolEffect.appointment_change`,
``callback_requested``). They never change the state, so they replay freely.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from dealerline_common.messages import HumanCallStatus, now
from dealerline_common.state import (
    AppointmentInfo,
    BackgroundTask,
    BookingSlots,
    ConversationState,
    CustomerInfo,
    IdentityCheck,
)

__all__ = [
    "BOOKING_SLOT_NAMES",
    "AppointmentAction",
    "AppointmentChange",
    "CallbackTaken",
    "ToolEffect",
    "apply_effect",
]

BOOKING_SLOT_NAMES = frozenset(BookingSlots.model_fields)

# A new escalation may start only from these human-call states (none yet, or the last
# one is over); in any other state a human call is already under way.
_ESCALATION_IDLE = frozenset(
    {HumanCallStatus.NONE, HumanCallStatus.FAILED, HumanCallStatus.COMPLETED}
)


AppointmentAction = Literal["booked", "rescheduled", "cancelled"]


class CallbackTaken(BaseModel):
    """A ``callback_requests`` row the tool wrote (or found, for a replayed call)."""

    model_config = ConfigDict(extra="forbid")

    callback_id: int
    preferred_window: str
    reason: str
    customer_name: str | None = None


class AppointmentChange(BaseModel):
    """One appointment change of a turn, as the after-call event tells it."""

    action: AppointmentAction
    appointment_id: int
    appointment: AppointmentInfo | None = None


class ToolEffect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerInfo | None = None  # identified / created / updated
    # The caller's verification as it now stands (replaces the state's whole): verified,
    # a code texted or tried, a wrong fact counted. Holds a code's hash, never its digits.
    identity: IdentityCheck | None = None
    booking_slots: dict[str, Any] | None = None  # slot -> new value (None clears that slot)
    clear_booking: bool = False
    confirmed_appointment: AppointmentInfo | None = None  # booked or rescheduled
    cancelled_appointment_id: int | None = None
    # What the appointment fields above record, when the tool changed an appointment:
    # "booked"/"rescheduled" go with confirmed_appointment, "cancelled" with
    # cancelled_appointment_id. None: nothing changed (e.g. a booking already confirmed
    # earlier in the call, asked for again).
    appointment_action: AppointmentAction | None = None
    cancelled_appointment: AppointmentInfo | None = None  # the cancelled one, for the event
    callback_requested: CallbackTaken | None = None
    escalation_started: BackgroundTask | None = None  # kind="escalation", detail=reason
    end_call: bool = False

    @model_validator(mode="after")
    def _action_matches(self) -> ToolEffect:
        if self.cancelled_appointment is not None:
            if self.cancelled_appointment_id is None:
                self.cancelled_appointment_id = self.cancelled_appointment.id
            elif self.cancelled_appointment_id != self.cancelled_appointment.id:
                raise ValueError(
                    f"cancelled_appointment is #{self.cancelled_appointment.id} but "
                    f"cancelled_appointment_id is {self.cancelled_appointment_id}"
                )
        action = self.appointment_action
        if action in ("booked", "rescheduled") and self.confirmed_appointment is None:
            raise ValueError(f"appointment_action={action!r} needs confirmed_appointment")
        if action == "cancelled" and self.cancelled_appointment_id is None:
            raise ValueError("appointment_action='cancelled' needs cancelled_appointment_id")
        return self

    def appointment_change(self) -> AppointmentChange | None:
        """The appointment this effect booked, moved or cancelled (None: none)."""
        action = self.appointment_action
        if action is None:
            return None
        if action == "cancelled":
            assert self.cancelled_appointment_id is not None  # the validator made sure
            return AppointmentChange(
                action=action,
                appointment_id=self.cancelled_appointment_id,
                appointment=self.cancelled_appointment,
            )
        assert self.confirmed_appointment is not None
        return AppointmentChange(
            action=action,
            appointment_id=self.confirmed_appointment.id,
            appointment=self.confirmed_appointment,
        )

    @field_validator("booking_slots")
    @classmethod
    def _known_slots(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            unknown = sorted(set(value) - BOOKING_SLOT_NAMES)
            if unknown:
                raise ValueError(
                    f"unknown booking slot(s) {unknown}; known: {sorted(BOOKING_SLOT_NAMES)}"
                )
            # Validate the values the same way the state would.
            BookingSlots.model_validate(value)
        return value

    def is_empty(self) -> bool:
        return self == ToolEffect()


def apply_effect(state: ConversationState, effect: ToolEffect) -> None:
    """Apply ``effect`` to ``state`` in place; applying it twice equals applying it once.

    Order: a cleared booking first, then single slots (so "clear, then set the service"
    in one effect works), then a confirmed appointment (which closes the booking), a
    cancellation, the escalation, the end of the call. ``appointment_action`` and
    ``callback_requested`` only say what to publish; the state does not keep them.
    """
    if effect.customer is not None:
        state.customer = effect.customer.model_copy(deep=True)
    if effect.identity is not None:
        state.identity = effect.identity.model_copy(deep=True)
    if effect.clear_booking:
        state.booking_slots = BookingSlots()
    if effect.booking_slots:
        merged = state.booking_slots.model_dump() | effect.booking_slots
        state.booking_slots = BookingSlots.model_validate(merged)
    if effect.confirmed_appointment is not None:
        state.confirmed_appointment = effect.confirmed_appointment.model_copy(deep=True)
        state.booking_slots = BookingSlots()
    if (
        effect.cancelled_appointment_id is not None
        and state.confirmed_appointment is not None
        and state.confirmed_appointment.id == effect.cancelled_appointment_id
    ):
        state.confirmed_appointment = None
    if effect.escalation_started is not None:
        _start_escalation(state, effect.escalation_started)
    if effect.end_call:
        state.end_requested = True


# Reasons with which the escalation service ends a whole escalation (``EscalationReason``);
# a FAILED with any other reason only means "ringing the next person".
_ESCALATION_OVER_REASONS = frozenset({"exhausted", "customer_hung_up", "human_ended", "error"})


def _escalation_over(state: ConversationState, task_id: str) -> bool:
    e = state.escalation
    if e.task_id != task_id:
        return False
    return e.status is HumanCallStatus.COMPLETED or (
        e.status is HumanCallStatus.FAILED and e.detail in _ESCALATION_OVER_REASONS
    )


def _start_escalation(state: ConversationState, task: BackgroundTask) -> None:
    if _escalation_over(state, task.task_id):
        # The turn's write is being retried after the escalation service ended this very
        # escalation (the caller hung up while staff rang): re-applying must not revive it.
        return
    state.escalation_in_progress = True
    if state.task(task.task_id) is None:
        state.pending_tasks.append(task.model_copy(deep=True))
    escalation = state.escalation
    if escalation.status in _ESCALATION_IDLE and escalation.task_id != task.task_id:
        escalation.task_id = task.task_id
        escalation.reason = task.detail
        escalation.status = HumanCallStatus.CALLING
        escalation.detail = None
        escalation.staff_name = None
        escalation.human_call_sid = None
        escalation.conference = None
        escalation.attempts = 0
        escalation.updated_at = now()
