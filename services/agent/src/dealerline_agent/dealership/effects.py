"""What a tool call changes in the conversation state, and how that change is applied.

Tools never write the state: each returns a :class:`ToolEffect` as the artifact of its
``ToolMessage`` (``model_dump(mode="json")``), and the graph applies it with
:func:`apply_effect`. Keeping the change as data makes it replayable: the effect is
applied to the turn's working copy right after the tools step (so later tool calls in the
turn see it) and again when the turn's state is written back under optimistic locking,
possibly more than once on a conflict retry. Applying an effect twice is therefore the
same as applying it once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from dealerline_common.messages import HumanCallStatus, now
from dealerline_common.state import (
    AppointmentInfo,
    BackgroundTask,
    BookingSlots,
    ConversationState,
    CustomerInfo,
)

__all__ = ["BOOKING_SLOT_NAMES", "ToolEffect", "apply_effect"]

BOOKING_SLOT_NAMES = frozenset(BookingSlots.model_fields)

# A new escalation may start only from these human-call states (none yet, or the last
# one is over); in any other state a human call is already under way.
_ESCALATION_IDLE = frozenset(
    {HumanCallStatus.NONE, HumanCallStatus.FAILED, HumanCallStatus.COMPLETED}
)


class ToolEffect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerInfo | None = None  # identified / created / updated
    booking_slots: dict[str, Any] | None = None  # slot -> new value (None clears that slot)
    clear_booking: bool = False
    confirmed_appointment: AppointmentInfo | None = None  # booked or rescheduled
    cancelled_appointment_id: int | None = None
    escalation_started: BackgroundTask | None = None  # kind="escalation", detail=reason
    end_call: bool = False

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
    cancellation, the escalation, the end of the call.
    """
    if effect.customer is not None:
        state.customer = effect.customer.model_copy(deep=True)
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


def _start_escalation(state: ConversationState, task: BackgroundTask) -> None:
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
