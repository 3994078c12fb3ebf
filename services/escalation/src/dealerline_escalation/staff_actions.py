"""Staff actions on a running escalation, answered by its owner alone: a claim or a pass
from the dashboard (request/reply on ``call.<sid>.staff``) and duty changes
(``staff.duty``: a person going off duty is not rung later). Each reorders the run's
:class:`~.hunt.HuntList` and keeps it in the state, so a resumed run goes on with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from pydantic import ValidationError

from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import (
    HumanCallStatus,
    StaffAction,
    StaffActionReply,
    StaffContact,
    StaffDutyChanged,
    loads,
)
from dealerline_common.state import ConversationState, EscalationInfo
from dealerline_common.state_store import StateStore, StateStoreError

from .changes import Decision
from .commit import Committer, Decide
from .dialing import Dialer
from .hunt import HuntList, e164, same_person
from .machine import escalation_final
from .metrics import EscalationMetrics

log = get_logger(__name__)

S = HumanCallStatus

# The attempt is ringing or answered but not yet accepted: a claim or a pass may still
# end it.
LIVE = (S.CALLING, S.RINGING, S.WAITING_CONFIRMATION)
_TRIES = 5


def accepted(detail: str) -> StaffActionReply:
    return StaffActionReply(accepted=True, detail=detail)


def refused(detail: str) -> StaffActionReply:
    return StaffActionReply(accepted=False, detail=detail)


def closed(esc: EscalationInfo, task_id: str, mine: bool) -> str | None:
    """Why no claim or pass can change the escalation any more; None if one can."""
    if esc.task_id != task_id or escalation_final(esc.status, esc.detail):
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


def end_attempt(attempt: int, reason: str, statuses: tuple[HumanCallStatus, ...]) -> Decide:
    """A decision that fails ``attempt`` for ``reason`` while it is in ``statuses``."""

    def decide(state: ConversationState) -> Decision | None:
        e = state.escalation
        if e.attempts != attempt or e.status not in statuses:
            return None
        return Decision(S.FAILED, reason)

    return decide


class StaffActions:
    """Claims, passes and duty changes for one running escalation. ``lock`` is the run's:
    held while the list is read and changed together with the state, so an action never
    races the choice of the next person; ``wake`` wakes the run after an accepted one."""

    def __init__(
        self,
        session_id: str,
        task_id: str,
        *,
        hunt: HuntList,
        lock: asyncio.Lock,
        wake: asyncio.Event,
        store: StateStore,
        committer: Committer,
        dialer: Dialer,
        metrics: EscalationMetrics,
    ) -> None:
        self.sid = session_id
        self.task = task_id
        self.hunt = hunt
        self.lock = lock
        self.wake = wake
        self.store = store
        self.committer = committer
        self.dialer = dialer
        self.m = metrics

    async def keep_hunt(self) -> None:
        """Write the run's list into the state (under the run's lock), so a replica that
        resumes the escalation rings the same people in the same order."""
        hunt = self.hunt.snapshot()

        def keep(state: ConversationState) -> Decision | None:
            return Decision(hunt=hunt) if state.escalation.hunt != hunt else None

        await self.committer.commit(self.sid, self.task, keep)

    async def _escalation(self) -> EscalationInfo:
        return (await self.store.get_state(self.sid)).escalation

    # ----------------------------------------------------------------- claim

    async def claim(self, person: StaffContact, hang_ups: list[str]) -> StaffActionReply:
        """``person`` is rung next: at once if the attempt under way is someone else's
        that nobody answered (that leg is let go, its person goes back on the list right
        after), after the answered one if its person does not accept. Call sids to end
        (after the reply) go to ``hang_ups``."""
        number = e164(person.phone)
        if number is None:
            return refused(f"{person.name}'s phone number is not a valid E.164 number")
        person = person.model_copy(update={"phone": number})
        return await self._until_settled(lambda: self._claim_once(person, hang_ups))

    async def _claim_once(
        self, person: StaffContact, hang_ups: list[str]
    ) -> StaffActionReply | None:
        """One look at the state for a claim; None when it changed meanwhile (look again)."""
        look = await self._look(person)
        if isinstance(look, StaffActionReply):
            return look
        esc, current, mine = look
        if mine and esc.status is S.WAITING_CONFIRMATION:
            return accepted("you have answered: press 1 on your phone to take the call")
        if mine and esc.status in LIVE:
            return accepted("your phone is already being rung")
        self.hunt.back_on_duty(person.staff_id)  # claiming is coming back on
        self.hunt.put_at(0, person)
        who = esc.staff_name or "the team member"
        if esc.status is S.WAITING_CONFIRMATION:
            await self.keep_hunt()
            return accepted(f"{who} answered; you are rung next if they do not accept")
        if esc.status in (S.CALLING, S.RINGING):
            change = await self.committer.commit(
                self.sid,
                self.task,
                end_attempt(esc.attempts, "canceled", (S.CALLING, S.RINGING)),
            )
            if change is None:
                return None  # answered or failed meanwhile: look again
            if current is not None and not self.hunt.is_off_duty(current):
                self.hunt.put_at(1, current)
            await self.keep_hunt()
            if change.human_call_sid:
                hang_ups.append(change.human_call_sid)
            return accepted(f"the call to {who} was let go; ringing you now")
        await self.keep_hunt()
        return accepted("ringing you now")

    # ----------------------------------------------------------------- pass

    async def pass_(self, person: StaffContact, hang_ups: list[str]) -> StaffActionReply:
        """``person`` is taken off the rest of the list; if they are being rung (or have
        answered without accepting) their leg is ended ("declined") and the next person is
        rung. Call sids to end (after the reply) go to ``hang_ups``."""
        person = person.model_copy(update={"phone": e164(person.phone) or person.phone})
        return await self._until_settled(lambda: self._pass_once(person, hang_ups))

    async def _look(
        self, person: StaffContact
    ) -> tuple[EscalationInfo, StaffContact | None, bool] | StaffActionReply:
        """The escalation now, the person its current attempt rings and whether that is
        ``person``; or the refusal when the escalation is closed to staff actions."""
        esc = await self._escalation()
        self.hunt.people(esc)
        current = self.hunt.rung.get(esc.attempts)
        mine = current is not None and same_person(current, person)
        why = closed(esc, self.task, mine)
        return refused(why) if why is not None else (esc, current, mine)

    async def _until_settled(
        self, once: Callable[[], Awaitable[StaffActionReply | None]]
    ) -> StaffActionReply:
        """Run ``once`` under the run's lock until it answers (None: the state changed
        meanwhile, look again), at most ``_TRIES`` times."""
        async with self.lock:
            for _ in range(_TRIES):
                reply = await once()
                if reply is not None:
                    return reply
        return refused("the escalation kept changing; try again")

    async def _pass_once(
        self, person: StaffContact, hang_ups: list[str]
    ) -> StaffActionReply | None:
        """One look at the state for a pass; None when it changed meanwhile (look again)."""
        look = await self._look(person)
        if isinstance(look, StaffActionReply):
            return look
        esc, current, mine = look
        listed = self.hunt.drop(person)
        if listed:
            await self.keep_hunt()
        if mine and esc.status in LIVE:
            change = await self.committer.commit(
                self.sid, self.task, end_attempt(esc.attempts, "declined", LIVE)
            )
            if change is None:
                return None  # accepted or failed meanwhile: look again
            if change.human_call_sid:
                hang_ups.append(change.human_call_sid)
            return accepted("your call was ended; the next person is rung")
        if listed:
            return accepted("you were taken off this escalation's list")
        return accepted("you are not on this escalation's list; nothing changed")

    # ----------------------------------------------------------------- bus input

    async def on_action(self, msg: Msg) -> None:
        """A claim or pass from the dashboard (request/reply): only this run, the owner of
        the escalation, answers, so a reply means the escalation is live here."""
        hang_ups: list[str] = []
        action, reply = await self._handle(msg, hang_ups)
        kind = action.action if action is not None else "invalid"
        self.m.staff_actions.labels(kind, "accepted" if reply.accepted else "refused").inc()
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
            await self.dialer.hang_up(call_sid, self.sid)
        if reply.accepted:
            self.wake.set()

    async def _handle(
        self, msg: Msg, hang_ups: list[str]
    ) -> tuple[StaffAction | None, StaffActionReply]:
        """The action in ``msg`` (None if malformed) and the reply to it."""
        try:
            action = loads(StaffAction, msg.data)
            if action.session_id != self.sid:
                raise ValueError(f"session_id {action.session_id!r} is not {self.sid!r}")
        except (ValidationError, ValueError) as exc:
            return None, refused(f"malformed staff action: {str(exc).splitlines()[0]}")
        handle = self.claim if action.action == "claim" else self.pass_
        try:
            return action, await handle(action.staff, hang_ups)
        except (StateStoreError, OSError) as exc:
            log.warning("staff action failed", session_id=self.sid, error=str(exc))
            return action, refused("the escalation could not be changed just now; try again")

    async def on_duty(self, msg: Msg) -> None:
        """Someone went off duty: they are not rung later by this escalation (a leg already
        ringing them goes on). Coming on duty adds nobody to a running escalation."""
        try:
            duty = loads(StaffDutyChanged, msg.data)
        except ValidationError:
            log.warning("malformed staff duty change ignored", session_id=self.sid)
            return
        if duty.on_duty:
            return
        async with self.lock:
            removed = self.hunt.go_off_duty(duty.staff_id)
            if removed:
                with contextlib.suppress(StateStoreError, OSError):
                    await self.keep_hunt()  # else the next attempt's commit keeps it
        if removed:
            self.m.duty_removals.inc()
            log.info(
                "off duty: taken off the escalation's list",
                session_id=self.sid,
                staff=duty.name,
                staff_id=duty.staff_id,
            )
