"""Proactive turns on a human-call status change: the agent speaks at once when a person
accepted the call and when nobody could be reached (the notification the escalation
service pushed first carries the details; the turn's input is only that notification).

Each status the agent speaks (:attr:`EscalationStatus.spoken`) reaches it as a durable job
(``call.<sid>.agent_job``, the ``DL_AGENT_JOBS`` work queue): one replica takes the turn
and acks the job once its sentences are published; if that replica dies, another takes
it, and a status sent while no agent is up waits for one. No polling."""

from __future__ import annotations

from dealerline_common.conversation import escalation_turn_id
from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationStatus

from .metrics import AgentMetrics
from .sessions import Sessions
from .tasks import Tasks
from .turns import TurnInput, TurnRunner
from .utterances import await_turn

log = get_logger(__name__)


class EscalationTurns:
    def __init__(
        self, runner: TurnRunner, sessions: Sessions, tasks: Tasks, metrics: AgentMetrics
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.tasks = tasks
        self.metrics = metrics

    async def take(self, status: EscalationStatus) -> None:
        """The status's job: speak on it, returning once the turn's sentences are out.
        The turn id names the task and the status, so a second delivery replays (or
        resumes) the same reply rather than writing another."""
        if not status.spoken or status.task_id is None:
            return
        sid = status.session_id
        if self.sessions.not_streaming(sid):
            log.info("escalation status for a call not streaming", session_id=sid)
            return
        self.metrics.escalations.labels(status.status.value).inc()
        turn = TurnInput(turn_id=escalation_turn_id(status.task_id, status.status.value), text="")
        task = self.tasks.spawn(
            self.runner.turn(sid, turn), name=f"turn:{turn.turn_id}", awaited=True
        )
        await await_turn(task)
