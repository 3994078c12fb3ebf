"""Announcing an escalation's changes: the metrics and the log line of each, the agent's
notifications, the task record, ``EscalationStatus`` on ``call.<sid>.escalation`` (the
gateway and the dashboard react at once), the same status as a durable job on
``call.<sid>.agent_job`` when the agent speaks on it (the turn survives an agent replica
dying), ``HumanStatusEvent`` on ``call.<sid>.events`` (the dashboard), and the caller's
hang-up once the gateway no longer sees their call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    CallEndedEvent,
    EscalationStatus,
    HumanCallStatus,
    HumanStatusEvent,
    agent_job_id,
)
from dealerline_common.state import BackgroundTask, Notification, TaskStatus
from dealerline_common.state_store import StateStore

from .changes import Change
from .metrics import EscalationMetrics

log = get_logger(__name__)

S = HumanCallStatus

_FAILURES = {
    "busy": "{who}'s line is busy",
    "no_answer": "{who} did not answer",
    "failed": "the call to {who} could not be placed",
    "canceled": "the call to {who} was cancelled",
    "no_key": "{who}'s phone answered but nobody pressed a key (screening or voicemail)",
    "declined": "{who} declined the call",
    "exhausted": "nobody on the team could take the call",
    "customer_hung_up": "the caller hung up",
    "human_ended": "{who} hung up before the caller was connected",
    "error": "the caller could not be moved to the team member",
}


def describe(change: Change) -> str:
    """A line for the dashboard and the task record (never a phone number)."""
    who = change.staff_name or "the team member"
    status, reason = change.status, change.reason
    if status is S.CALLING:
        return f"calling {who} (attempt {change.attempt})"
    if status is S.RINGING:
        return f"{who}'s phone is ringing"
    if status is S.WAITING_CONFIRMATION:
        return f"{who} answered; waiting for them to accept"
    if status is S.CONFIRMED:
        return f"{who} accepted the call"
    if status is S.IN_CONFERENCE:
        return f"connecting the caller to {who}"
    if status is S.COMPLETED:
        return "the caller hung up" if reason == "customer_hung_up" else f"{who} left the call"
    text = _FAILURES.get(reason or "")
    return text.format(who=who) if text is not None else f"failed ({reason})"


def notifications(change: Change) -> list[Notification]:
    """What the agent is told of this change (before the status, so its turn finds it)."""
    task = change.task_id
    out: list[Notification] = []
    if change.status is S.CONFIRMED:
        out.append(
            Notification(
                id=f"{task}:confirmed",
                kind="human_available",
                data={"name": change.staff_name or ""},
                task_id=task,
            )
        )
    if change.final and change.status is S.FAILED and change.reason != "customer_hung_up":
        out.append(
            Notification(
                id=f"{task}:failed",
                kind="escalation_failed",
                data={"reason": change.reason},
                task_id=task,
            )
        )
    return out


def task_record(change: Change, text: str, now: float) -> BackgroundTask:
    """The escalation's background-task record after this change."""
    if change.final:
        task_status = TaskStatus.DONE if change.status is S.COMPLETED else TaskStatus.FAILED
    else:
        task_status = TaskStatus.RUNNING
    return BackgroundTask(
        task_id=change.task_id,
        kind="escalation",
        status=task_status,
        detail=text,
        updated_at=now,
        result={
            "status": change.status.value,
            "reason": change.reason,
            "attempt": change.attempt,
            "staff_name": change.staff_name,
            "final": change.final,
        },
    )


class Announcer:
    def __init__(
        self,
        store: StateStore,
        bus: Bus,
        metrics: EscalationMetrics,
        wall: Callable[[], float],
    ) -> None:
        self.store = store
        self.bus = bus
        self.m = metrics
        self.wall = wall

    async def announce(self, change: Change) -> None:
        """Tell everyone: notification (before the status, so the agent's turn finds it),
        task record, ``EscalationStatus`` (agent) and ``HumanStatusEvent`` (dashboard)."""
        text = describe(change)
        self._count(change)
        log.info(
            "human call status",
            session_id=change.session_id,
            task_id=change.task_id,
            attempt=change.attempt,
            status=change.status.value,
            previous=change.previous.value,
            reason=change.reason,
            final=change.final,
            staff=change.staff_name,
        )
        await self._record(change, text)
        await self._publish(change, text)

    def _count(self, change: Change) -> None:
        self.m.transitions.labels(change.status.value).inc()
        if change.status is S.FAILED and not change.final and change.reason:
            self.m.attempt_failures.labels(change.reason).inc()
        if change.final:
            self.m.outcomes.labels(change.status.value, change.reason or "").inc()

    async def _record(self, change: Change, text: str) -> None:
        """The agent's notifications and the task record, in the state store."""
        sid = change.session_id
        try:
            for notification in notifications(change):
                await self.store.push_notification(sid, notification)
            await self.store.set_task(sid, task_record(change, text, self.wall()))
        except Exception:
            log.exception("escalation notification/task not stored", session_id=sid)

    async def _publish(self, change: Change, text: str) -> None:
        sid = change.session_id
        fields: dict[str, Any] = {
            "session_id": sid,
            "status": change.status,
            "detail": text,
            "staff_name": change.staff_name,
            "task_id": change.task_id,
            "attempt": change.attempt,
            "final": change.final,
            "reason": change.reason,
        }
        status = EscalationStatus(**fields)
        try:
            await self.bus.publish(subjects.escalation(sid), status)
        except Exception:
            log.exception("escalation status not published", session_id=sid)
        if status.spoken:
            await self._ask_agent(status)
        try:
            await self.bus.publish_durable(subjects.events(sid), HumanStatusEvent(**fields))
        except Exception:
            log.exception("human_status event not published", session_id=sid)

    async def _ask_agent(self, status: EscalationStatus) -> None:
        """The agent's turn on this status, as durable work (a job on
        ``call.<sid>.agent_job``): it is taken even if the agent replica that would have
        spoken dies, or no agent is up right now. A status sent again is a duplicate."""
        sid = status.session_id
        try:
            await self.bus.publish_durable(
                subjects.agent_job(sid), status, msg_id=agent_job_id(status)
            )
        except Exception:
            log.exception("escalation status not given to the agent", session_id=sid)

    async def call_ended(self, session_id: str) -> None:
        """The caller hung up while handed off to the conference, where the gateway no
        longer sees the call: the dashboard hears it from us."""
        with contextlib.suppress(Exception):
            await self.bus.publish_durable(
                subjects.events(session_id),
                CallEndedEvent(session_id=session_id, reason="customer_hung_up"),
            )
