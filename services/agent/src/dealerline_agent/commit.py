"""Writing what a turn added onto the stored conversation state."""

from __future__ import annotations

from dealerline_common.logs import get_logger
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateConflictError, StateStore

from .dealership.effects import apply_effect
from .history import append_new, complete_messages
from .metrics import AgentMetrics
from .turn_record import TurnRecord

log = get_logger(__name__)


async def commit_turn(
    store: StateStore, metrics: AgentMetrics, sid: str, record: TurnRecord
) -> ConversationState:
    """Write what the turn added onto the latest stored state (optimistic locking: a
    concurrent writer — the escalation service, another replica — loses nothing)."""
    messages = complete_messages(record.messages())
    consumed = set(record.consumed_notifications)

    def mutate(state: ConversationState) -> None:
        append_new(state.messages, messages)
        for effect in record.effects:
            apply_effect(state, effect)
        if consumed:
            state.pending_notifications = [
                n for n in state.pending_notifications if n.id not in consumed
            ]

    try:
        return await store.update(sid, mutate)
    except StateConflictError:
        metrics.state_conflicts.inc()
        log.error("turn commit lost the state lock", session_id=sid, turn_id=record.turn_id)
        raise
