"""One call's detail (``GET /api/calls/{session_id}``): from its written record and
transcript, or, while it is live or before its record is written, from its events."""

import time
from typing import Any

from dealerline_common.db.models import Call
from dealerline_common.messages import (
    AppointmentEvent,
    CallEndedEvent,
    CallStartedEvent,
    HumanStatusEvent,
    LatencyEvent,
    StateUpdateEvent,
    TranscriptEvent,
)

from .store import Viewer, call_summary_json


def detail_from_record(row: Call, viewer: Viewer, live: bool) -> dict[str, Any]:
    """A call's detail from its record (numbers masked unless ``viewer`` sees them)."""
    body = call_summary_json(row, viewer)
    turns = [
        {
            "role": t.role,
            "text": t.text,
            "at": t.at.timestamp(),
            "interrupted": t.interrupted,
        }
        for t in row.turns
    ]
    body.update(
        turns=turns,
        latency=row.latency or [],
        escalation=row.escalation or [],
        appointments=row.appointments or [],
        barge_ins=row.barge_ins,
        end_reason=row.end_reason,
        live=live,
    )
    return viewer.mask(body)


def detail_from_events(session_id: str, events: list[Any], live: bool) -> dict[str, Any]:
    """A call's detail from its events alone (it is live, or its record is not written)."""
    started = ended = None
    caller = customer = end_reason = None
    turns: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    escalation: list[dict[str, Any]] = []
    appointments: list[dict[str, Any]] = []
    barge_ins = 0
    for ev in events:
        started = ev.at if started is None else min(started, ev.at)
        if isinstance(ev, CallStartedEvent):
            caller = ev.from_masked
        elif isinstance(ev, TranscriptEvent):
            role = "caller" if ev.role == "user" else "agent"
            turns.append(
                {"role": role, "text": ev.text, "at": ev.at, "interrupted": ev.interrupted}
            )
            barge_ins += int(ev.interrupted)
        elif isinstance(ev, LatencyEvent):
            latency.append({"turn_id": ev.turn_id, "at": ev.at, "stages_ms": ev.stages_ms})
        elif isinstance(ev, HumanStatusEvent):
            escalation.append(ev.model_dump(mode="json", exclude={"type", "session_id"}))
        elif isinstance(ev, AppointmentEvent):
            appointments.append(ev.model_dump(mode="json", exclude={"type", "session_id"}))
            customer = ev.customer_name or customer
        elif isinstance(ev, StateUpdateEvent):
            info = ev.state.get("customer")
            if isinstance(info, dict) and info.get("name"):
                customer = str(info["name"])
        elif isinstance(ev, CallEndedEvent):
            ended, end_reason = ev.at, ev.reason
    end = ended if ended is not None else time.time()
    return {
        "session_id": session_id,
        "caller": caller,
        "customer_name": customer,
        "started_at": started,
        "ended_at": ended,
        "duration_s": round(end - started, 1) if started is not None else None,
        "outcome": None,
        "summary": None,
        "turns": turns,
        "latency": latency,
        "escalation": escalation,
        "appointments": appointments,
        "barge_ins": barge_ins,
        "end_reason": end_reason,
        "live": live,
    }
