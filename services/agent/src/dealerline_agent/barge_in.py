"""What a barge-in does: the turn being generated is cancelled, and the history is made to
say only what the caller heard of the interrupted reply (before the session's next turn
at the latest), which is announced as an interrupted assistant transcript."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from dealerline_common.logs import get_logger
from dealerline_common.messages import BargeIn
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore

from .announce import Announcer
from .history import apply_heard
from .metrics import AgentMetrics
from .sessions import Session, Sessions

log = get_logger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


class BargeIns:
    def __init__(
        self,
        sessions: Sessions,
        store: StateStore,
        announcer: Announcer,
        metrics: AgentMetrics,
        spawn: Spawn,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.announcer = announcer
        self.metrics = metrics
        self.spawn = spawn

    def on_barge_in(self, barge: BargeIn) -> None:
        """Every replica: the one generating the turn cancels it; the heard text is
        applied under the session's lock."""
        session = self.sessions.get(barge.session_id)
        if session is None:
            return
        session.touch()
        session.pending_heard[barge.turn_id] = barge.heard_text
        if (
            session.running_turn_id == barge.turn_id
            and session.generating
            and session.cancel_running()
        ):
            self.metrics.turns_cancelled.labels("barge_in").inc()
            log.info(
                "turn cancelled by barge-in", session_id=barge.session_id, turn_id=barge.turn_id
            )
        self.spawn(self._apply_pending_locked(session), f"barge-in:{barge.turn_id}")

    async def _apply_pending_locked(self, session: Session) -> None:
        async with session.lock:
            await self.apply_pending(session)

    async def apply_pending(self, session: Session) -> None:
        """Make the history say only what the caller heard of each interrupted turn
        (the caller holds the session's lock)."""
        while session.pending_heard:
            turn_id, heard = next(iter(session.pending_heard.items()))
            await self._apply_heard(session, turn_id, heard)
            session.pending_heard.pop(turn_id, None)

    async def _apply_heard(self, session: Session, turn_id: str, heard: str) -> None:
        sid = session.session_id
        found = False

        def mutate(state: ConversationState) -> None:
            nonlocal found
            found = apply_heard(state.messages, turn_id, heard)

        stored = await self.store.update(sid, mutate)
        if not found:
            log.info("barge-in for an unknown turn", session_id=sid, turn_id=turn_id)
            return
        await self.announcer.heard(sid, turn_id, heard.strip())
        await self.announcer.state(session, stored)
        log.info("history trimmed to what was heard", session_id=sid, turn_id=turn_id)
