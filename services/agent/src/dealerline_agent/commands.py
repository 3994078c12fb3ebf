"""What the agent asks of the rest of the fleet: an escalation to a person (the
escalation service's work queue), a text or email to a customer (the notifier's) and, after the caller heard the goodbye, the end of the
call (the gateway holding it, on ``call.<sid>.command``)."""

from __future__ import annotations

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import EscalationRequest, HangupRequest, NotificationJob

log = get_logger(__name__)


async def request_escalation(bus: Bus, request: EscalationRequest) -> None:
    await bus.publish_durable(
        subjects.ESCALATION_REQUEST, request, msg_id=f"escalation:{request.task_id}"
    )
    log.info(
        "escalation requested",
        session_id=request.session_id,
        task_id=request.task_id,
        staff=len(request.staff),
    )


async def publish_notification(bus: Bus, job: NotificationJob) -> None:
    """A text or email to a customer onto the notifier's work queue (``notify.sms`` /
    ``notify.email``); its key is the stream's dedupe id, so a replayed turn sends once."""
    subject = subjects.NOTIFY_SMS if job.channel == "sms" else subjects.NOTIFY_EMAIL
    await bus.publish_durable(subject, job, msg_id=job.key)
    log.info(
        "customer notice enqueued",
        session_id=job.session_id,
        channel=job.channel,
        to=mask_phone(job.to) if job.channel == "sms" else "(email)",
    )


async def request_hangup(bus: Bus, sid: str, turn_id: str) -> None:
    """Ask the gateway to end the call once ``turn_id`` has been heard to its end."""
    await bus.publish(
        subjects.command(sid),
        HangupRequest(session_id=sid, after_turn=turn_id, reason="end_call"),
    )
    log.info("hang-up after this turn", session_id=sid, turn_id=turn_id)
