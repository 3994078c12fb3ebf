"""The orchestrator of the human leg: hunt list, attempts, waits, redirects, watchdog.

Two kinds of code change an escalation, and both go through :meth:`Escalator.commit`:

- *facts* about the person's call - Twilio status callbacks, the DTMF webhooks, conference
  events, the watchdog's REST fetches - may reach any replica; they are applied to the
  conversation state with the state store's optimistic lock, through the one state
  machine (:mod:`.machine`), so a late, repeated or racing report changes nothing twice;
- the *owner* - the replica whose JetStream consumer holds the ``EscalationRequest`` -
  runs :class:`EscalationRun`: it rings the hunt list, waits for the "connecting you" turn
  to have played, moves the caller into the conference, and runs the watchdog. It acts on
  the state it reads (level-triggered), so an owner that takes over after a crash simply
  carries on from wherever the state says the escalation is. The request is acknowledged
  only when the escalation is over.

Every effective change is written to the state, then announced: notifications for the
agent first, the task record, ``EscalationStatus`` on ``call.<sid>.escalation`` (the agent
reacts at once) and ``HumanStatusEvent`` on ``call.<sid>.events`` (the dashboard).

Two-step actions that must not run twice at once (moving the caller into the conference,
bringing them back) first claim the attempt with a marker in ``EscalationInfo.detail``
(:data:`MOVING`, :data:`RETURNING`); a marker left behind by a replica that died is retried
once it is older than ``marker_timeout_s``. ``EscalationInfo.detail`` otherwise holds the
machine-readable reason of a failed or completed attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import phonenumbers
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Bus, Reject
from dealerline_common.conversation import escalation_turn_id
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import (
    BargeIn,
    CallEndedEvent,
    EscalationRequest,
    EscalationStatus,
    HumanCallStatus,
    HumanStatusEvent,
    StaffAction,
    StaffActionReply,
    StaffContact,
    StaffDutyChanged,
    StreamStarted,
    StreamStopped,
    TurnPlayed,
    loads,
    parse_control,
)
from dealerline_common.metrics import Metrics
from dealerline_common.state import (
    BackgroundTask,
    ConversationState,
    EscalationInfo,
    Notification,
    TaskStatus,
)
from dealerline_common.state_store import StateStore, StateStoreError

from .machine import (
    FINAL_REASONS,
    KEY_PRESSED,
    IllegalTransition,
    can_start_attempt,
    escalation_final,
    interpret,
    is_final,
    transition,
)
from .settings import EscalationSettings
from .twilio_client import (
    FINAL_CALL_STATUSES,
    CallControl,
    CallNotLive,
    TwilioError,
    TwilioRejected,
    hang_up,
)

log = get_logger(__name__)

S = HumanCallStatus
Clock = Callable[[], float]

MOVING = "moving_caller"  # CONFIRMED: the caller's call is being redirected to the conference
RETURNING = "returning_caller"  # IN_CONFERENCE: the caller is being sent back to the AI
# Escalations of a session that stayed non-final this long are abandoned (their owner's
# request was dropped): a new request may take the session over.
ABANDONED_AFTER_S = 3600.0

_KEEP: Any = object()


class _Unchanged(Exception):
    """Raised inside a state update that has nothing to write: the store then writes
    nothing (a write would bump the version and make the agent's turn retry)."""


# --------------------------------------------------------------------------- small parts


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


@dataclass
class Decision:
    """What a fact or an action does to the escalation (decided inside the locked update).

    ``status`` None keeps the status (a silent update of ``detail``/``human_call_sid``);
    ``new_attempt`` starts ringing the next person (status CALLING).
    """

    status: HumanCallStatus | None = None
    reason: str | None = None
    detail: Any = _KEEP
    human_call_sid: str | None = None
    staff_name: str | None = None
    new_attempt: int | None = None
    conference: str | None = None
    # The run's hunt list to keep in the state (see ``EscalationInfo.hunt``); ``ringing``
    # goes with ``new_attempt``.
    hunt: list[StaffContact] | None = None
    ringing: StaffContact | None = None


@dataclass(frozen=True)
class Change:
    """One write to ``state.escalation``; ``changed`` when the status (or finality) moved."""

    session_id: str
    task_id: str
    attempt: int
    previous: HumanCallStatus
    status: HumanCallStatus
    reason: str | None
    final: bool
    changed: bool
    staff_name: str | None
    human_call_sid: str | None
    call_sid: str | None  # the customer's call


@dataclass(frozen=True)
class PromptContext:
    """Who is calling and why, for the prompt read to the team member."""

    customer_name: str | None
    reason: str | None


def _describe(change: Change) -> str:
    """A line for the dashboard and the task record (never a phone number)."""
    who = change.staff_name or "the team member"
    status, reason = change.status, change.reason
    if status is S.CALLING:
        return f"calling {who} (attempt {change.attempt})"
    if status is S.RINGING:
        return f"{who}'s phone is ringing"
    if status is S.WAITING_CONFIRMATION:
        return f"{who} answered; waiting for them to accept"
    if status is S.CONFIRMED:
        return f"{who} accepted the call"
    if status is S.IN_CONFERENCE:
        return f"connecting the caller to {who}"
    if status is S.COMPLETED:
        return "the caller hung up" if reason == "customer_hung_up" else f"{who} left the call"
    texts = {
        "busy": f"{who}'s line is busy",
        "no_answer": f"{who} did not answer",
        "failed": f"the call to {who} could not be placed",
        "canceled": f"the call to {who} was cancelled",
        "no_key": f"{who}'s phone answered but nobody pressed a key (screening or voicemail)",
        "declined": f"{who} declined the call",
        "exhausted": "nobody on the team could take the call",
        "customer_hung_up": "the caller hung up",
        "human_ended": f"{who} hung up before the caller was connected",
        "error": "the caller could not be moved to the team member",
    }
    return texts.get(reason or "", f"failed ({reason})")


def e164(phone: str) -> str | None:
    """``phone`` as a valid E.164 number, or None."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def hunt_list(staff: list[StaffContact]) -> list[StaffContact]:
    """The people to ring, in order: invalid or repeated numbers are left out (logged)."""
    out: list[StaffContact] = []
    seen: set[str] = set()
    for person in staff:
        number = e164(person.phone)
        if number is None:
            log.warning("staff number is not a valid E.164 number; skipped", staff=person.name)
            continue
        if number in seen:
            continue
        seen.add(number)
        out.append(person.model_copy(update={"phone": number}))
    return out


def same_person(a: StaffContact, b: StaffContact) -> bool:
    """Whether two hunt-list entries are one team member: the same staff id when both
    have one (a person may change their number), else the same (normalised) number."""
    if a.staff_id is not None and b.staff_id is not None:
        return a.staff_id == b.staff_id
    return a.phone == b.phone


class EscalationMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.escalations = metrics.counter(
            "escalation_requests_total", "Escalation requests by how they were taken", ["kind"]
        )
        self.outcomes = metrics.counter(
            "escalation_outcomes_total",
            "Escalations ended, by final status and reason",
            ["status", "reason"],
        )
        self.attempts = metrics.counter(
            "escalation_attempts_total", "Human calls placed (one per person rung)"
        )
        self.attempt_failures = metrics.counter(
            "escalation_attempt_failures_total", "Human calls that failed, by reason", ["reason"]
        )
        self.transitions = metrics.counter(
            "escalation_transitions_total", "Human-call status changes", ["status"]
        )
        self.refused = metrics.counter(
            "escalation_illegal_transitions_total", "Transitions the state machine refused"
        )
        self.stale = metrics.counter(
            "escalation_stale_callbacks_total",
            "Status callbacks ignored as older than one already applied",
        )
        self.signature_failures = metrics.counter(
            "escalation_signature_failures_total",
            "Webhooks with a bad X-Twilio-Signature",
            ["route"],
        )
        self.watchdog_fixes = metrics.counter(
            "escalation_watchdog_corrections_total",
            "Changes the watchdog applied that no callback had reported",
        )
        self.active = metrics.gauge("escalation_active", "Escalations this replica owns")
        self.staff_actions = metrics.counter(
            "escalation_staff_actions_total",
            "Claims and passes from the dashboard, by whether they were accepted",
            ["action", "outcome"],
        )
        self.duty_removals = metrics.counter(
            "escalation_duty_removals_total",
            "People taken off a running escalation's list because they went off duty",
        )


# --------------------------------------------------------------------------- the escalator


class Escalator:
    """Shared by the webhooks, the work consumer and every :class:`EscalationRun`."""

    def __init__(
        self,
        settings: EscalationSettings,
        bus: Bus,
        store: StateStore,
        calls: CallControl,
        metrics: Metrics,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.calls = calls
        self.m = EscalationMetrics(metrics)
        self.clock = clock
        self.wall = wall
        self.ledger = CallbackLedger()
        self.runs: dict[str, EscalationRun] = {}
        self.marker_timeout_s = max(10.0, 3 * settings.twilio_request_timeout_s)
        # Unset only in a fleet without a phone line, where no call is ever placed.
        self.public_url = settings.public_url or ""
        self.gateway_url = settings.gateway_public_url or ""

    # ----------------------------------------------------------------- URLs

    def webhook_url(self, route: str, **params: str | int) -> str:
        return f"{self.public_url}/api/voice/{route}?{urlencode(params)}"

    def attempt_url(self, route: str, session_id: str, task_id: str, attempt: int) -> str:
        return self.webhook_url(route, session_id=session_id, task_id=task_id, attempt=attempt)

    def conference_status_url(self, session_id: str) -> str:
        return self.webhook_url("conference-status", session_id=session_id)

    def escalate_url(self, session_id: str) -> str:
        q = urlencode({"session_id": session_id})
        return f"{self.gateway_url}/api/voice/escalate?{q}"

    def return_url(self, session_id: str, reason: str) -> str:
        q = urlencode({"session_id": session_id, "reason": reason})
        return f"{self.gateway_url}/api/voice/return-to-ai?{q}"

    # ----------------------------------------------------------------- the one write path

    async def commit(
        self,
        session_id: str,
        task_id: str,
        decide: Callable[[ConversationState], Decision | None],
    ) -> Change | None:
        """Apply ``decide`` to the escalation under the state store's lock, through the
        state machine; announce the change. None when ``decide`` declined, the task is not
        the session's current one, or the machine refused (logged)."""
        box: list[Change | None] = [None]

        def mutate(state: ConversationState) -> None:
            box[0] = None  # the store may run this more than once (lost races)
            esc = state.escalation
            if esc.task_id != task_id:
                raise _Unchanged
            d = decide(state)
            if d is None:
                raise _Unchanged
            before, before_final = esc.status, escalation_final(esc.status, esc.detail)
            changed = True
            if d.new_attempt is not None:
                if before_final or not can_start_attempt(esc.status, esc.detail):
                    raise _Unchanged
                if d.new_attempt != esc.attempts + 1:
                    raise _Unchanged
                esc.status = S.CALLING
                esc.attempts = d.new_attempt
                esc.human_call_sid = None
                esc.staff_name = d.staff_name
                esc.detail = None
                esc.conference = None
                esc.ringing = d.ringing
            elif d.status is None or d.status is esc.status:
                if before_final:
                    raise _Unchanged  # a final state is never touched again
                if d.status is S.FAILED and d.reason in FINAL_REASONS:
                    esc.detail = d.reason  # a failed attempt becomes the end of it all
                else:
                    changed = False
                    if d.detail is not _KEEP:
                        esc.detail = d.detail
            else:
                if before_final:
                    raise _Unchanged
                esc.status = transition(esc.status, d.status)  # IllegalTransition: refused
                esc.detail = (
                    d.reason if d.reason is not None else (None if d.detail is _KEEP else d.detail)
                )
            if d.human_call_sid is not None and esc.human_call_sid is None:
                esc.human_call_sid = d.human_call_sid
            if d.conference is not None:
                esc.conference = d.conference
            if d.hunt is not None:
                esc.hunt = list(d.hunt)
            esc.updated_at = self.wall()
            final = escalation_final(esc.status, esc.detail)
            if final:
                state.escalation_in_progress = False
            box[0] = Change(
                session_id=session_id,
                task_id=task_id,
                attempt=esc.attempts,
                previous=before,
                status=esc.status,
                reason=esc.detail if esc.status in (S.FAILED, S.COMPLETED) else None,
                final=final,
                changed=changed,
                staff_name=esc.staff_name,
                human_call_sid=esc.human_call_sid,
                call_sid=state.call_sid,
            )

        try:
            await self.store.update(session_id, mutate)
        except _Unchanged:
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
            await self._announce(change)
        return change

    async def _announce(self, change: Change) -> None:
        """Tell everyone: notification (before the status, so the agent's turn finds it),
        task record, ``EscalationStatus`` (agent) and ``HumanStatusEvent`` (dashboard)."""
        sid, task = change.session_id, change.task_id
        text = _describe(change)
        self.m.transitions.labels(change.status.value).inc()
        if change.status is S.FAILED and not change.final and change.reason:
            self.m.attempt_failures.labels(change.reason).inc()
        if change.final:
            self.m.outcomes.labels(change.status.value, change.reason or "").inc()
        log.info(
            "human call status",
            session_id=sid,
            task_id=task,
            attempt=change.attempt,
            status=change.status.value,
            previous=change.previous.value,
            reason=change.reason,
            final=change.final,
            staff=change.staff_name,
        )
        try:
            if change.status is S.CONFIRMED:
                await self.store.push_notification(
                    sid,
                    Notification(
                        id=f"{task}:confirmed",
                        kind="human_available",
                        data={"name": change.staff_name or ""},
                        task_id=task,
                    ),
                )
            if change.final and change.status is S.FAILED and change.reason != "customer_hung_up":
                await self.store.push_notification(
                    sid,
                    Notification(
                        id=f"{task}:failed",
                        kind="escalation_failed",
                        data={"reason": change.reason},
                        task_id=task,
                    ),
                )
            if change.final:
                task_status = TaskStatus.DONE if change.status is S.COMPLETED else TaskStatus.FAILED
            else:
                task_status = TaskStatus.RUNNING
            await self.store.set_task(
                sid,
                BackgroundTask(
                    task_id=task,
                    kind="escalation",
                    status=task_status,
                    detail=text,
                    updated_at=self.wall(),
                    result={
                        "status": change.status.value,
                        "reason": change.reason,
                        "attempt": change.attempt,
                        "staff_name": change.staff_name,
                        "final": change.final,
                    },
                ),
            )
        except Exception:
            log.exception("escalation notification/task not stored", session_id=sid)
        fields: dict[str, Any] = {
            "session_id": sid,
            "status": change.status,
            "detail": text,
            "staff_name": change.staff_name,
            "task_id": task,
            "attempt": change.attempt,
            "final": change.final,
            "reason": change.reason,
        }
        try:
            await self.bus.publish(subjects.escalation(sid), EscalationStatus(**fields))
        except Exception:
            log.exception("escalation status not published", session_id=sid)
        try:
            await self.bus.publish_durable(subjects.events(sid), HumanStatusEvent(**fields))
        except Exception:
            log.exception("human_status event not published", session_id=sid)

    async def _call_ended(self, session_id: str) -> None:
        """The caller hung up while handed off to the conference, where the gateway no
        longer sees the call: the dashboard hears it from us."""
        with contextlib.suppress(Exception):
            await self.bus.publish_durable(
                subjects.events(session_id),
                CallEndedEvent(session_id=session_id, reason="customer_hung_up"),
            )

    # ----------------------------------------------------------------- facts

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

        change = await self.commit(session_id, task_id, decide)
        if change is not None and change.changed and source == "watchdog":
            self.m.watchdog_fixes.inc()
            log.info(
                "watchdog applied a missed status",
                session_id=session_id,
                status=change.status.value,
                call_status=call_status,
            )
        if left[0]:
            await self.human_left(session_id, task_id, attempt)
        return change

    def _attempt_matches(self, esc: EscalationInfo, attempt: int, call_sid: str | None) -> bool:
        return esc.attempts == attempt and not (
            call_sid and esc.human_call_sid and call_sid != esc.human_call_sid
        )

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
            and self._attempt_matches(esc, attempt, call_sid)
            and esc.status is S.WAITING_CONFIRMATION
        )

    async def key_pressed(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> PromptContext | None:
        """A key on the first prompt: a person, not call screening. The context for the
        second prompt, or None if this attempt is no longer live."""
        ctx: list[PromptContext | None] = [None]

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if not self._attempt_matches(esc, attempt, call_sid):
                return None
            if esc.status is not S.WAITING_CONFIRMATION:
                return None
            name = (state.customer.name if state.customer else None) or None
            ctx[0] = PromptContext(name, esc.reason)
            return Decision(detail=KEY_PRESSED, human_call_sid=call_sid)

        change = await self.commit(session_id, task_id, decide)
        return ctx[0] if change is not None else None

    async def accept(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> bool:
        """The person pressed 1: CONFIRMED (the agent tells the caller; the owner then
        moves them). False if this attempt is no longer live."""

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if not self._attempt_matches(esc, attempt, call_sid):
                return None
            if esc.status is not S.WAITING_CONFIRMATION:
                return None
            return Decision(
                S.CONFIRMED,
                human_call_sid=call_sid,
                conference=subjects.conference_name(session_id),
            )

        change = await self.commit(session_id, task_id, decide)
        return change is not None and change.status is S.CONFIRMED

    async def decline(
        self, session_id: str, task_id: str, attempt: int, call_sid: str | None
    ) -> None:
        """Any key but 1 on the second prompt: this person declined; the next is rung."""

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if not self._attempt_matches(esc, attempt, call_sid):
                return None
            if esc.status is not S.WAITING_CONFIRMATION:
                return None
            return Decision(S.FAILED, "declined", human_call_sid=call_sid)

        await self.commit(session_id, task_id, decide)

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
            await self.human_left(session_id, esc.task_id, esc.attempts)
        elif event == "conference-end" or (
            event == "participant-leave" and call_sid and call_sid == state.call_sid
        ):
            await self.customer_left(session_id, esc.task_id, esc.attempts)

    async def _customer_status(self, call_sid: str | None) -> str | None:
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

    def _claim(
        self, attempt: int, status: HumanCallStatus, marker: str, since: Callable[[], float]
    ) -> Callable[[ConversationState], Decision | None]:
        """A decision that sets ``marker`` on ``attempt`` in ``status``, unless another
        worker holds a fresh one. ``since()`` is how long this process has seen the
        marker (a dead worker's marker is taken over after ``marker_timeout_s``)."""

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.attempts != attempt or esc.status is not status:
                return None
            if esc.detail == marker and since() < self.marker_timeout_s:
                return None
            return Decision(detail=marker)

        return decide

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
        claim = await self.commit(
            session_id, task_id, self._claim(attempt, S.IN_CONFERENCE, RETURNING, since)
        )
        if claim is None:
            return
        status = await self._customer_status(claim.call_sid)
        reason = "customer_hung_up"
        if status not in FINAL_CALL_STATUSES and status != "gone" and claim.call_sid:
            try:
                await self.calls.redirect(
                    claim.call_sid, self.return_url(session_id, "human_ended")
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

        def complete(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.attempts != attempt or esc.status is not S.IN_CONFERENCE:
                return None
            return Decision(S.COMPLETED, reason)

        change = await self.commit(session_id, task_id, complete)
        if change is not None and reason == "customer_hung_up":
            await self._call_ended(session_id)

    async def customer_left(self, session_id: str, task_id: str, attempt: int) -> None:
        """The caller left the conference: if their call is over, end the person's leg and
        the escalation; if it is still live, the conference ended under them, so they are
        brought back to the AI."""
        state = await self.store.get_state(session_id)
        status = await self._customer_status(state.call_sid)
        if status is None:
            return  # the watchdog looks again
        if status not in FINAL_CALL_STATUSES and status != "gone":
            await self.human_left(session_id, task_id, attempt)
            return

        def end(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.attempts != attempt or esc.status is not S.IN_CONFERENCE:
                return None
            return Decision(S.COMPLETED, "customer_hung_up")

        change = await self.commit(session_id, task_id, end)
        if change is None:
            return
        if change.human_call_sid:
            await self._hang_up(change.human_call_sid, session_id)
        await self._call_ended(session_id)

    async def customer_gone(self, session_id: str, task_id: str) -> None:
        """The caller hung up before being moved to the conference: cancel or end the
        person's call and finish the escalation (``customer_hung_up``)."""

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.status in (S.IN_CONFERENCE, S.COMPLETED):
                return None
            return Decision(S.FAILED, "customer_hung_up")

        change = await self.commit(session_id, task_id, decide)
        if change is not None and change.human_call_sid:
            await self._hang_up(change.human_call_sid, session_id)

    async def _hang_up(self, call_sid: str, session_id: str) -> None:
        try:
            await hang_up(self.calls, call_sid)
        except TwilioError as exc:
            log.warning(
                "could not end the team member's call", session_id=session_id, error=str(exc)
            )

    # ----------------------------------------------------------------- requests

    async def begin(self, req: EscalationRequest) -> str:
        """Record the request in the state: "new", "resume" (this task is under way: a
        redelivery), "done" (this task is over), "busy" (another escalation of the session
        is running), or "unknown" (no such session)."""
        current, _ = await self.store.get_state_with_version(req.session_id)
        if current is None:
            return "unknown"
        now = self.wall()

        def classify(esc: EscalationInfo) -> str:
            if esc.task_id == req.task_id:
                if escalation_final(esc.status, esc.detail):
                    return "done"
                # The agent may have recorded the task before asking: nothing rung yet.
                started = esc.status is not S.NONE or esc.attempts > 0
                return "resume" if started else "new"
            running = (
                esc.task_id is not None
                and esc.status is not S.NONE
                and not escalation_final(esc.status, esc.detail)
            )
            return "busy" if running and now - esc.updated_at < ABANDONED_AFTER_S else "new"

        outcome = [classify(current.escalation)]
        if outcome[0] != "new":
            return outcome[0]

        def mutate(state: ConversationState) -> None:
            outcome[0] = classify(state.escalation)
            if outcome[0] != "new":
                raise _Unchanged
            state.escalation = EscalationInfo(
                task_id=req.task_id, reason=req.reason or state.escalation.reason
            )
            state.escalation_in_progress = True
            if state.call_sid is None:
                state.call_sid = req.call_sid

        with contextlib.suppress(_Unchanged):
            await self.store.update(req.session_id, mutate)
        return outcome[0]

    async def handle_request(self, msg: Msg) -> None:
        """The JetStream work handler: run (or resume) the escalation until it is over;
        returning acks the request, raising Reject drops a request that can never run."""
        try:
            req = loads(EscalationRequest, msg.data)
            subjects.check_session_id(req.session_id)
        except (ValidationError, ValueError) as exc:
            raise Reject(f"malformed escalation request: {exc}") from None
        kind = await self.begin(req)
        self.m.escalations.labels(kind).inc()
        log.info(
            "escalation request",
            session_id=req.session_id,
            task_id=req.task_id,
            kind=kind,
            staff=len(req.staff),
        )
        if kind == "unknown":
            raise Reject(f"no conversation state for session {req.session_id}")
        if kind == "busy":
            raise Reject(f"session {req.session_id} already has an escalation running")
        if kind == "done":
            return
        existing = self.runs.get(req.session_id)
        if existing is not None:
            await existing.finished.wait()
            return
        run = EscalationRun(self, req, resumed=kind == "resume")
        self.runs[req.session_id] = run
        self.m.active.inc()
        try:
            await run.run()
        finally:
            self.m.active.dec()
            self.runs.pop(req.session_id, None)


# --------------------------------------------------------------------------- the owner


# The attempt is ringing or answered but not yet accepted: a claim or a pass may still
# end it.
_LIVE = (S.CALLING, S.RINGING, S.WAITING_CONFIRMATION)


def _accepted(detail: str) -> StaffActionReply:
    return StaffActionReply(accepted=True, detail=detail)


def _refused(detail: str) -> StaffActionReply:
    return StaffActionReply(accepted=False, detail=detail)


@dataclass
class EscalationRun:
    """The owner of one escalation: acts on its state until it is final.

    The hunt list is the run's own (``queue``: the people still to ring, in order; ``rung``:
    who each attempt rang), so staff actions from the dashboard (claim, pass: answered on
    ``call.<sid>.staff`` by this run alone) and duty changes (``staff.duty``) reorder it;
    every change is also kept in the state (``EscalationInfo.hunt``/``ringing``), so a run
    resumed by another replica goes on with the same list (see :meth:`_hunt`).
    """

    esc: Escalator
    req: EscalationRequest
    resumed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    played: set[str] = field(default_factory=set)
    check_customer: bool = False
    queue: list[StaffContact] | None = None
    rung: dict[int, StaffContact] = field(default_factory=dict)
    off_duty: set[int] = field(default_factory=set)
    # Held while the list is read and changed together with the state (starting the next
    # attempt, a claim or a pass), so an action never races the choice of the next person.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _seen: dict[tuple[Any, ...], float] = field(default_factory=dict)
    _last_watchdog: float | None = None
    _hint: float = float("inf")

    def __post_init__(self) -> None:
        if not self.resumed:
            # A fresh escalation starts ringing at once; the first watchdog round (which
            # also checks the caller is still there) comes one interval later.
            self._last_watchdog = self.esc.clock()
        self.staff = hunt_list(self.req.staff)
        self.sid = self.req.session_id
        self.task = self.req.task_id
        self.confirmed_turn = escalation_turn_id(self.task, "confirmed")

    def _since(self, *key: Any) -> float:
        """Seconds since this run first saw ``key`` (0 the first time)."""
        now = self.esc.clock()
        return now - self._seen.setdefault(key, now)

    def _due(self, after_s: float, *key: Any) -> bool:
        """Whether ``after_s`` have passed since ``key`` was first seen; if not, the loop
        wakes up when they will have."""
        elapsed = self._since(*key)
        if elapsed >= after_s:
            return True
        self._hint = min(self._hint, after_s - elapsed)
        return False

    # ----------------------------------------------------------------- the hunt list

    def _hunt(self, esc: EscalationInfo) -> list[StaffContact]:
        """The people still to ring, in order, built on the first look at the state.

        A fresh run starts from the whole list. A resumed one (another replica rang the
        first ``attempts``) takes the list that replica kept in the state (claims, passes
        and duty changes applied); a state written before the list was kept there falls
        back to the request's order after the attempt count."""
        if self.queue is None:
            if esc.hunt is not None:
                self.queue = [p for p in esc.hunt if p.staff_id not in self.off_duty]
                if esc.attempts and esc.ringing is not None:
                    self.rung.setdefault(esc.attempts, esc.ringing)
                return self.queue
            done = min(esc.attempts, len(self.staff))
            self.queue = [p for p in self.staff[done:] if p.staff_id not in self.off_duty]
            if done and esc.attempts == done and self.staff[done - 1].name == esc.staff_name:
                self.rung.setdefault(done, self.staff[done - 1])
        return self.queue

    async def _keep_hunt(self) -> None:
        """Write the run's list into the state (under the run's lock), so a replica that
        resumes the escalation rings the same people in the same order."""
        hunt = list(self.queue or [])

        def keep(state: ConversationState) -> Decision | None:
            return Decision(hunt=hunt) if state.escalation.hunt != hunt else None

        await self.esc.commit(self.sid, self.task, keep)

    def _put_at(self, index: int, person: StaffContact) -> None:
        """``person`` at ``index`` of the list (any other place they had is dropped)."""
        assert self.queue is not None
        rest = [p for p in self.queue if not same_person(p, person)]
        rest.insert(index, person)
        self.queue = rest

    def _closed(self, esc: EscalationInfo, mine: bool) -> str | None:
        """Why no claim or pass can change the escalation any more; None if one can."""
        if esc.task_id != self.task or escalation_final(esc.status, esc.detail):
            return "this escalation is over"
        who = esc.staff_name or "a team member"
        if esc.status is S.IN_CONFERENCE:
            return (
                "you are already talking with the caller"
                if mine
                else f"the caller is already talking with {who}"
            )
        if esc.status is S.CONFIRMED:
            return (
                "you already accepted the call; the caller is being connected"
                if mine
                else f"{who} already accepted the call; the caller is being connected"
            )
        return None

    def _end_attempt(
        self, attempt: int, reason: str, statuses: tuple[HumanCallStatus, ...]
    ) -> Callable[[ConversationState], Decision | None]:
        def decide(state: ConversationState) -> Decision | None:
            e = state.escalation
            if e.attempts != attempt or e.status not in statuses:
                return None
            return Decision(S.FAILED, reason)

        return decide

    async def claim(self, person: StaffContact, hang_ups: list[str]) -> StaffActionReply:
        """``person`` is rung next: at once if the attempt under way is someone else's
        that nobody answered (that leg is let go, its person goes back on the list right
        after), after the answered one if its person does not accept. Call sids to end
        (after the reply) go to ``hang_ups``."""
        number = e164(person.phone)
        if number is None:
            return _refused(f"{person.name}'s phone number is not a valid E.164 number")
        person = person.model_copy(update={"phone": number})
        async with self._lock:
            for _ in range(5):
                esc = (await self.esc.store.get_state(self.sid)).escalation
                self._hunt(esc)
                current = self.rung.get(esc.attempts)
                mine = current is not None and same_person(current, person)
                why = self._closed(esc, mine)
                if why is not None:
                    return _refused(why)
                if mine and esc.status is S.WAITING_CONFIRMATION:
                    return _accepted("you have answered: press 1 on your phone to take the call")
                if mine and esc.status in _LIVE:
                    return _accepted("your phone is already being rung")
                if person.staff_id is not None:
                    self.off_duty.discard(person.staff_id)  # claiming is coming back on
                self._put_at(0, person)
                who = esc.staff_name or "the team member"
                if esc.status is S.WAITING_CONFIRMATION:
                    await self._keep_hunt()
                    return _accepted(f"{who} answered; you are rung next if they do not accept")
                if esc.status in (S.CALLING, S.RINGING):
                    change = await self.esc.commit(
                        self.sid,
                        self.task,
                        self._end_attempt(esc.attempts, "canceled", (S.CALLING, S.RINGING)),
                    )
                    if change is None:
                        continue  # answered or failed meanwhile: look again
                    if current is not None and current.staff_id not in self.off_duty:
                        self._put_at(1, current)
                    await self._keep_hunt()
                    if change.human_call_sid:
                        hang_ups.append(change.human_call_sid)
                    return _accepted(f"the call to {who} was let go; ringing you now")
                await self._keep_hunt()
                return _accepted("ringing you now")
        return _refused("the escalation kept changing; try again")

    async def pass_(self, person: StaffContact, hang_ups: list[str]) -> StaffActionReply:
        """``person`` is taken off the rest of the list; if they are being rung (or have
        answered without accepting) their leg is ended ("declined") and the next person is
        rung. Call sids to end (after the reply) go to ``hang_ups``."""
        person = person.model_copy(update={"phone": e164(person.phone) or person.phone})
        async with self._lock:
            for _ in range(5):
                esc = (await self.esc.store.get_state(self.sid)).escalation
                queue = self._hunt(esc)
                current = self.rung.get(esc.attempts)
                mine = current is not None and same_person(current, person)
                why = self._closed(esc, mine)
                if why is not None:
                    return _refused(why)
                listed = any(same_person(p, person) for p in queue)
                self.queue = [p for p in queue if not same_person(p, person)]
                if listed:
                    await self._keep_hunt()
                if mine and esc.status in _LIVE:
                    change = await self.esc.commit(
                        self.sid, self.task, self._end_attempt(esc.attempts, "declined", _LIVE)
                    )
                    if change is None:
                        continue  # accepted or failed meanwhile: look again
                    if change.human_call_sid:
                        hang_ups.append(change.human_call_sid)
                    return _accepted("your call was ended; the next person is rung")
                if listed:
                    return _accepted("you were taken off this escalation's list")
                return _accepted("you are not on this escalation's list; nothing changed")
        return _refused("the escalation kept changing; try again")

    # ----------------------------------------------------------------- bus input

    async def _on_escalation(self, _msg: Msg) -> None:
        self.wake.set()

    async def _on_staff_action(self, msg: Msg) -> None:
        """A claim or pass from the dashboard (request/reply): only this run, the owner of
        the escalation, answers, so a reply means the escalation is live here."""
        hang_ups: list[str] = []
        action: StaffAction | None = None
        try:
            action = loads(StaffAction, msg.data)
            if action.session_id != self.sid:
                raise ValueError(f"session_id {action.session_id!r} is not {self.sid!r}")
        except (ValidationError, ValueError) as exc:
            reply = _refused(f"malformed staff action: {str(exc).splitlines()[0]}")
            action = None
        else:
            handle = self.claim if action.action == "claim" else self.pass_
            try:
                reply = await handle(action.staff, hang_ups)
            except (StateStoreError, OSError) as exc:
                log.warning("staff action failed", session_id=self.sid, error=str(exc))
                reply = _refused("the escalation could not be changed just now; try again")
        kind = action.action if action is not None else "invalid"
        self.esc.m.staff_actions.labels(kind, "accepted" if reply.accepted else "refused").inc()
        log.info(
            "staff action",
            session_id=self.sid,
            task_id=self.task,
            action=kind,
            staff=action.staff.name if action else None,
            staff_id=action.staff.staff_id if action else None,
            phone=mask_phone(action.staff.phone) if action else None,
            accepted=reply.accepted,
            detail=reply.detail,
        )
        if msg.reply:
            await msg.respond(reply.dumps())
        for call_sid in hang_ups:
            await self.esc._hang_up(call_sid, self.sid)
        if reply.accepted:
            self.wake.set()

    async def _on_duty(self, msg: Msg) -> None:
        """Someone went off duty: they are not rung later by this escalation (a leg already
        ringing them goes on). Coming on duty adds nobody to a running escalation."""
        try:
            duty = loads(StaffDutyChanged, msg.data)
        except ValidationError:
            log.warning("malformed staff duty change ignored", session_id=self.sid)
            return
        if duty.on_duty:
            return
        async with self._lock:
            self.off_duty.add(duty.staff_id)
            if self.queue is None:
                return  # applied when the list is built
            before = len(self.queue)
            self.queue = [p for p in self.queue if p.staff_id != duty.staff_id]
            removed = before - len(self.queue)
            if removed:
                with contextlib.suppress(StateStoreError, OSError):
                    await self._keep_hunt()  # else the next attempt's commit keeps it
        if removed:
            self.esc.m.duty_removals.inc()
            log.info(
                "off duty: taken off the escalation's list",
                session_id=self.sid,
                staff=duty.name,
                staff_id=duty.staff_id,
            )

    async def _on_control(self, msg: Msg) -> None:
        try:
            ctl = parse_control(msg.data)
        except ValidationError:
            return
        if isinstance(ctl, (TurnPlayed, BargeIn)):
            # A barge-in over "connecting you" means the caller heard (and answered) it.
            self.played.add(ctl.turn_id)
        elif isinstance(ctl, StreamStopped) and ctl.reason != "handoff":
            self.check_customer = True
        elif isinstance(ctl, StreamStarted):
            self.check_customer = False
        else:
            return
        self.wake.set()

    # ----------------------------------------------------------------- loop

    async def run(self) -> None:
        subs: list[Subscription] = []
        try:
            subs.append(
                await self.esc.bus.subscribe(subjects.escalation(self.sid), self._on_escalation)
            )
            subs.append(await self.esc.bus.subscribe(subjects.control(self.sid), self._on_control))
            subs.append(
                await self.esc.bus.subscribe(subjects.staff_action(self.sid), self._on_staff_action)
            )
            subs.append(await self.esc.bus.subscribe(subjects.STAFF_DUTY, self._on_duty))
            while True:
                self.wake.clear()
                try:
                    if await self.step():
                        return
                except (TwilioError, StateStoreError, OSError) as exc:
                    # An outage of Twilio or the store must not end the escalation: the
                    # next step looks again (the state says where it stands).
                    log.warning(
                        "escalation step failed; retrying", session_id=self.sid, error=str(exc)
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._sleep_s())
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            self.finished.set()

    def _sleep_s(self) -> float:
        """Until the next watchdog round or the next deadline a step noted."""
        interval = self.esc.settings.watchdog_interval_s
        last = self._last_watchdog
        to_watchdog = interval if last is None else interval - (self.esc.clock() - last)
        return max(0.01, min(to_watchdog, self._hint))

    async def step(self) -> bool:
        """One look at the state and whatever it calls for; True once it is over."""
        state = await self.esc.store.get_state(self.sid)
        esc = state.escalation
        if esc.task_id != self.task:
            log.warning(
                "escalation replaced by another task", session_id=self.sid, task_id=self.task
            )
            return True
        if escalation_final(esc.status, esc.detail):
            return True
        s = self.esc.settings
        self._hint = float("inf")
        now = self.esc.clock()
        watchdog = self._last_watchdog is None or now - self._last_watchdog >= s.watchdog_interval_s
        if watchdog:
            self._last_watchdog = now

        # The caller: hung up before being handed to the conference?
        if esc.status is not S.IN_CONFERENCE and (self.check_customer or watchdog):
            status = await self.esc._customer_status(state.call_sid or self.req.call_sid)
            if status in FINAL_CALL_STATUSES or status == "gone":
                log.info("caller hung up during the escalation", session_id=self.sid)
                await self.esc.customer_gone(self.sid, self.task)
                return False
            if status is not None:
                self.check_customer = False

        # In the conference the room's callbacks say when the caller leaves; a lost one, or
        # a caller who hung up while being moved into the room, is caught here.
        if esc.status is S.IN_CONFERENCE and watchdog and esc.detail != RETURNING:
            status = await self.esc._customer_status(state.call_sid or self.req.call_sid)
            if status in FINAL_CALL_STATUSES or status == "gone":
                log.info("caller gone from the conference", session_id=self.sid)
                await self.esc.customer_left(self.sid, self.task, esc.attempts)
                return False

        if esc.status is S.NONE or (esc.status is S.FAILED and not is_final_reason(esc.detail)):
            await self._dial_next(esc)
            return False

        attempt = esc.attempts
        if esc.status in (S.CALLING, S.RINGING):
            if esc.human_call_sid is None:
                if self._due(s.create_grace_s, "create", attempt):
                    log.warning("call creation never reported back", session_id=self.sid)
                    await self._fail(attempt, "failed", None)
                return False
            if self._due(s.ring_timeout_s + s.stalled_grace_s, "ring", attempt):
                log.warning("call still unanswered past the ring timeout", session_id=self.sid)
                await self._fail(attempt, "no_answer", esc.human_call_sid)
                return False
        elif esc.status is S.WAITING_CONFIRMATION:
            if self._due(s.confirm_deadline_s, "confirm", attempt):
                reason = "declined" if esc.detail == KEY_PRESSED else "no_key"
                await self._fail(attempt, reason, esc.human_call_sid)
                return False
        elif esc.status is S.CONFIRMED:
            heard = self.confirmed_turn in self.played
            if self._due(s.confirm_speech_timeout_s, "confirmed", attempt) or heard:
                waited = self._since("confirmed", attempt)
                if not heard:
                    log.warning(
                        "'connecting you' turn not reported played; moving the caller anyway",
                        session_id=self.sid,
                        waited_s=round(waited, 1),
                    )
                await self._move_caller(esc)
                return False
        elif (
            esc.status is S.IN_CONFERENCE
            and esc.detail == RETURNING
            and self._due(self.esc.marker_timeout_s, "returning", attempt)
        ):
            since = self._since("returning", attempt)
            await self.esc.human_left(self.sid, self.task, attempt, since=lambda: since)
            return False

        if watchdog and esc.human_call_sid:
            await self._watch(attempt, esc.human_call_sid)
        return False

    # ----------------------------------------------------------------- actions

    async def _watch(self, attempt: int, call_sid: str) -> None:
        """The watchdog: what Twilio says now, applied as a missed callback would be."""
        try:
            status = await self.esc.calls.fetch_status(call_sid)
        except CallNotLive:
            status = "failed"
        await self.esc.observe(self.sid, self.task, attempt, call_sid, status, source="watchdog")

    async def _fail(self, attempt: int, reason: str, call_sid: str | None) -> None:
        if call_sid:
            await self.esc._hang_up(call_sid, self.sid)

        def decide(state: ConversationState) -> Decision | None:
            esc = state.escalation
            if esc.attempts != attempt or is_final(esc.status):
                return None
            return Decision(S.FAILED, reason)

        await self.esc.commit(self.sid, self.task, decide)

    async def _dial_next(self, esc: EscalationInfo) -> None:
        attempt = esc.attempts + 1
        async with self._lock:
            queue = self._hunt(esc)
            if not queue:

                def exhausted(state: ConversationState) -> Decision | None:
                    e = state.escalation
                    if e.attempts != esc.attempts or not can_start_attempt(e.status, e.detail):
                        return None
                    return Decision(S.FAILED, "exhausted")

                await self.esc.commit(self.sid, self.task, exhausted)
                return
            person = queue[0]
            rest = queue[1:]

            def start(state: ConversationState) -> Decision | None:
                return Decision(
                    new_attempt=attempt, staff_name=person.name, ringing=person, hunt=rest
                )

            change = await self.esc.commit(self.sid, self.task, start)
            if change is None or change.status is not S.CALLING or change.attempt != attempt:
                return
            self.rung[attempt] = person
            self.queue = rest
        self._since("create", attempt)
        self._since("ring", attempt)
        self.esc.m.attempts.inc()
        log.info(
            "ringing team member",
            session_id=self.sid,
            attempt=attempt,
            staff=person.name,
            to=mask_phone(person.phone),
        )
        try:
            call_sid = await self.esc.calls.create_call(
                to=person.phone,
                from_=self.esc.settings.from_number or "",
                url=self.esc.attempt_url("human-answer", self.sid, self.task, attempt),
                status_callback=self.esc.attempt_url("human-status", self.sid, self.task, attempt),
                timeout_s=self.esc.settings.ring_timeout_s,
            )
        except TwilioRejected as exc:
            log.warning("outbound call refused by Twilio", session_id=self.sid, error=str(exc))
            await self._fail(attempt, "failed", None)
            return
        except TwilioError as exc:
            # Maybe placed, maybe not: its callbacks will tell (they name the attempt);
            # if none comes within create_grace_s the attempt is given up.
            log.warning("outbound call outcome unknown", session_id=self.sid, error=str(exc))
            return

        def record(state: ConversationState) -> Decision | None:
            e = state.escalation
            if e.attempts != attempt or e.human_call_sid is not None or is_final(e.status):
                return None
            return Decision(human_call_sid=call_sid)

        if await self.esc.commit(self.sid, self.task, record) is not None:
            return
        # The attempt ended while its call was being placed (a claim let it go, the caller
        # hung up): nobody else knows this call, so it is ended here.
        e = (await self.esc.store.get_state(self.sid)).escalation
        if e.task_id != self.task or e.attempts != attempt or is_final(e.status):
            await self.esc._hang_up(call_sid, self.sid)

    async def _move_caller(self, esc: EscalationInfo) -> None:
        """CONFIRMED and the caller has heard "connecting you": redirect their call to the
        gateway's conference TwiML; IN_CONFERENCE."""
        attempt = esc.attempts
        since = self._since("moving", attempt) if esc.detail == MOVING else 0.0
        claim = await self.esc.commit(
            self.sid, self.task, self.esc._claim(attempt, S.CONFIRMED, MOVING, lambda: since)
        )
        if claim is None:
            return
        customer = claim.call_sid or self.req.call_sid
        try:
            await self.esc.calls.redirect(customer, self.esc.escalate_url(self.sid))
        except CallNotLive:
            log.info("caller gone before the transfer", session_id=self.sid)
            await self.esc.customer_gone(self.sid, self.task)
            return
        except TwilioError as exc:
            log.error(
                "could not move the caller to the conference", session_id=self.sid, error=str(exc)
            )

            def error(state: ConversationState) -> Decision | None:
                e = state.escalation
                if e.attempts != attempt or e.status is not S.CONFIRMED:
                    return None
                return Decision(S.FAILED, "error")

            change = await self.esc.commit(self.sid, self.task, error)
            if change is not None and change.human_call_sid:
                await self.esc._hang_up(change.human_call_sid, self.sid)
            return

        def joined(state: ConversationState) -> Decision | None:
            e = state.escalation
            if e.attempts != attempt or e.status is not S.CONFIRMED:
                return None
            return Decision(S.IN_CONFERENCE, detail=None)

        change = await self.esc.commit(self.sid, self.task, joined)
        if change is not None:
            return
        # The person hung up while the caller was being moved: the caller is on the way
        # into an empty conference; bring them straight back.
        state = await self.esc.store.get_state(self.sid)
        if state.escalation.task_id == self.task and state.escalation.status is S.FAILED:
            with contextlib.suppress(TwilioError):
                await self.esc.calls.redirect(
                    customer, self.esc.return_url(self.sid, "human_ended")
                )


def is_final_reason(reason: str | None) -> bool:
    return reason in FINAL_REASONS
