"""The turn that greets a started stream: ``[CALL_STARTED]`` on a new call, and on a call
back from a person ``[ESCALATION_RETURNED:<reason>]`` or ``[CALL_RESUMED]``. Exactly one
replica greets (the ``agent`` queue group hands it the ``StreamStarted``); before the
turn the call is recorded on the state and, on a new call, the caller recognised by
caller ID."""

from __future__ import annotations

from dealerline_common.conversation import (
    CALL_RESUMED,
    CALL_STARTED,
    escalation_returned,
    turn_id_for_stream,
)
from dealerline_common.logs import get_logger
from dealerline_common.messages import StreamStarted, TurnTimings
from dealerline_common.state_store import StateStore

from .dealership.repo import Dealership
from .identify import identify_caller
from .metrics import AgentMetrics
from .sessions import Sessions
from .tasks import Tasks
from .turns import TurnInput, TurnRunner

log = get_logger(__name__)


def greeting_marker(started: StreamStarted) -> str:
    if not started.resumed:
        return CALL_STARTED
    if started.reason:
        return escalation_returned(started.reason)
    return CALL_RESUMED


class Greeter:
    def __init__(
        self,
        runner: TurnRunner,
        sessions: Sessions,
        store: StateStore,
        dealership: Dealership,
        tasks: Tasks,
        metrics: AgentMetrics,
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.store = store
        self.dealership = dealership
        self.tasks = tasks
        self.metrics = metrics

    def on_stream_started(self, started: StreamStarted) -> None:
        """This replica got the start through the queue group: it greets."""
        sid = started.session_id
        if self.sessions.stream_started(started) is None:
            log.info("start of a stream that already stopped", session_id=sid)
            self.metrics.control_ignored.labels("stale_start").inc()
            return
        turn = TurnInput(
            turn_id=turn_id_for_stream(started.stream_sid),
            text=greeting_marker(started),
            timings=TurnTimings(stream_started=started.at),
        )
        self.tasks.spawn(self._greet(started, turn), name=f"turn:{turn.turn_id}")

    async def _greet(self, started: StreamStarted, turn: TurnInput) -> None:
        try:
            await identify_caller(self.store, self.dealership, started)
        except Exception:
            # The greeting must not wait on a broken lookup: greet as an unknown caller.
            log.exception("caller identification failed", session_id=started.session_id)
        await self.runner.turn(started.session_id, turn)
