"""ToolEffect and apply_effect: what each field does to the state, and that applying an
effect twice is the same as applying it once (the graph may re-apply on a retry)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from dealerline_agent.dealership.effects import CallbackTaken, ToolEffect, apply_effect
from dealerline_common.messages import HumanCallStatus
from dealerline_common.state import (
    AppointmentInfo,
    BackgroundTask,
    BookingSlots,
    ConversationState,
    CustomerInfo,
    IdentityCheck,
    PendingCode,
    VehicleInfo,
)

LA = ZoneInfo("America/Los_Angeles")
APPT = AppointmentInfo(
    id=7,
    service="Tire Rotation",
    start=datetime(2026, 3, 3, 9, 0, tzinfo=LA),
    end=datetime(2026, 3, 3, 9, 30, tzinfo=LA),
    vehicle="2019 Toyota Camry",
    bay="Express Bay",
)
TASK = BackgroundTask(task_id="t1", kind="escalation", detail="trade-in question")


def fresh() -> ConversationState:
    return ConversationState(
        session_id="s",
        booking_slots=BookingSlots(service="Smog Check", date="2026-03-04"),
    )


EFFECTS = [
    ToolEffect(customer=CustomerInfo(id=1, name="John", vehicles=[VehicleInfo(id=3)])),
    ToolEffect(booking_slots={"time": "09:00", "date": None}),
    ToolEffect(clear_booking=True, booking_slots={"service": "Tire Rotation"}),
    ToolEffect(confirmed_appointment=APPT),
    ToolEffect(cancelled_appointment_id=7),
    ToolEffect(escalation_started=TASK),
    ToolEffect(end_call=True),
    ToolEffect(
        identity=IdentityCheck(
            fact_failures=1,
            codes_sent=1,
            code=PendingCode(
                customer_id=1, salt="00", digest="ab", expires_at=1.0, attempts_left=2
            ),
        )
    ),
    ToolEffect(
        customer=CustomerInfo(id=1, name="John"),
        identity=IdentityCheck(verified_customer_id=1, method="texted_code"),
    ),
    ToolEffect(confirmed_appointment=APPT, appointment_action="booked"),
    ToolEffect(confirmed_appointment=APPT, appointment_action="rescheduled"),
    ToolEffect(
        cancelled_appointment=APPT.model_copy(update={"status": "cancelled"}),
        appointment_action="cancelled",
    ),
    ToolEffect(
        callback_requested=CallbackTaken(
            callback_id=3, preferred_window="tomorrow morning", reason="brakes"
        )
    ),
    ToolEffect(
        customer=CustomerInfo(id=2, name="Ann"),
        confirmed_appointment=APPT,
        escalation_started=TASK,
        end_call=True,
    ),
]


@pytest.mark.parametrize("effect", EFFECTS)
def test_applying_twice_equals_applying_once(effect: ToolEffect) -> None:
    base = fresh()
    once, twice = base.model_copy(deep=True), base.model_copy(deep=True)
    apply_effect(once, effect)
    apply_effect(twice, effect)
    snapshot = twice.model_dump()
    apply_effect(twice, effect)
    assert twice.model_dump() == snapshot
    assert once.model_dump(exclude={"escalation"}) == twice.model_dump(exclude={"escalation"})
    assert once.escalation.model_dump(exclude={"updated_at"}) == twice.escalation.model_dump(
        exclude={"updated_at"}
    )


@pytest.mark.parametrize("effect", EFFECTS)
def test_effects_survive_the_json_artifact(effect: ToolEffect) -> None:
    """Tools hand effects over as JSON (the ToolMessage artifact)."""
    assert ToolEffect.model_validate(effect.model_dump(mode="json")) == effect


def test_each_field() -> None:
    state = fresh()
    apply_effect(state, ToolEffect(booking_slots={"time": "09:00", "date": None}))
    assert state.booking_slots == BookingSlots(service="Smog Check", time="09:00")

    apply_effect(state, ToolEffect(clear_booking=True, booking_slots={"service": "Tire Rotation"}))
    assert state.booking_slots == BookingSlots(service="Tire Rotation")

    customer = CustomerInfo(id=1, name="John")
    apply_effect(state, ToolEffect(customer=customer))
    assert state.customer == customer
    assert state.customer is not customer  # a copy: later edits of the effect stay out

    apply_effect(state, ToolEffect(confirmed_appointment=APPT))
    assert state.confirmed_appointment == APPT
    assert state.booking_slots.is_empty()

    apply_effect(state, ToolEffect(cancelled_appointment_id=99))  # another appointment
    assert state.confirmed_appointment == APPT
    apply_effect(state, ToolEffect(cancelled_appointment_id=7))
    assert state.confirmed_appointment is None

    assert not state.end_requested
    apply_effect(state, ToolEffect(end_call=True))
    assert state.end_requested


def test_escalation_starts_once() -> None:
    state = fresh()
    apply_effect(state, ToolEffect(escalation_started=TASK))
    assert state.escalation_in_progress
    assert [t.task_id for t in state.pending_tasks] == ["t1"]
    assert state.escalation.task_id == "t1"
    assert state.escalation.reason == "trade-in question"
    assert state.escalation.status is HumanCallStatus.CALLING

    # The escalation service moves on; re-applying the same effect must not rewind it.
    state.escalation.status = HumanCallStatus.RINGING
    apply_effect(state, ToolEffect(escalation_started=TASK))
    assert state.escalation.status is HumanCallStatus.RINGING
    state.escalation.status = HumanCallStatus.FAILED
    apply_effect(state, ToolEffect(escalation_started=TASK))
    assert state.escalation.status is HumanCallStatus.FAILED
    assert len(state.pending_tasks) == 1


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (HumanCallStatus.FAILED, "customer_hung_up"),
        (HumanCallStatus.FAILED, "exhausted"),
        (HumanCallStatus.COMPLETED, "human_ended"),
    ],
)
def test_a_retried_write_does_not_revive_an_escalation_that_ended(
    status: HumanCallStatus, detail: str
) -> None:
    """The turn that started the escalation is written back on a conflict retry after the
    escalation service ended it (the caller hung up while staff rang): the state keeps
    the end, and the escalation is no longer in progress."""
    state = fresh()
    apply_effect(state, ToolEffect(escalation_started=TASK))
    state.escalation.status = status
    state.escalation.detail = detail
    state.escalation_in_progress = False
    apply_effect(state, ToolEffect(escalation_started=TASK))
    assert state.escalation_in_progress is False
    assert (state.escalation.status, state.escalation.detail) == (status, detail)
    # A person who could not be reached is not the end: the escalation still runs.
    state.escalation.status, state.escalation.detail = HumanCallStatus.FAILED, "busy"
    apply_effect(state, ToolEffect(escalation_started=TASK))
    assert state.escalation_in_progress is True


def test_a_new_escalation_after_the_last_one_ended() -> None:
    state = fresh()
    apply_effect(state, ToolEffect(escalation_started=TASK))
    state.escalation.status = HumanCallStatus.COMPLETED
    state.escalation.staff_name = "Maria"
    state.escalation_in_progress = False
    second = BackgroundTask(task_id="t2", kind="escalation", detail="billing")
    apply_effect(state, ToolEffect(escalation_started=second))
    assert state.escalation.task_id == "t2"
    assert state.escalation.status is HumanCallStatus.CALLING
    assert state.escalation.reason == "billing"
    assert state.escalation.staff_name is None
    assert [t.task_id for t in state.pending_tasks] == ["t1", "t2"]


def test_an_escalation_under_way_is_not_replaced() -> None:
    state = fresh()
    state.escalation.task_id = "t0"
    state.escalation.status = HumanCallStatus.IN_CONFERENCE
    apply_effect(state, ToolEffect(escalation_started=TASK))
    assert state.escalation.task_id == "t0"
    assert state.escalation.status is HumanCallStatus.IN_CONFERENCE


def test_unknown_slots_and_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown booking slot"):
        ToolEffect(booking_slots={"colour": "red"})
    with pytest.raises(ValidationError):
        ToolEffect(booking_slots={"vehicle_id": "not a number"})
    with pytest.raises(ValidationError):
        ToolEffect.model_validate({"surprise": True})
    assert ToolEffect().is_empty()
    assert not ToolEffect(end_call=True).is_empty()


def test_the_appointment_action_is_explicit_and_consistent() -> None:
    assert ToolEffect(confirmed_appointment=APPT).appointment_change() is None
    booked = ToolEffect(confirmed_appointment=APPT, appointment_action="booked")
    change = booked.appointment_change()
    assert change is not None
    assert (change.action, change.appointment_id, change.appointment) == ("booked", 7, APPT)
    cancelled = ToolEffect(cancelled_appointment=APPT, appointment_action="cancelled")
    assert cancelled.cancelled_appointment_id == 7  # filled from the appointment
    change = cancelled.appointment_change()
    assert change is not None and (change.action, change.appointment_id) == ("cancelled", 7)
    # A bare id (an artifact stored before the details were kept) still announces.
    change = ToolEffect(
        cancelled_appointment_id=9, appointment_action="cancelled"
    ).appointment_change()
    assert change is not None and (change.appointment_id, change.appointment) == (9, None)
    with pytest.raises(ValidationError, match="needs confirmed_appointment"):
        ToolEffect(appointment_action="rescheduled")
    with pytest.raises(ValidationError, match="needs cancelled_appointment_id"):
        ToolEffect(appointment_action="cancelled")
    with pytest.raises(ValidationError, match="cancelled_appointment_id is 8"):
        ToolEffect(cancelled_appointment=APPT, cancelled_appointment_id=8)
    with pytest.raises(ValidationError):
        ToolEffect.model_validate({"appointment_action": "moved", "confirmed_appointment": APPT})


def test_a_callback_changes_nothing_in_the_state() -> None:
    state = fresh()
    before = state.model_dump()
    taken = CallbackTaken(callback_id=3, preferred_window="today", reason="price")
    apply_effect(state, ToolEffect(callback_requested=taken))
    assert state.model_dump() == before
