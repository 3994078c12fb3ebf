"""The call record's JSON lists (the escalation timeline, appointments, latency): their
entries made from events and from the state store, and merging them idempotently (each
entry once per its natural key, the list ordered by time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dealerline_common.messages import (
    AppointmentEvent,
    CallbackRequestedEvent,
    HumanStatusEvent,
    LatencyEvent,
)


def human_status_entry(event: HumanStatusEvent) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The timeline entry of an escalation status, and its key."""
    entry = {
        "kind": "human_status",
        "at": event.at,
        "status": event.status.value,
        "staff_name": event.staff_name,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "final": event.final,
        "reason": event.reason,
        "detail": event.detail,
    }
    return entry, escalation_key(entry)


def callback_entry(event: CallbackRequestedEvent) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The timeline entry of a callback request, and its key."""
    entry = {
        "kind": "callback_requested",
        "at": event.at,
        "callback_id": event.callback_id,
        "preferred_window": event.preferred_window,
        "reason": event.reason,
        "customer_name": event.customer_name,
    }
    return entry, escalation_key(entry)


def appointment_entry(event: AppointmentEvent) -> dict[str, Any]:
    return {
        "action": event.action,
        "appointment_id": event.appointment_id,
        "service": event.service,
        "start": event.start,
        "vehicle": event.vehicle,
        "at": event.at,
        "source": "event",
    }


def latency_entry(event: LatencyEvent) -> dict[str, Any]:
    return {
        "turn_id": event.turn_id,
        "utterance_id": event.utterance_id,
        "at": event.at,
        "stages_ms": dict(event.stages_ms),
    }


def escalation_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    if entry.get("kind") == "callback_requested":
        return ("callback_requested", entry.get("callback_id"))
    return (
        "human_status",
        entry.get("task_id"),
        entry.get("status"),
        entry.get("attempt"),
        entry.get("final"),
    )


def latency_key(entry: dict[str, Any]) -> Any:
    return entry.get("turn_id")


def add_entry(
    entries: list[dict[str, Any]] | None,
    entry: dict[str, Any],
    key: Any,
    key_of: Callable[[dict[str, Any]], Any],
) -> list[dict[str, Any]]:
    """``entries`` plus ``entry`` unless one with the same key is there (a new list, so
    the ORM sees the change), ordered by time."""
    current = list(entries or [])
    if any(key_of(e) == key for e in current):
        return current
    return sorted([*current, entry], key=lambda e: e.get("at") or 0.0)


def appointment_from_state(appointment: dict[str, Any], at: float) -> dict[str, Any]:
    status = str(appointment.get("status") or "booked")
    return {
        "action": "cancelled" if status == "cancelled" else "booked",
        "appointment_id": appointment.get("id"),
        "service": appointment.get("service"),
        "start": appointment.get("start"),
        "vehicle": appointment.get("vehicle"),
        "at": at,
        "source": "state",
    }


def merge_appointment(
    entries: list[dict[str, Any]] | None, entry: dict[str, Any]
) -> list[dict[str, Any]]:
    """Appointment changes: an event's entry is kept once per ``(id, action)``; the state
    store's view of an appointment is only a stand-in until (unless) its event arrives."""
    current = list(entries or [])
    appointment_id = entry.get("appointment_id")
    if not isinstance(appointment_id, int):
        return current
    same = [e for e in current if e.get("appointment_id") == appointment_id]
    if entry["source"] == "state":
        if any(e.get("source") == "event" for e in same):
            return current
        current = [e for e in current if e not in same]  # the newest state view wins
        return sorted([*current, entry], key=lambda e: e.get("at") or 0.0)
    if any(e.get("source") == "event" and e.get("action") == entry["action"] for e in same):
        return current
    current = [
        e
        for e in current
        if not (e.get("appointment_id") == appointment_id and e.get("source") == "state")
    ]
    return sorted([*current, entry], key=lambda e: e.get("at") or 0.0)
