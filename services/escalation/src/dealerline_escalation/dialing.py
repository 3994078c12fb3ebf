"""Dialing: placing the team member's call for an attempt (and recording its CallSid),
failing an attempt, and ending a team member's call. Only staff are rung: each number is
checked against the dealership database first (:mod:`.staff_check`)."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import HumanCallStatus, StaffContact
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore

from .changes import Decision
from .commit import Committer
from .machine import is_final
from .metrics import EscalationMetrics
from .staff_check import StaffDirectory, refusal
from .twilio_client import CallControl, TwilioError, TwilioRejected, hang_up
from .urls import Urls

log = get_logger(__name__)

S = HumanCallStatus


class Dialer:
    def __init__(
        self,
        calls: CallControl,
        committer: Committer,
        store: StateStore,
        urls: Urls,
        metrics: EscalationMetrics,
        staff: StaffDirectory,
        *,
        from_number: str,
        ring_timeout_s: int,
    ) -> None:
        self.calls = calls
        self.committer = committer
        self.store = store
        self.urls = urls
        self.m = metrics
        self.staff = staff
        self.from_number = from_number
        self.ring_timeout_s = ring_timeout_s

    async def place(
        self, session_id: str, task_id: str, attempt: int, person: StaffContact
    ) -> None:
        """Ring ``person`` for ``attempt`` (already started, CALLING) and record the call.

        A number Twilio refuses fails the attempt at once; an unknown outcome (maybe
        placed, maybe not) is left to the attempt's callbacks, which name the attempt (if
        none comes within ``create_grace_s`` the watchdog gives the attempt up). A person
        who is not an on-duty staff member with this number is not rung: the attempt
        fails at once (see :mod:`.staff_check`)."""
        if not await self.may_ring(session_id, attempt, person):
            await self.fail(session_id, task_id, attempt, "failed", None)
            return
        self.m.attempts.inc()
        log.info(
            "ringing team member",
            session_id=session_id,
            attempt=attempt,
            staff=person.name,
            to=mask_phone(person.phone),
        )
        try:
            call_sid = await self.calls.create_call(
                to=person.phone,
                from_=self.from_number,
                url=self.urls.attempt_url("human-answer", session_id, task_id, attempt),
                status_callback=self.urls.attempt_url("human-status", session_id, task_id, attempt),
                timeout_s=self.ring_timeout_s,
            )
        except TwilioRejected as exc:
            log.warning("outbound call refused by Twilio", session_id=session_id, error=str(exc))
            await self.fail(session_id, task_id, attempt, "failed", None)
            return
        except TwilioError as exc:
            log.warning("outbound call outcome unknown", session_id=session_id, error=str(exc))
            return
        await self._record(session_id, task_id, attempt, call_sid)

    async def may_ring(self, session_id: str, attempt: int, person: StaffContact) -> bool:
        """Whether ``person`` is an on-duty staff member and the number is theirs, as the
        database says now; a refusal is logged (number masked) and counted. Nobody is
        rung while the database cannot be read."""
        try:
            record = None if person.staff_id is None else await self.staff.lookup(person.staff_id)
            reason = refusal(person, record)
        except (SQLAlchemyError, OSError) as exc:
            log.error("staff directory unreadable", session_id=session_id, error=repr(exc))
            reason = "directory_unavailable"
        if reason is None:
            return True
        self.m.dial_refusals.labels(reason).inc()
        log.warning(
            "refused to ring a number that is not an on-duty staff member's",
            session_id=session_id,
            attempt=attempt,
            staff_id=person.staff_id,
            to=mask_phone(person.phone),
            reason=reason,
        )
        return False

    async def _record(self, session_id: str, task_id: str, attempt: int, call_sid: str) -> None:
        def record(state: ConversationState) -> Decision | None:
            e = state.escalation
            if e.attempts != attempt or e.human_call_sid is not None or is_final(e.status):
                return None
            return Decision(human_call_sid=call_sid)

        if await self.committer.commit(session_id, task_id, record) is not None:
            return
        # The attempt ended while its call was being placed (a claim let it go, the caller
        # hung up): nobody else knows this call, so it is ended here.
        e = (await self.store.get_state(session_id)).escalation
        if e.task_id != task_id or e.attempts != attempt or is_final(e.status):
            await self.hang_up(call_sid, session_id)

    async def fail(
        self, session_id: str, task_id: str, attempt: int, reason: str, call_sid: str | None
    ) -> None:
        """Attempt ``attempt`` failed for ``reason`` (unless it is over): its call, if
        any, is ended first."""
        if call_sid:
            await self.hang_up(call_sid, session_id)

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.attempts != attempt or is_final(esc.status):
                return None
            return Decision(S.FAILED, reason)

        await self.committer.commit(session_id, task_id, decide)

    async def hang_up(self, call_sid: str, session_id: str) -> None:
        """End a team member's call (cancelled if not answered yet); failures are logged."""
        try:
            await hang_up(self.calls, call_sid)
        except TwilioError as exc:
            log.warning(
                "could not end the team member's call", session_id=session_id, error=str(exc)
            )
