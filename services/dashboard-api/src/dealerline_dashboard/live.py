"""What is happening now: the live calls and the escalations, kept in memory from the
event stream (replayed on start, so a restarted replica knows the calls still going) and
from the escalation status subject (``call.*.escalation``, the fastest news of a ring).

Every replica builds the same view from the same stream; nothing here is written back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from dealerline_common.messages import (
    AppointmentEvent,
    CallEndedEvent,
    CallRecordedEvent,
    CallStartedEvent,
    EscalationStatus,
    EventMessage,
    HumanCallStatus,
    HumanStatusEvent,
    StateUpdateEvent,
    StreamStartedEvent,
)

CallState = Literal["ai", "escalating", "in_conference", "ended"]

ENDED_LINGER_S = 60.0  # an ended call stays on the live list this long, as "ended"
_RINGING = {
    HumanCallStatus.CALLING,
    HumanCallStatus.RINGING,
    HumanCallStatus.WAITING_CONFIRMATION,
    HumanCallStatus.CONFIRMED,
}


@dataclass
class Escalation:
    session_id: str
    task_id: str | None
    status: HumanCallStatus
    staff_name: str | None
    attempt: int
    final: bool
    reason: str | None
    reason_text: str | None
    started_at: float
    updated_at: float

    def brief(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "staff_name": self.staff_name,
            "attempt": self.attempt,
            "final": self.final,
            "reason": self.reason,
        }


@dataclass
class LiveCall:
    session_id: str
    started_at: float
    last_event_at: float
    call_sid: str | None = None
    caller: str | None = None  # masked by the gateway before it reached the bus
    customer_name: str | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    handler: str = "AI"
    escalation: Escalation | None = None
    seen_seq: int = 0

    @property
    def state(self) -> CallState:
        if self.ended_at is not None:
            return "ended"
        esc = self.escalation
        if esc is None or esc.final:
            return "ai"
        if esc.status == HumanCallStatus.IN_CONFERENCE:
            return "in_conference"
        if esc.status in _RINGING:
            return "escalating"
        return "ai"


@dataclass
class LiveView:
    stale_call_s: float
    window_s: float
    calls: dict[str, LiveCall] = field(default_factory=dict)
    escalations: dict[str, Escalation] = field(default_factory=dict)
    # Sessions that ended (and when), so a late event cannot bring a call back to life.
    ended: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ updates

    def apply(self, seq: int, event: EventMessage) -> bool:
        """Fold one stored event in; returns whether an escalation changed."""
        sid = event.session_id
        if isinstance(event, HumanStatusEvent):
            changed = self.apply_escalation(
                EscalationStatus.model_validate(event.model_dump(exclude={"type"}))
            )
        else:
            changed = False
        if sid in self.ended and not isinstance(event, CallStartedEvent):
            return changed
        if isinstance(event, CallRecordedEvent | AppointmentEvent) and sid not in self.calls:
            return changed  # after-the-call news of a call we no longer show
        call = self.calls.get(sid)
        if call is None:
            call = self.calls[sid] = LiveCall(sid, started_at=event.at, last_event_at=event.at)
            call.escalation = self.escalations.get(sid)
        if seq <= call.seen_seq:
            return changed
        call.seen_seq = seq
        call.last_event_at = max(call.last_event_at, event.at)
        if isinstance(event, CallStartedEvent):
            self.ended.pop(sid, None)
            call.call_sid = event.call_sid
            call.caller = event.from_masked
            call.started_at = min(call.started_at, event.at)
        elif isinstance(event, StreamStartedEvent):
            pass
        elif isinstance(event, StateUpdateEvent):
            customer = event.state.get("customer")
            if isinstance(customer, dict) and customer.get("name"):
                call.customer_name = str(customer["name"])
        elif isinstance(event, AppointmentEvent | CallRecordedEvent):
            name = getattr(event, "customer_name", None)
            if name:
                call.customer_name = name
        elif isinstance(event, CallEndedEvent):
            call.ended_at = event.at
            call.end_reason = event.reason
            call.handler = "AI"
            self.ended[sid] = event.at
        return changed

    def apply_escalation(self, status: EscalationStatus) -> bool:
        """One human-call status (from the bus or its event copy); the same status from
        both arrives twice and is applied once. Returns whether anything changed."""
        sid = status.session_id
        current = self.escalations.get(sid)
        if current is not None and current.task_id == status.task_id:
            if status.at < current.updated_at:
                return False  # older news than what we show
            # The bus status and its event copy carry their own timestamps: same content
            # is the same news.
            same = (
                status.status == current.status
                and status.attempt == current.attempt
                and status.final == current.final
                and status.staff_name == current.staff_name
                and status.reason == current.reason
            )
            if same:
                return False
            started = current.started_at
        elif current is not None and status.at < current.updated_at:
            return False  # a status of an older escalation of this call
        else:
            started = status.at
        esc = Escalation(
            session_id=sid,
            task_id=status.task_id,
            status=status.status,
            staff_name=status.staff_name,
            attempt=status.attempt,
            final=status.final,
            reason=status.reason,
            reason_text=status.detail,
            started_at=started,
            updated_at=status.at,
        )
        self.escalations[sid] = esc
        call = self.calls.get(sid)
        if call is not None:
            call.escalation = esc
            if esc.status == HumanCallStatus.IN_CONFERENCE and not esc.final:
                call.handler = esc.staff_name or "staff"
            elif esc.final or esc.status in (HumanCallStatus.COMPLETED, HumanCallStatus.FAILED):
                call.handler = "AI"
        return True

    def prune(self, now: float | None = None) -> None:
        now = now if now is not None else time.time()
        for sid, call in list(self.calls.items()):
            if call.ended_at is not None and now - call.ended_at > ENDED_LINGER_S:
                del self.calls[sid]
            elif call.ended_at is None and now - call.last_event_at > self.stale_call_s:
                del self.calls[sid]
                self.ended[sid] = now
        for sid, at in list(self.ended.items()):
            if now - at > self.window_s:
                del self.ended[sid]
        for sid, esc in list(self.escalations.items()):
            if now - esc.updated_at > self.window_s:
                del self.escalations[sid]

    # ------------------------------------------------------------------ views

    def live_calls(self, now: float | None = None) -> list[dict[str, Any]]:
        now = now if now is not None else time.time()
        self.prune(now)
        calls = sorted(self.calls.values(), key=lambda c: c.started_at)
        return [live_call_json(c, now) for c in calls]

    def escalation_list(self, day_start: float, now: float | None = None) -> list[dict[str, Any]]:
        """Running escalations (oldest first), then those finished since ``day_start``
        (latest first)."""
        self.prune(now)
        running = sorted(
            (e for e in self.escalations.values() if not e.final), key=lambda e: e.started_at
        )
        finished = sorted(
            (e for e in self.escalations.values() if e.final and e.updated_at >= day_start),
            key=lambda e: e.updated_at,
            reverse=True,
        )
        return [self.escalation_json(e) for e in (*running, *finished)]

    def escalation_json(self, esc: Escalation) -> dict[str, Any]:
        call = self.calls.get(esc.session_id)
        return {
            "session_id": esc.session_id,
            "caller": call.caller if call else None,
            "customer_name": call.customer_name if call else None,
            **esc.brief(),
            "reason_text": esc.reason_text,
            "started_at": esc.started_at,
            "updated_at": esc.updated_at,
        }


def live_call_json(call: LiveCall, now: float) -> dict[str, Any]:
    end = call.ended_at if call.ended_at is not None else now
    esc = call.escalation
    return {
        "session_id": call.session_id,
        "call_sid": call.call_sid,
        "caller": call.caller,
        "customer_name": call.customer_name,
        "started_at": call.started_at,
        "duration_s": round(max(0.0, end - call.started_at), 1),
        "state": call.state,
        "handler": call.handler,
        "human_status": esc.status.value if esc else HumanCallStatus.NONE.value,
        "escalation": esc.brief() if esc else None,
    }
