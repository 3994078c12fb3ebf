"""The watchdog of a running escalation: every ``watchdog_interval_s`` it fetches the
team member's call and the caller's call over REST and applies what a missed callback
would have said, and it enforces the deadlines for calls Twilio never reports on
(``create_grace_s``, ring timeout + ``stalled_grace_s``, ``confirm_deadline_s``).
:class:`Timers` is the run's clock for those deadlines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dealerline_common.logs import get_logger
from dealerline_common.messages import HumanCallStatus
from dealerline_common.state import ConversationState, EscalationInfo

from .dialing import Dialer
from .facts import Facts
from .handoff import RETURNING, Handoff, caller_gone
from .machine import KEY_PRESSED
from .settings import EscalationSettings
from .twilio_client import CallControl, CallNotLive

log = get_logger(__name__)

S = HumanCallStatus


class Timers:
    """How long a run has seen things (an attempt ringing, a marker, ...), and the
    earliest deadline still to come (``hint``: when the run's loop should wake up)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._seen: dict[tuple[Any, ...], float] = {}
        self.hint = float("inf")

    def since(self, *key: Any) -> float:
        """Seconds since this run first saw ``key`` (0 the first time)."""
        now = self.clock()
        return now - self._seen.setdefault(key, now)

    def due(self, after_s: float, *key: Any) -> bool:
        """Whether ``after_s`` have passed since ``key`` was first seen; if not, the loop
        wakes up when they will have."""
        elapsed = self.since(*key)
        if elapsed >= after_s:
            return True
        self.hint = min(self.hint, after_s - elapsed)
        return False


class Watchdog:
    """One running escalation's watchdog (``session_id``/``task_id``)."""

    def __init__(
        self,
        session_id: str,
        task_id: str,
        *,
        settings: EscalationSettings,
        timers: Timers,
        calls: CallControl,
        facts: Facts,
        handoff: Handoff,
        dialer: Dialer,
        resumed: bool,
    ) -> None:
        self.sid = session_id
        self.task = task_id
        self.settings = settings
        self.timers = timers
        self.calls = calls
        self.facts = facts
        self.handoff = handoff
        self.dialer = dialer
        # The caller's stream stopped (not for the handoff): look at their call at the
        # next step, not only at the next round.
        self.check_caller = False
        # A fresh escalation starts ringing at once; the first round (which also checks
        # the caller is still there) comes one interval later.
        self._last_round: float | None = None if resumed else timers.clock()

    def round_due(self) -> bool:
        """Whether a round is due now (it is then counted as done)."""
        now = self.timers.clock()
        last = self._last_round
        due = last is None or now - last >= self.settings.watchdog_interval_s
        if due:
            self._last_round = now
        return due

    def sleep_s(self) -> float:
        """Until the next round or the next deadline the run noted."""
        interval = self.settings.watchdog_interval_s
        last = self._last_round
        to_round = interval if last is None else interval - (self.timers.clock() - last)
        return max(0.01, min(to_round, self.timers.hint))

    async def look_at_caller(self, state: ConversationState, caller: str, round_due: bool) -> bool:
        """Whether the caller turned out gone (``caller``: their call unless the state
        knows it); the escalation is then ended accordingly."""
        esc = state.escalation
        call_sid = state.call_sid or caller
        # Hung up before being handed to the conference?
        if esc.status is not S.IN_CONFERENCE and (self.check_caller or round_due):
            status = await self.handoff.caller_status(call_sid)
            if caller_gone(status):
                log.info("caller hung up during the escalation", session_id=self.sid)
                await self.handoff.customer_gone(self.sid, self.task)
                return True
            if status is not None:
                self.check_caller = False
        # In the conference the room's callbacks say when the caller leaves; a lost one, or
        # a caller who hung up while being moved into the room, is caught here.
        if esc.status is S.IN_CONFERENCE and round_due and esc.detail != RETURNING:
            status = await self.handoff.caller_status(call_sid)
            if caller_gone(status):
                log.info("caller gone from the conference", session_id=self.sid)
                await self.handoff.customer_left(self.sid, self.task, esc.attempts)
                return True
        return False

    async def enforce_deadlines(self, esc: EscalationInfo) -> bool:
        """Fail the attempt when Twilio left it unreported too long; whether the step is
        done (it failed the attempt, or the attempt has no call to watch yet)."""
        s, attempt = self.settings, esc.attempts
        if esc.status in (S.CALLING, S.RINGING):
            if esc.human_call_sid is None:
                if self.timers.due(s.create_grace_s, "create", attempt):
                    log.warning("call creation never reported back", session_id=self.sid)
                    await self.dialer.fail(self.sid, self.task, attempt, "failed", None)
                return True
            if self.timers.due(s.ring_timeout_s + s.stalled_grace_s, "ring", attempt):
                log.warning("call still unanswered past the ring timeout", session_id=self.sid)
                await self.dialer.fail(
                    self.sid, self.task, attempt, "no_answer", esc.human_call_sid
                )
                return True
        elif esc.status is S.WAITING_CONFIRMATION and self.timers.due(
            s.confirm_deadline_s, "confirm", attempt
        ):
            reason = "declined" if esc.detail == KEY_PRESSED else "no_key"
            await self.dialer.fail(self.sid, self.task, attempt, reason, esc.human_call_sid)
            return True
        return False

    async def watch(self, attempt: int, call_sid: str) -> None:
        """What Twilio says of the person's call now, applied as a missed callback would be."""
        try:
            status = await self.calls.fetch_status(call_sid)
        except CallNotLive:
            status = "failed"
        await self.facts.observe(self.sid, self.task, attempt, call_sid, status, source="watchdog")
