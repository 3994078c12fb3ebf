"""Facts about the team member's call, from whichever replica Twilio reaches: status
callbacks (ordered per call by :class:`CallbackLedger`), the key-press webhooks (answered,
a key pressed, accepted or declined), conference events, and the watchdog's REST fetches.
Each is applied through the one write path (:mod:`.commit`)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from dealerline_common import subjects
from dealerline_common.logs import get_logger
from dealerline_common.messages import HumanCallStatus
from dealerline_common.state import ConversationState, EscalationInfo
from dealerline_common.state_store import StateStore

from .changes import Change, Decision
from .commit import Committer, Decide
from .handoff import Handoff
from .machine import KEY_PRESSED, interpret
from .metrics import EscalationMetrics

log = get_logger(__name__)

S = HumanCallStatus


class CallbackLedger:
    """The highest ``SequenceNumber`` seen per human CallSid: a callback at or below it is
    older than (or the same as) one already applied, and is ignored. Bounded (LRU)."""

    def __init__(self, max_calls: int = 10_000) -> None:
        self.max_calls = max_calls
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()

    def accept(self, call_sid: str, seq: int) -> bool:
        last = self._seen.get(call_sid)
        if last is not None and seq <= last:
            return False
        self._seen[call_sid] = seq
        self._seen.move_to_end(call_sid)
        while len(self._seen) > self.max_calls:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True)
class PromptContext:
    """Who is calling and why, for the prompt read to the team member."""

    customer_name: str | None
    reason: str | None


def attempt_matches(esc: EscalationInfo, attempt: int, call_sid: str | None) -> bool:
    """Whether a webhook of ``attempt`` (for ``call_sid``) is about the current attempt."""
    return esc.attempts == attempt and not (
        call_sid and esc.human_call_sid and call_sid != esc.human_call_sid
    )


def _waiting(
    attempt: int, call_sid: str | None, decision: Callable[[ConversationState], Decision]
) -> Decide:
    """A decision for the current attempt while it waits for the person to accept."""

    def decide(state: ConversationState) -> Decision | None:
        esc = state.escalation
        if not attempt_matches(esc, attempt, call_sid):
            return None
        if esc.status is not S.WAITING_CONFIRMATION:
            return None
        return decision(state)

    return decide


class Facts:
    def __init__(
        self,
        committer: Committer,
        store: StateStore,
        handoff: Handoff,
        metrics: EscalationMetrics,
        ledger: CallbackLedger | None = None,
    ) -> None:
        self.committer = committer
        self.store = store
        self.handoff = handoff
        self.m = metrics
        self.ledger = ledger or CallbackLedger()

    async def observe(
        self,
        session_id: str,
        task_id: str,
        attempt: int,
        call_sid: str | None,
        call_status: str,
        *,
        seq: int | None = None,
        source: str = "callback",
    ) -> Change | None:
        """A report of the person's call status (callback, webhook or watchdog)."""
        if seq is not None and call_sid and not self.ledger.accept(call_sid, seq):
            self.m.stale.inc()
            log.debug("status callback ignored: older or repeated", session_id=session_id, seq=seq)
            return None
        left = [False]

        def decide(state: ConversationState) -> Decision | None:
            left[0] = False
            esc = state.escalation
            if esc.attempts != attempt or esc.status is S.NONE:
                return None
            if call_sid and esc.human_call_sid and call_sid != esc.human_call_sid:
                return None
            fill = call_sid if call_sid and esc.human_call_sid is None else None
            outcome = interpret(call_status, esc.status, esc.detail)
            if outcome is None:
                return Decision(human_call_sid=fill) if fill else None
            if outcome.human_left:
                left[0] = True
                return None
            return Decision(outcome.status, outcome.reason, human_call_sid=fill)

        change = await self.committer.commit(session_id, task_id, decide)
        if change is not None and change.changed and source == "watchdog":
            self.m.watchdog_fixes.inc()
            log.info(
                "watchdog applied a missed status",
                session_id=session_id,
                status=change.status.value,
                call_status=call_status,
            )
        if left[0]:
            await self.handoff.human_left(session_id, task_id, attempt)
        return change

    async def human_answered(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> bool:
        """The answer webhook: the call was picked up. True if this attempt is live and
        waiting for the person to press a key (else the person is told it is over)."""
        await self.observe(
            session_id, task_id, attempt, call_sid, "in-progress", source="answer-webhook"
        )
        state = await self.store.get_state(session_id)
        esc = state.escalation
        return (
            esc.task_id == task_id
            and attempt_matches(esc, attempt, call_sid)
            and esc.status is S.WAITING_CONFIRMATION
        )

    async def key_pressed(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> PromptContext | None:
        """A key on the first prompt: a person, not call screening. The context for the
        second prompt, or None if this attempt is no longer live."""
        ctx: list[PromptContext | None] = [None]

        def pressed(state: ConversationState) -> Decision:
            name = (state.customer.name if state.customer else None) or None
            ctx[0] = PromptContext(name, state.escalation.reason)
            return Decision(detail=KEY_PRESSED, human_call_sid=call_sid)

        change = await self.committer.commit(
            session_id, task_id, _waiting(attempt, call_sid, pressed)
        )
        return ctx[0] if change is not None else None

    async def accept(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> bool:
        """The person pressed 1: CONFIRMED (the agent tells the caller; the owner then
        moves them). False if this attempt is no longer live."""

        def confirmed(_state: ConversationState) -> Decision:
            return Decision(
                S.CONFIRMED,
                human_call_sid=call_sid,
                conference=subjects.conference_name(session_id),
            )

        change = await self.committer.commit(
            session_id, task_id, _waiting(attempt, call_sid, confirmed)
        )
        return change is not None and change.status is S.CONFIRMED

    async def decline(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> None:
        """Any key but 1 on the second prompt: this person declined; the next is rung."""

        def declined(_state: ConversationState) -> Decision:
            return Decision(S.FAILED, "declined", human_call_sid=call_sid)

        await self.committer.commit(session_id, task_id, _waiting(attempt, call_sid, declined))

    async def prompt_context(self, session_id: str) -> PromptContext:
        state = await self.store.get_state(session_id)
        name = state.customer.name if state.customer else None
        return PromptContext(name or None, state.escalation.reason)

    async def conference_event(self, session_id: str, event: str, call_sid: str | None) -> None:
        """A conference status callback for ``support_<sid>``."""
        state = await self.store.get_state(session_id)
        esc = state.escalation
        log.info(
            "conference event",
            session_id=session_id,
            conference_event=event,
            human=bool(call_sid and call_sid == esc.human_call_sid),
        )
        if esc.task_id is None or esc.status is not S.IN_CONFERENCE:
            return
        if event == "participant-leave" and call_sid and call_sid == esc.human_call_sid:
            await self.handoff.human_left(session_id, esc.task_id, esc.attempts)
        elif event == "conference-end" or (
            event == "participant-leave" and call_sid and call_sid == state.call_sid
        ):
            await self.handoff.customer_left(session_id, esc.task_id, esc.attempts)
