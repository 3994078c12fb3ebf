"""Announcing a call's progress on ``call.<sid>.events`` (stream ``DL_EVENTS``) for the
dashboard and the after-call service: what the caller and the agent said (and what the
caller heard of an interrupted reply), the appointments and callback requests a turn's
tools made, and the state after each turn.

Every durable event's ``Nats-Msg-Id`` comes from the turn (and the change), so a
redelivered or replayed turn publishes nothing twice. The events are built by plain
functions; :class:`Announcer` only publishes them.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    AppointmentEvent,
    CallbackRequestedEvent,
    StateUpdateEvent,
    TranscriptEvent,
)
from dealerline_common.state import ConversationState

from .dealership.effects import ToolEffect
from .sessions import Session

log = get_logger(__name__)

EffectEvent = AppointmentEvent | CallbackRequestedEvent


def effect_events(
    sid: str,
    turn_id: str,
    effects: list[ToolEffect],
    state: ConversationState,
    zone: ZoneInfo,
) -> dict[str, EffectEvent]:
    """The events that announce what ``effects`` changed, by ``Nats-Msg-Id`` (one per
    appointment change and per callback request, however often a tool repeated it)."""
    customer_name = state.customer.name if state.customer else None
    events: dict[str, EffectEvent] = {}
    for effect in effects:
        change = effect.appointment_change()
        if change is not None:
            msg_id = f"{turn_id}:event:appointment:{change.appointment_id}:{change.action}"
            appt = change.appointment
            events.setdefault(
                msg_id,
                AppointmentEvent(
                    session_id=sid,
                    action=change.action,
                    appointment_id=change.appointment_id,
                    service=appt.service if appt else None,
                    start=appt.start.astimezone(zone).isoformat() if appt else None,
                    vehicle=appt.vehicle if appt else None,
                    customer_name=customer_name,
                    turn_id=turn_id,
                ),
            )
        callback = effect.callback_requested
        if callback is not None:
            events.setdefault(
                f"{turn_id}:event:callback:{callback.callback_id}",
                CallbackRequestedEvent(
                    session_id=sid,
                    callback_id=callback.callback_id,
                    preferred_window=callback.preferred_window,
                    reason=callback.reason,
                    customer_name=callback.customer_name or customer_name,
                    turn_id=turn_id,
                ),
            )
    return events


def state_snapshot(session: Session, state: ConversationState) -> dict[str, Any]:
    """What the dashboard shows of a call after a turn."""
    appointment = state.confirmed_appointment
    return {
        "turns": session.turns,
        "last_turn_id": session.last_turn_id,
        "last_result": session.last_result,
        "interface": state.interface,
        "version": state.version,
        "customer": state.customer.model_dump(mode="json") if state.customer else None,
        "booking_slots": state.booking_slots.filled(),
        "confirmed_appointment": appointment.model_dump(mode="json") if appointment else None,
        "escalation_in_progress": state.escalation_in_progress,
        "human_call_status": state.escalation.status.value,
        "pending_tasks": [t.model_dump(mode="json") for t in state.pending_tasks],
    }


class Announcer:
    def __init__(self, bus: Bus, timezone: str) -> None:
        self.bus = bus
        # The dealership's timezone for the times events carry: the fallback until a turn
        # reads the profile, then the profile's (the turn runner sets it).
        self.zone = ZoneInfo(timezone)

    async def caller_said(self, sid: str, turn_id: str, text: str) -> None:
        await self.bus.publish_durable(
            subjects.events(sid),
            TranscriptEvent(session_id=sid, role="user", text=text, turn_id=turn_id),
            msg_id=f"{turn_id}:event:user",
        )

    async def agent_said(self, sid: str, turn_id: str, reply: str) -> None:
        await self.bus.publish_durable(
            subjects.events(sid),
            TranscriptEvent(session_id=sid, role="assistant", text=reply, turn_id=turn_id),
            msg_id=f"{turn_id}:event:assistant",
        )

    async def heard(self, sid: str, turn_id: str, heard: str) -> None:
        """The caller barged in on ``turn_id`` having heard only ``heard``."""
        await self.bus.publish_durable(
            subjects.events(sid),
            TranscriptEvent(
                session_id=sid, role="assistant", text=heard, turn_id=turn_id, interrupted=True
            ),
            msg_id=f"{turn_id}:event:heard",
        )

    async def effects(
        self, sid: str, turn_id: str, effects: list[ToolEffect], state: ConversationState
    ) -> None:
        """Announce what the turn's tools changed, after the turn's state is stored."""
        for msg_id, event in effect_events(sid, turn_id, effects, state, self.zone).items():
            await self.bus.publish_durable(subjects.events(sid), event, msg_id=msg_id)
            if isinstance(event, AppointmentEvent):
                log.info(
                    "appointment event",
                    session_id=sid,
                    turn_id=turn_id,
                    action=event.action,
                    appointment_id=event.appointment_id,
                )
            else:
                log.info(
                    "callback event",
                    session_id=sid,
                    turn_id=turn_id,
                    callback_id=event.callback_id,
                )

    async def state(self, session: Session, state: ConversationState) -> None:
        await self.bus.publish_durable(
            subjects.events(session.session_id),
            StateUpdateEvent(session_id=session.session_id, state=state_snapshot(session, state)),
        )
