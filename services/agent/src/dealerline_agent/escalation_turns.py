"""Proactive turns on a human-call status change: the agent speaks at once when a person
accepted the call and when nobody could be reached (the notification the escalation
service pushed first carries the details; the turn's input is only that notification).
One replica speaks on each status (the ``agent`` queue group); no polling."""

from __future__ import annotations

from nats.aio.msg import Msg
from pydantic import ValidationError

from dealerline_common.conversation import escalation_turn_id
from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationStatus, loads
from dealerline_common.state import HumanCallStatus

from .metrics import AgentMetrics
from .sessions import Sessions
from .tasks import Tasks
from .turns import TurnInput, TurnRunner

log = get_logger(__name__)

# Escalation statuses the agent speaks on (the others change only the context block).
_SPOKEN_ESCALATION = {HumanCallStatus.CONFIRMED, HumanCallStatus.FAILED}


def spoken(status: EscalationStatus) -> bool:
    """Whether ``status`` is one the agent announces to the caller."""
    if status.status not in _SPOKEN_ESCALATION or status.task_id is None:
        return False
    # A FAILED that is not final: one person of the hunt list failed, the next is rung.
    return status.status != HumanCallStatus.FAILED or status.final


class EscalationTurns:
    def __init__(
        self, runner: TurnRunner, sessions: Sessions, tasks: Tasks, metrics: AgentMetrics
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.tasks = tasks
        self.metrics = metrics

    async def on_status(self, msg: Msg) -> None:
        try:
            status = loads(EscalationStatus, msg.data)
        except ValidationError:
            log.warning("unreadable escalation status", subject=msg.subject)
            return
        if not spoken(status) or status.task_id is None:
            return
        sid = status.session_id
        if self.sessions.not_streaming(sid):
            log.info("escalation status for a call not streaming", session_id=sid)
            return
        self.metrics.escalations.labels(status.status.value).inc()
        turn = TurnInput(turn_id=escalation_turn_id(status.task_id, status.status.value), text="")
        self.tasks.spawn(self.runner.turn(sid, turn), name=f"turn:{turn.turn_id}")
