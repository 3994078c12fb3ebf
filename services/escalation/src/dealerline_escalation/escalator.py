"""The escalation service's core, as the service creates it: :class:`Escalator` builds the
parts every escalation shares (the write path, the facts, the handoff, dialing, the
metrics), takes the ``escalation.request`` work (:meth:`Escalator.handle_request`) and
runs one :class:`~.run.EscalationRun` per escalation this replica owns.

Two kinds of code change an escalation, and both go through the one write path
(:mod:`.commit`): *facts* about the person's call (:mod:`.facts`: Twilio status callbacks,
the key-press webhooks, conference events, the watchdog's REST fetches), which may reach
any replica, and the *owner* (:mod:`.run`), the replica whose JetStream consumer holds the
request. The request is acknowledged only when the escalation is over.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Bus, Reject
from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationRequest, HumanCallStatus, loads
from dealerline_common.metrics import Metrics
from dealerline_common.state import ConversationState, EscalationInfo
from dealerline_common.state_store import StateStore

from .announce import Announcer
from .changes import Unchanged
from .commit import Committer
from .dialing import Dialer
from .facts import Facts
from .handoff import Handoff
from .machine import escalation_final
from .metrics import EscalationMetrics
from .run import EscalationRun
from .settings import EscalationSettings
from .staff_check import StaffDirectory
from .twilio_client import CallControl
from .urls import Urls

log = get_logger(__name__)

S = HumanCallStatus
Clock = Callable[[], float]

# Escalations of a session that stayed non-final this long are abandoned (their owner's
# request was dropped): a new request may take the session over.
ABANDONED_AFTER_S = 3600.0


def classify(esc: EscalationInfo, task_id: str, now: float) -> str:
    """What a request for ``task_id`` is, given the session's escalation: "new", "resume"
    (this task is under way: a redelivery), "done" (this task is over) or "busy" (another
    escalation of the session is running)."""
    if esc.task_id == task_id:
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


class Escalator:
    """Shared by the webhooks, the work consumer and every :class:`EscalationRun`."""

    def __init__(
        self,
        settings: EscalationSettings,
        bus: Bus,
        store: StateStore,
        calls: CallControl,
        metrics: Metrics,
        staff: StaffDirectory,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.calls = calls
        self.staff = staff
        self.m = EscalationMetrics(metrics)
        self.clock = clock
        self.wall = wall
        self.runs: dict[str, EscalationRun] = {}
        self.urls = Urls(settings.public_url or "", settings.gateway_public_url or "")
        announcer = Announcer(store, bus, self.m, wall)
        self.committer = Committer(store, announcer, self.m, wall)
        self.dialer = Dialer(
            calls,
            self.committer,
            store,
            self.urls,
            self.m,
            staff,
            from_number=settings.from_number or "",
            ring_timeout_s=settings.ring_timeout_s,
        )
        self.handoff = Handoff(
            self.committer,
            store,
            calls,
            self.dialer,
            self.urls,
            announcer,
            marker_timeout_s=max(10.0, 3 * settings.twilio_request_timeout_s),
        )
        self.facts = Facts(self.committer, store, self.handoff, self.m)

    def new_run(self, req: EscalationRequest, *, resumed: bool = False) -> EscalationRun:
        """The owner of ``req``'s escalation (not started)."""
        return EscalationRun(
            req,
            settings=self.settings,
            bus=self.bus,
            store=self.store,
            clock=self.clock,
            calls=self.calls,
            committer=self.committer,
            facts=self.facts,
            handoff=self.handoff,
            dialer=self.dialer,
            metrics=self.m,
            resumed=resumed,
        )

    async def begin(self, req: EscalationRequest) -> str:
        """Record the request in the state: "new", "resume" (this task is under way: a
        redelivery), "done" (this task is over), "busy" (another escalation of the session
        is running), or "unknown" (no such session)."""
        current, _ = await self.store.get_state_with_version(req.session_id)
        if current is None:
            return "unknown"
        now = self.wall()
        outcome = [classify(current.escalation, req.task_id, now)]
        if outcome[0] != "new":
            return outcome[0]

        def mutate(state: ConversationState) -> None:
            outcome[0] = classify(state.escalation, req.task_id, now)
            if outcome[0] != "new":
                raise Unchanged
            state.escalation = EscalationInfo(
                task_id=req.task_id, reason=req.reason or state.escalation.reason
            )
            state.escalation_in_progress = True
            if state.call_sid is None:
                state.call_sid = req.call_sid

        with contextlib.suppress(Unchanged):
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
        await self._own(req, resumed=kind == "resume")

    async def _own(self, req: EscalationRequest, *, resumed: bool) -> None:
        """Run ``req``'s escalation here until it is over."""
        run = self.new_run(req, resumed=resumed)
        self.runs[req.session_id] = run
        self.m.active.inc()
        try:
            await run.run()
        finally:
            self.m.active.dec()
            self.runs.pop(req.session_id, None)
