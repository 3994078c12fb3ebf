"""The caller's side of the handoff: moving them into conference ``support_<sid>`` once
the team member accepted, bringing them back to the AI when the team member leaves, and
ending the escalation when the caller hangs up.

Two-step actions that must not run twice at once (moving the caller into the conference,
bringing them back) first claim the attempt with a marker in ``EscalationInfo.detail``
(:data:`MOVING`, :data:`RETURNING`); a marker left behind by a replica that died is retried
once it is older than ``marker_timeout_s``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from dealerline_common.logs import get_logger
from dealerline_common.messages import HumanCallStatus
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore

from .announce import Announcer
from .changes import Decision
from .commit import Committer, Decide
from .dialing import Dialer
from .twilio_client import FINAL_CALL_STATUSES, CallControl, CallNotLive, TwilioError
from .urls import Urls

log = get_logger(__name__)

S = HumanCallStatus

MOVING = "moving_caller"  # CONFIRMED: the caller's call is being redirected to the conference
RETURNING = "returning_caller"  # IN_CONFERENCE: the caller is being sent back to the AI


def caller_gone(status: str | None) -> bool:
    """Whether a caller's call status (see :meth:`Handoff.caller_status`) means it is over."""
    return status in FINAL_CALL_STATUSES or status == "gone"


def marker_claim(
    attempt: int,
    status: HumanCallStatus,
    marker: str,
    since: Callable[[], float],
    timeout_s: float,
) -> Decide:
    """A decision that sets ``marker`` on ``attempt`` in ``status``, unless another
    worker holds a fresh one. ``since()`` is how long this process has seen the
    marker (a dead worker's marker is taken over after ``timeout_s``)."""

    def decide(state: ConversationState) -> Decision | None:
        esc = state.escalation
        if esc.attempts != attempt or esc.status is not status:
            return None
        if esc.detail == marker and since() < timeout_s:
            return None
        return Decision(detail=marker)

    return decide


def end_in(attempt: int, status: HumanCallStatus, to: HumanCallStatus, reason: str) -> Decide:
    """A decision that moves ``attempt`` from ``status`` to ``to`` for ``reason``."""

    def decide(state: ConversationState) -> Decision | None:
        esc = state.escalation
        if esc.attempts != attempt or esc.status is not status:
            return None
        return Decision(to, reason)

    return decide


class Handoff:
    def __init__(
        self,
        committer: Committer,
        store: StateStore,
        calls: CallControl,
        dialer: Dialer,
        urls: Urls,
        announcer: Announcer,
        *,
        marker_timeout_s: float,
    ) -> None:
        self.committer = committer
        self.store = store
        self.calls = calls
        self.dialer = dialer
        self.urls = urls
        self.announcer = announcer
        self.marker_timeout_s = marker_timeout_s

    async def caller_status(self, call_sid: str | None) -> str | None:
        """The caller's call status, "gone" if Twilio does not know it, None if unknown."""
        if not call_sid:
            return None
        try:
            return await self.calls.fetch_status(call_sid)
        except CallNotLive:
            return "gone"
        except TwilioError as exc:
            log.warning("could not fetch the caller's call", error=str(exc))
            return None

    async def move_caller(
        self, session_id: str, task_id: str, attempt: int, caller: str, since: float
    ) -> None:
        """CONFIRMED and the caller has heard "connecting you": redirect their call
        (``caller`` unless the state knows it) to the gateway's conference TwiML;
        IN_CONFERENCE. ``since``: how long the MOVING marker has been seen."""
        claim = await self.committer.commit(
            session_id,
            task_id,
            marker_claim(attempt, S.CONFIRMED, MOVING, lambda: since, self.marker_timeout_s),
        )
        if claim is None:
            return
        customer = claim.call_sid or caller
        try:
            await self.calls.redirect(customer, self.urls.escalate_url(session_id))
        except CallNotLive:
            log.info("caller gone before the transfer", session_id=session_id)
            await self.customer_gone(session_id, task_id)
            return
        except TwilioError as exc:
            log.error(
                "could not move the caller to the conference", session_id=session_id, error=str(exc)
            )
            change = await self.committer.commit(
                session_id, task_id, end_in(attempt, S.CONFIRMED, S.FAILED, "error")
            )
            if change is not None and change.human_call_sid:
                await self.dialer.hang_up(change.human_call_sid, session_id)
            return
        await self._joined(session_id, task_id, attempt, customer)

    async def _joined(self, session_id: str, task_id: str, attempt: int, customer: str) -> None:
        """The caller's call was redirected into the conference: IN_CONFERENCE, unless the
        attempt ended meanwhile."""

        def joined(state: ConversationState) -> Decision | None:
            e = state.escalation
            if e.attempts != attempt or e.status is not S.CONFIRMED:
                return None
            return Decision(S.IN_CONFERENCE, detail=None)

        if await self.committer.commit(session_id, task_id, joined) is not None:
            return
        # The person hung up while the caller was being moved: the caller is on the way
        # into an empty conference; bring them straight back.
        state = await self.store.get_state(session_id)
        if state.escalation.task_id == task_id and state.escalation.status is S.FAILED:
            with contextlib.suppress(TwilioError):
                await self.calls.redirect(customer, self.urls.return_url(session_id, "human_ended"))

    async def human_left(
        self,
        session_id: str,
        task_id: str,
        attempt: int,
        *,
        since: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """The person's call ended while in the conference: bring the caller back to the
        AI (``[ESCALATION_RETURNED:human_ended]``), or, if they hung up too, end it all."""
        claim = await self.committer.commit(
            session_id,
            task_id,
            marker_claim(attempt, S.IN_CONFERENCE, RETURNING, since, self.marker_timeout_s),
        )
        if claim is None:
            return
        status = await self.caller_status(claim.call_sid)
        reason = "customer_hung_up"
        if not caller_gone(status) and claim.call_sid:
            try:
                await self.calls.redirect(
                    claim.call_sid, self.urls.return_url(session_id, "human_ended")
                )
                reason = "human_ended"
            except CallNotLive:
                pass
            except TwilioError as exc:
                # The marker stays; the owner retries once it is stale.
                log.error(
                    "could not bring the caller back to the AI",
                    session_id=session_id,
                    error=str(exc),
                )
                return
        change = await self.committer.commit(
            session_id, task_id, end_in(attempt, S.IN_CONFERENCE, S.COMPLETED, reason)
        )
        if change is not None and reason == "customer_hung_up":
            await self.announcer.call_ended(session_id)

    async def customer_left(self, session_id: str, task_id: str, attempt: int) -> None:
        """The caller left the conference: if their call is over, end the person's leg and
        the escalation; if it is still live, the conference ended under them, so they are
        brought back to the AI."""
        state = await self.store.get_state(session_id)
        status = await self.caller_status(state.call_sid)
        if status is None:
            return  # the watchdog looks again
        if not caller_gone(status):
            await self.human_left(session_id, task_id, attempt)
            return
        change = await self.committer.commit(
            session_id,
            task_id,
            end_in(attempt, S.IN_CONFERENCE, S.COMPLETED, "customer_hung_up"),
        )
        if change is None:
            return
        if change.human_call_sid:
            await self.dialer.hang_up(change.human_call_sid, session_id)
        await self.announcer.call_ended(session_id)

    async def customer_gone(self, session_id: str, task_id: str) -> None:
        """The caller hung up before being moved to the conference: cancel or end the
        person's call and finish the escalation (``customer_hung_up``)."""

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.status in (S.IN_CONFERENCE, S.COMPLETED):
                return None
            return Decision(S.FAILED, "customer_hung_up")

        change = await self.committer.commit(session_id, task_id, decide)
        if change is not None and change.human_call_sid:
            await self.dialer.hang_up(change.human_call_sid, session_id)
