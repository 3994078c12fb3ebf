"""The owner of one escalation: :class:`EscalationRun`, the loop that drives its state
machine until it is final.

The replica whose JetStream consumer holds the ``EscalationRequest`` runs it: it rings the
hunt list, waits for the "connecting you" turn to have played, moves the caller into the
conference, answers staff actions and runs the watchdog. It acts on the state it reads
(level-triggered), so an owner that takes over after a crash simply carries on from
wherever the state says the escalation is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import escalation_turn_id
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    BargeIn,
    EscalationRequest,
    HumanCallStatus,
    StaffContact,
    StreamStarted,
    StreamStopped,
    TurnPlayed,
    parse_control,
)
from dealerline_common.state import ConversationState, EscalationInfo
from dealerline_common.state_store import StateStore, StateStoreError

from .changes import Decision
from .commit import Committer
from .dialing import Dialer
from .facts import Facts
from .handoff import MOVING, RETURNING, Handoff
from .hunt import HuntList, hunt_list
from .machine import FINAL_REASONS, can_start_attempt, escalation_final
from .metrics import EscalationMetrics
from .settings import EscalationSettings
from .staff_actions import StaffActions
from .twilio_client import CallControl, TwilioError
from .watchdog import Timers, Watchdog

log = get_logger(__name__)

S = HumanCallStatus


class EscalationRun:
    """The owner of one escalation: acts on its state until it is final.

    The hunt list is the run's own (:class:`~.hunt.HuntList`), so staff actions from the
    dashboard (claim, pass: answered on ``call.<sid>.staff`` by this run alone) and duty
    changes (``staff.duty``) reorder it; every change is also kept in the state
    (``EscalationInfo.hunt``/``ringing``), so a run resumed by another replica goes on with
    the same list.
    """

    def __init__(
        self,
        req: EscalationRequest,
        *,
        settings: EscalationSettings,
        bus: Bus,
        store: StateStore,
        clock: Callable[[], float],
        calls: CallControl,
        committer: Committer,
        facts: Facts,
        handoff: Handoff,
        dialer: Dialer,
        metrics: EscalationMetrics,
        resumed: bool = False,
    ) -> None:
        self.req = req
        self.sid = req.session_id
        self.task = req.task_id
        self.settings = settings
        self.bus = bus
        self.store = store
        self.committer = committer
        self.handoff = handoff
        self.dialer = dialer
        self.wake = asyncio.Event()
        self.finished = asyncio.Event()
        self.played: set[str] = set()  # turn ids the caller has heard
        self.confirmed_turn = escalation_turn_id(self.task, "confirmed")
        self.hunt = HuntList(hunt_list(req.staff))
        # Held while the list is read and changed together with the state (starting the next
        # attempt, a claim or a pass), so an action never races the choice of the next person.
        self.lock = asyncio.Lock()
        self.timers = Timers(clock)
        self.watchdog = Watchdog(
            self.sid,
            self.task,
            settings=settings,
            timers=self.timers,
            calls=calls,
            facts=facts,
            handoff=handoff,
            dialer=dialer,
            resumed=resumed,
        )
        self.staff = self._staff_actions(metrics)

    def _staff_actions(self, metrics: EscalationMetrics) -> StaffActions:
        """Claims, passes and duty changes, on this run's list, under its lock."""
        return StaffActions(
            self.sid,
            self.task,
            hunt=self.hunt,
            lock=self.lock,
            wake=self.wake,
            store=self.store,
            committer=self.committer,
            dialer=self.dialer,
            metrics=metrics,
        )

    # ----------------------------------------------------------------- bus input

    async def _subscribe(self, subs: list[Subscription]) -> None:
        """The run's inputs, each added to ``subs`` as soon as it is subscribed."""
        bus, sid = self.bus, self.sid
        subs.append(await bus.subscribe(subjects.escalation(sid), self._on_escalation))
        subs.append(await bus.subscribe(subjects.control(sid), self._on_control))
        subs.append(await bus.subscribe(subjects.staff_action(sid), self.staff.on_action))
        subs.append(await bus.subscribe(subjects.STAFF_DUTY, self.staff.on_duty))

    async def _on_escalation(self, _msg: Msg) -> None:
        self.wake.set()

    async def _on_control(self, msg: Msg) -> None:
        try:
            ctl = parse_control(msg.data)
        except ValidationError:
            return
        if isinstance(ctl, (TurnPlayed, BargeIn)):
            # A barge-in over "connecting you" means the caller heard (and answered) it.
            self.played.add(ctl.turn_id)
        elif isinstance(ctl, StreamStopped) and ctl.reason != "handoff":
            self.watchdog.check_caller = True
        elif isinstance(ctl, StreamStarted):
            self.watchdog.check_caller = False
        else:
            return
        self.wake.set()

    # ----------------------------------------------------------------- loop

    async def run(self) -> None:
        subs: list[Subscription] = []
        try:
            await self._subscribe(subs)
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
                    await asyncio.wait_for(self.wake.wait(), self.watchdog.sleep_s())
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            self.finished.set()

    async def step(self) -> bool:
        """One look at the state and whatever it calls for; True once it is over."""
        state = await self.store.get_state(self.sid)
        esc = state.escalation
        if esc.task_id != self.task:
            log.warning(
                "escalation replaced by another task", session_id=self.sid, task_id=self.task
            )
            return True
        if escalation_final(esc.status, esc.detail):
            return True
        self.timers.hint = float("inf")
        round_due = self.watchdog.round_due()
        redial = esc.status is S.FAILED and esc.detail not in FINAL_REASONS
        # Before the next person is rung after one whose phone rang, the caller is looked at
        # afresh: one who hung up while it rang out is not handed to anyone else.
        rang = redial and esc.human_call_sid is not None
        if await self.watchdog.look_at_caller(state, self.req.call_sid, round_due or rang):
            return False
        if esc.status is S.NONE or redial:
            await self._dial_next(esc)
            return False
        if await self.watchdog.enforce_deadlines(esc) or await self._hand_over(esc):
            return False
        if round_due and esc.human_call_sid:
            await self.watchdog.watch(esc.attempts, esc.human_call_sid)
        return False

    # ----------------------------------------------------------------- actions

    async def _dial_next(self, esc: EscalationInfo) -> None:
        """Ring the next person on the list (or end the escalation: nobody is left)."""
        attempt = esc.attempts + 1
        person = await self._start_attempt(esc, attempt)
        if person is None:
            return
        self.timers.since("create", attempt)
        self.timers.since("ring", attempt)
        await self.dialer.place(self.sid, self.task, attempt, person)

    async def _start_attempt(self, esc: EscalationInfo, attempt: int) -> StaffContact | None:
        """Attempt ``attempt`` (CALLING) for the first person on the list; who, or None
        when it did not start (nobody left: the escalation is ``exhausted``)."""
        async with self.lock:
            queue = self.hunt.people(esc)
            if not queue:

                def exhausted(state: ConversationState) -> Decision | None:
                    e = state.escalation
                    if e.attempts != esc.attempts or not can_start_attempt(e.status, e.detail):
                        return None
                    return Decision(S.FAILED, "exhausted")

                await self.committer.commit(self.sid, self.task, exhausted)
                return None
            person, rest = queue[0], queue[1:]

            def start(_state: ConversationState) -> Decision | None:
                return Decision(
                    new_attempt=attempt, staff_name=person.name, ringing=person, hunt=rest
                )

            change = await self.committer.commit(self.sid, self.task, start)
            if change is None or change.status is not S.CALLING or change.attempt != attempt:
                return None
            self.hunt.started(attempt, person, rest)
        return person

    async def _hand_over(self, esc: EscalationInfo) -> bool:
        """CONFIRMED: move the caller once "connecting you" played (or its wait is over);
        IN_CONFERENCE and a stale RETURNING marker: bring the caller back again. Whether
        it acted."""
        attempt = esc.attempts
        if esc.status is S.CONFIRMED:
            heard = self.confirmed_turn in self.played
            if (
                self.timers.due(self.settings.confirm_speech_timeout_s, "confirmed", attempt)
                or heard
            ):
                waited = self.timers.since("confirmed", attempt)
                if not heard:
                    log.warning(
                        "'connecting you' turn not reported played; moving the caller anyway",
                        session_id=self.sid,
                        waited_s=round(waited, 1),
                    )
                since = self.timers.since("moving", attempt) if esc.detail == MOVING else 0.0
                await self.handoff.move_caller(
                    self.sid, self.task, attempt, self.req.call_sid, since
                )
                return True
        elif (
            esc.status is S.IN_CONFERENCE
            and esc.detail == RETURNING
            and self.timers.due(self.handoff.marker_timeout_s, "returning", attempt)
        ):
            since = self.timers.since("returning", attempt)
            await self.handoff.human_left(self.sid, self.task, attempt, since=lambda: since)
            return True
        return False
