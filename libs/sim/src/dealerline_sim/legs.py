"""Call legs as Twilio runs them: one call's state, its status callbacks, and its control.

A :class:`CallLeg` is one call as Twilio's REST API sees it. Two kinds exist:

- **outbound-api** legs, made by ``POST Calls.json``, ring a phone where a scripted human
  (``dealerline_sim.humans.HumanScript``) picks up or not;
- **inbound** legs, the customer calls the ``PhoneSimulator`` places: the leg is the host
  of the :class:`~dealerline_sim.call.Call` (its Media Streams), so the application can
  redirect it into a conference and back to a new stream.

Status moves ``queued → initiated → ringing → in-progress → completed`` (or ends
``busy``/``no-answer``/``failed``/``canceled``); REST shows ``initiated`` as ``queued``, as
Twilio does. Each change is a ``status`` timeline event and, for subscribed events, a
signed status callback with ``SequenceNumber`` from 0, an RFC 2822 ``Timestamp`` and
``CallbackSource=call-progress-events`` (see ``dealerline_sim.leg_status``).

Once answered the leg fetches its ``Url`` (signed POST with ``CallSid``, ``From``, ``To``,
``CallStatus=in-progress``, ``Direction``, ``AccountSid``, ``ApiVersion``) and executes the
TwiML (``dealerline_sim.leg_twiml``; ``<Dial><Conference>`` in ``dealerline_sim.leg_dial``,
the requests and their failures in ``dealerline_sim.leg_webhooks``).

A REST redirect interrupts whatever runs: a stream gets ``stop`` and closes, a conference
is left (``participant-leave``) and the live ``<Dial>``'s ``action`` is requested (its
answer ignored), then the new ``Url``/``Twiml`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from dealerline_common.logs import get_logger, mask_phone
from dealerline_sim.callbacks import Callback
from dealerline_sim.conference import Participant
from dealerline_sim.humans import HumanScript
from dealerline_sim.leg_context import Doc, LegContext
from dealerline_sim.leg_status import (
    FINAL_STATUSES,
    call_resource,
    callback_event,
    check_status_change,
    default_call_params,
    final_callback_params,
    format_number,
    subscribed_events,
)
from dealerline_sim.leg_twiml import after_redirect, run_document, run_first_stream, run_inline
from dealerline_sim.leg_webhooks import fetch
from dealerline_sim.twiml import SimulatorError

if TYPE_CHECKING:
    from dealerline_sim.call import Call
    from dealerline_sim.call_records import StreamRecord

__all__ = [
    "FINAL_STATUSES",
    "CallLeg",
    "LegContext",
    "format_number",
]

log = get_logger(__name__)

_PARTICIPANT_LEFT: Final = {
    "party": "participant_hung_up",
    "redirect": "participant_updated_via_api",
    "api": "call_ended_via_api",
    "twiml": "participant_hung_up",
}


class CallLeg:
    """One call leg: state, status callbacks, and the task that runs its TwiML."""

    def __init__(
        self,
        ctx: LegContext,
        *,
        sid: str,
        direction: str,
        from_number: str,
        to_number: str,
        status: str,
        url: str | None = None,
        method: str = "POST",
        twiml: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: frozenset[str] = frozenset(),
        timeout_s: float = 60.0,
        machine_detection: str | None = None,
        human: HumanScript | None = None,
        customer: Call | None = None,
    ) -> None:
        self.ctx = ctx
        self.sid = sid
        self.account_sid = ctx.account_sid
        self.direction = direction
        self.from_number = from_number
        self.to_number = to_number
        self.parent_call_sid: str | None = None
        self.url = url
        self.method = method
        self.twiml = twiml
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status_callback_events = subscribed_events(status_callback_events, status_callback)
        self.timeout_s = timeout_s
        self.machine_detection = machine_detection
        self.human = human
        self.customer = customer
        self.phone_number_sid = "PN" + secrets.token_hex(16)
        now = ctx.clock.now_s()
        self.status = status
        self.history: list[tuple[str, float]] = [(status, now)]
        self.created_sim_s = now
        self.updated_sim_s = now
        self.start_sim_s: float | None = now if direction == "inbound" else None
        self.answered_sim_s: float | None = None
        self.end_sim_s: float | None = None
        self.answered_by: str | None = None
        self.hangup_by: str | None = None
        self.heard: list[str] = []  # every <Say> this leg heard, in order
        self.pressed: list[str] = []  # the keys pressed at each <Gather> that got input
        self.gathers = 0
        self.participant: Participant | None = None
        self.dial_action: tuple[str, str] | None = None
        self.done = asyncio.Event()
        self._callback_seq = itertools.count(0)
        self._runner: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._control = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<CallLeg {self.sid} {self.direction} {self.status}>"

    # -- views ------------------------------------------------------------------------------

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def rest_status(self) -> str:
        """What ``GET Calls/{sid}.json`` says (``initiated`` is not a REST status)."""
        return "queued" if self.status == "initiated" else self.status

    @property
    def statuses(self) -> list[str]:
        return [s for s, _ in self.history]

    @property
    def duration_s(self) -> int | None:
        """Whole simulated seconds between answer and end (None while not ended)."""
        if self.answered_sim_s is None or self.end_sim_s is None:
            return None
        return int(round(self.end_sim_s - self.answered_sim_s))

    @property
    def callbacks_enabled(self) -> bool:
        return self.status_callback is not None

    def resource(self) -> dict[str, Any]:
        """The REST Call resource (``api.v2010.account.call`` of twilio-oai)."""
        return call_resource(self, self.ctx.clock)

    def call_params(self) -> dict[str, str]:
        """The parameters Twilio sends about this call on every request."""
        if self.customer is not None and self.customer.webhook_params:
            params = dict(self.customer.webhook_params)
        else:
            params = default_call_params(
                account_sid=self.account_sid,
                sid=self.sid,
                direction=self.direction,
                from_number=self.from_number,
                to_number=self.to_number,
            )
        params["CallStatus"] = self.status
        if self.parent_call_sid:
            params["ParentCallSid"] = self.parent_call_sid
        if self.machine_detection and self.answered_by:
            params["AnsweredBy"] = self.answered_by
        return params

    # -- state machine ----------------------------------------------------------------------

    def _set_status(self, new: str) -> None:
        old = self.status
        if new == old:
            return
        check_status_change(self.sid, old, new)
        now = self.ctx.clock.now_s()
        self.status = new
        self.updated_sim_s = now
        self.history.append((new, now))
        if new in FINAL_STATUSES:
            self.end_sim_s = now
        self.ctx.timeline.record("status", self.sid, status=new, previous=old)
        log.info(
            "call_status",
            call_sid=self.sid,
            status=new,
            previous=old,
            to=mask_phone(self.to_number),
        )
        self._status_callback(new)

    def _status_callback(self, status: str) -> None:
        if self.status_callback is None:
            return
        event = callback_event(status)
        if event is None or event not in self.status_callback_events:
            return
        seq = next(self._callback_seq)
        params = self.call_params()
        params.update(
            {
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(seq),
                "Timestamp": self.ctx.clock.rfc2822(),
            }
        )
        if status in FINAL_STATUSES:
            params.update(final_callback_params(status, self.duration_s or 0))
        self.ctx.dispatcher.submit(
            Callback(
                kind="call",
                key=self.sid,
                url=self.status_callback,
                method=self.status_callback_method,
                params=params,
                status=status,
                sequence=seq,
                call_sid=self.sid,
                to=self.to_number,
            )
        )

    def _finish(self, status: str, by: str | None) -> None:
        """The call is over (the stream and any conference are already left)."""
        if self.is_final:
            return
        if by is not None:
            self.hangup_by = by
            self.ctx.timeline.record("hangup", self.sid, by=by, status=status)
        self._set_status(status)
        self.ctx.dispatcher.finish(self.sid)
        self.done.set()
        if self.customer is not None:
            self.customer.in_conference = None
            self.customer.end_call()
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()

    # -- starting ---------------------------------------------------------------------------

    def start_outbound(self) -> None:
        self._spawn_runner(self._outbound(), "dial")

    def _spawn_runner(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        self._runner = self.ctx.tasks.spawn(self._guarded(coro), f"leg-{what}-{self.sid[:12]}")

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        """A simulator bug or an unusable document must end the call visibly, never leave
        it hanging in-progress with a dead task."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.ctx.error(self.sid, 11200, f"simulator could not go on: {exc!r}")
            log.exception("leg_failed", call_sid=self.sid)
            if not self.is_final:
                with contextlib.suppress(Exception):
                    await self.hang_up_from_twiml("error")

    async def _outbound(self) -> None:
        ctx = self.ctx
        await ctx.clock.sleep(ctx.dial_delay_s)
        self.start_sim_s = ctx.clock.now_s()
        self._set_status("initiated")
        script = self.human
        if script is None:
            ctx.error(
                self.sid, 13224, f"no scripted human at {mask_phone(self.to_number)}: call failed"
            )
            self._finish("failed", None)
            return
        if script.outcome == "failed":
            await ctx.clock.sleep(ctx.dial_delay_s)
            self._finish("failed", None)
            return
        await ctx.clock.sleep(ctx.dial_delay_s)
        self._set_status("ringing")
        if script.outcome == "no-answer" or script.ring_s >= self.timeout_s:
            await ctx.clock.sleep(self.timeout_s)
            self._finish("no-answer", None)
            return
        await ctx.clock.sleep(script.ring_s)
        if script.outcome == "busy":
            self._finish("busy", None)
            return
        self.answered_sim_s = ctx.clock.now_s()
        if self.machine_detection:
            self.answered_by = script.answered_by
        self._set_status("in-progress")
        if script.hang_up_after_s is not None:
            self._watchdog = ctx.tasks.spawn(
                self._hang_up_later(script.hang_up_after_s), f"leg-hangup-{self.sid[:12]}"
            )
        if self.twiml is not None:
            await run_inline(self, self.twiml)
        else:
            assert self.url is not None
            doc = await fetch(self, self.url, self.method, "answer")
            if isinstance(doc, Doc):
                await run_document(self, doc)

    async def _hang_up_later(self, after_s: float) -> None:
        await self.ctx.clock.sleep(after_s)
        await self.party_hung_up("human")

    # -- the customer's call (host of a phone.Call) -------------------------------------------

    def stream_started(self, call: Call, stream: StreamRecord) -> None:
        self.ctx.timeline.record(
            "stream",
            self.sid,
            event="start",
            stream_sid=stream.stream_sid,
            index=stream.index,
            parameters=dict(stream.parameters),
            reason=None,
        )
        if self.status == "ringing":
            self.answered_sim_s = self.ctx.clock.now_s()
            self._set_status("in-progress")
        if stream.index == 1 and self._runner is None and not self._closed:
            self._spawn_runner(run_first_stream(self, stream), "stream")

    def stream_ended(self, call: Call, stream: StreamRecord) -> None:
        if stream.end_reason == "open-failed" and stream.index == 1 and self.status == "ringing":
            # the incoming call's TwiML could not connect its stream (31920): it fails
            self.ctx.error(self.sid, 31920, f"the Media Stream to {stream.url} did not open")
            self._finish("failed", None)
            return
        self.ctx.timeline.record(
            "stream",
            self.sid,
            event="stop",
            stream_sid=stream.stream_sid,
            index=stream.index,
            parameters=dict(stream.parameters),
            reason=stream.end_reason,
            stop_sent=stream.stop_sent,
        )

    def spoke_without_stream(self, call: Call, text: str | None) -> None:
        self.ctx.timeline.record("speech", self.sid, text=text, conference=call.in_conference)

    async def caller_hung_up(self, call: Call) -> None:
        await self.party_hung_up("caller")

    # -- control from outside (REST, scripts, the caller) ------------------------------------

    async def redirect(self, *, url: str | None, method: str, twiml: str | None) -> None:
        """REST ``Url``/``Twiml`` update of an in-progress call."""
        async with self._control:
            if self.status != "in-progress":
                raise SimulatorError("Call is not in-progress. Cannot redirect.")
            dial_action = self.dial_action
            await self._stop_runner()
            await self._leave_activity("redirect")
            self.dial_action = None
            self._spawn_runner(after_redirect(self, url, method, twiml, dial_action), "redirect")

    async def end(self, requested: str) -> None:
        """REST ``Status=completed|canceled``."""
        async with self._control:
            if self.is_final:
                return
            if requested == "canceled" and self.status == "in-progress":
                return  # Twilio ignores canceled for an answered call
            await self._stop_runner()
            if self.status == "in-progress":
                await self._leave_activity("api")
                self._finish("completed", "api")
            else:
                self._finish("canceled", "api")

    async def party_hung_up(self, by: str) -> None:
        """The person on this leg hung up (the scripted human, or the test's caller)."""
        async with self._control:
            if self.is_final or self._closed:
                return
            await self._stop_runner()
            await self._leave_activity("party")
            self._finish("completed" if self.status == "in-progress" else "canceled", by)

    async def shutdown(self) -> None:
        """The simulator closes: stop executing, send nothing more."""
        self._closed = True
        await self._stop_runner()

    async def _stop_runner(self) -> None:
        task = self._runner
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        await asyncio.wait([task])

    async def _leave_activity(self, why: str) -> None:
        """Leave the conference (``participant-leave``) and end the stream (``stop``)."""
        p = self.participant
        if p is not None and p.present:
            self.ctx.conferences.leave(
                p,
                _PARTICIPANT_LEFT[why],
                "in-progress" if why == "redirect" else "completed",
            )
        self.participant = None
        call = self.customer
        if call is not None:
            call.in_conference = None
            if call.current_stream is not None:
                await call.end_stream("redirect" if why == "redirect" else "api-hangup")

    async def hang_up_from_twiml(self, by: str) -> None:
        """Hang up from inside the runner (``<Hangup/>``, end of TwiML, the human, an
        application error)."""
        await self._leave_activity("twiml" if by != "human" else "party")
        self._finish("completed" if self.status == "in-progress" else "canceled", by)
