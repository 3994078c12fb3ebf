"""The one write path of an escalation: :meth:`Committer.commit` applies a decision to
the conversation state under the state store's optimistic lock, through the state machine,
and announces what changed. Facts (callbacks, webhooks, the watchdog) and the owner's
actions (ringing the next person, staff claims and passes) all write through it, so a
late, repeated or racing report changes nothing twice."""

from __future__ import annotations

from collections.abc import Callable

from dealerline_common.logs import get_logger
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore

from .announce import Announcer
from .changes import Change, Decision, Unchanged, apply_decision
from .machine import IllegalTransition
from .metrics import EscalationMetrics

log = get_logger(__name__)

Decide = Callable[[ConversationState], Decision | None]


class Committer:
    def __init__(
        self,
        store: StateStore,
        announcer: Announcer,
        metrics: EscalationMetrics,
        wall: Callable[[], float],
    ) -> None:
        self.store = store
        self.announcer = announcer
        self.m = metrics
        self.wall = wall

    async def commit(self, session_id: str, task_id: str, decide: Decide) -> Change | None:
        """Apply ``decide`` to the escalation under the state store's lock, through the
        state machine; announce the change. None when ``decide`` declined, the task is not
        the session's current one, or the machine refused (logged)."""
        box: list[Change | None] = [None]

        def mutate(state: ConversationState) -> None:
            box[0] = None  # the store may run this more than once (lost races)
            if state.escalation.task_id != task_id:
                raise Unchanged
            d = decide(state)
            if d is None:
                raise Unchanged
            box[0] = apply_decision(state, session_id, task_id, d, self.wall())

        try:
            await self.store.update(session_id, mutate)
        except Unchanged:
            return None
        except IllegalTransition as exc:
            self.m.refused.inc()
            log.warning(
                "illegal transition refused",
                session_id=session_id,
                task_id=task_id,
                current=exc.current.value,
                target=exc.target.value,
            )
            return None
        change = box[0]
        if change is not None and change.changed:
            await self.announcer.announce(change)
        return change
