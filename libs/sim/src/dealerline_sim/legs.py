"""Call legs as Twilio runs them: the state machine, status callbacks, the TwiML executor.

A :class:`CallLeg` is one call as Twilio's REST API sees it. Two kinds exist:

- **outbound-api** legs, made by ``POST Calls.json``, ring a phone where a scripted human
  (``dealerline_sim.humans.HumanScript``) picks up or not;
- **inbound** legs, the customer calls the ``PhoneSimulator`` places: the leg is the host
  of the :class:`~dealerline_sim.phone.Call` (its Media Streams), so the application can
  redirect it into a conference and back to a new stream.

Status moves ``queued → initiated → ringing → in-progress → completed`` (or ends
``busy``/``no-answer``/``failed``/``canceled``); REST shows ``initiated`` as ``queued``, as
Twilio does. Each change is a ``status`` timeline event and, for subscribed events
(``StatusCallbackEvent`` ``initiated ringing answered completed``; ``completed`` alone when
none was given), a signed status callback with ``SequenceNumber`` from 0, an RFC 2822
``Timestamp``, ``CallbackSource=call-progress-events`` and, when final, ``CallDuration``,
``Duration`` (billed minutes) and ``SipResponseCode``.

Once answered the leg fetches its ``Url`` (signed POST with ``CallSid``, ``From``, ``To``,
``CallStatus=in-progress``, ``Direction``, ``AccountSid``, ``ApiVersion``) and executes the
TwiML: ``<Say>`` (recorded as heard, ~2.5 words per simulated second), ``<Play>``,
``<Pause>``, ``<Gather>`` (the human's keys → POST to ``action`` with ``Digits`` and
``FinishedOnKey``; no input → the next verb), ``<Redirect>``, ``<Hangup/>``/``<Reject/>``,
``<Dial><Conference>`` (see ``dealerline_sim.conference``; afterwards the Dial's ``action``
or the next verb), ``<Connect><Stream>`` (customer legs: a new Media Stream). Running out
of verbs hangs up. A fetch that fails (not 200, not XML, bad TwiML) is what Twilio reports
as 11200/12300/12100: an ``error`` event, "an application error has occurred", hang-up.

A REST redirect interrupts whatever runs: a stream gets ``stop`` and closes, a conference
is left (``participant-leave``) and the live ``<Dial>``'s ``action`` is requested (its
answer ignored), then the new ``Url``/``Twiml`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from dealerline_common.logs import get_logger, mask_phone
from dealerline_sim.callbacks import Callback, CallbackDispatcher, WebhookClient
from dealerline_sim.conference import Conferences, Participant
from dealerline_sim.humans import HumanScript
from dealerline_sim.tasks import TaskSet
from dealerline_sim.timeline import SimClock, Timeline
from dealerline_sim.twiml import (
    SimulatorError,
    TwimlError,
    TwimlVerb,
    parse_twiml,
    stream_instruction,
)

if TYPE_CHECKING:
    from dealerline_sim.phone import Call, StreamRecord

__all__ = [
    "FINAL_STATUSES",
    "CallLeg",
    "LegContext",
    "format_number",
]

log = get_logger(__name__)

API_VERSION: Final = "2010-04-01"
FINAL_STATUSES: Final = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_NEXT: Final[dict[str, frozenset[str]]] = {
    "queued": frozenset({"initiated", "canceled", "failed"}),
    "initiated": frozenset({"ringing", "canceled", "failed", "busy"}),
    "ringing": frozenset({"in-progress", "busy", "no-answer", "failed", "canceled", "completed"}),
    "in-progress": frozenset({"completed"}),
}
_EVENT_OF: Final = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}
_SIP_CODE: Final = {
    "completed": "200",
    "busy": "486",
    "no-answer": "487",
    "canceled": "487",
    "failed": "404",
}
APPLICATION_ERROR_SAY: Final = "We are sorry, an application error has occurred. Goodbye."
_PARTICIPANT_LEFT: Final = {
    "party": "participant_hung_up",
    "redirect": "participant_updated_via_api",
    "api": "call_ended_via_api",
    "twiml": "participant_hung_up",
}


class LegContext(Protocol):
    """What a leg needs from the simulator that owns it (``TwilioSim``)."""

    account_sid: str
    clock: SimClock
    timeline: Timeline
    dispatcher: CallbackDispatcher
    webhooks: WebhookClient
    conferences: Conferences
    tasks: TaskSet
    dial_delay_s: float

    def error(self, call_sid: str | None, code: int, message: str) -> None: ...


def format_number(number: str) -> str:
    """Twilio's ``*_formatted``: ``(415) 555-0100`` for NANP numbers, else as given."""
    if len(number) == 12 and number.startswith("+1") and number[1:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


@dataclass
class _Doc:
    verbs: list[TwimlVerb]
    url: str | None


class _End:
    """The leg is over: stop executing."""


END: Final = _End()
_Step = _Doc | _End | None  # None: go on with the next verb


def _speech_s(text: str) -> float:
    return max(0.5, len(text.split()) / 2.5)


async def _first_of(events: dict[str, asyncio.Event], within_s: float | None) -> str | None:
    """The name of the first event set (checked in order); None after ``within_s`` (wall)."""
    for name, event in events.items():
        if event.is_set():
            return name
    waiters = {
        name: asyncio.create_task(event.wait(), name=f"leg-wait-{name}")
        for name, event in events.items()
    }
    try:
        await asyncio.wait(waiters.values(), timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters.values():
            task.cancel()
        await asyncio.gather(*waiters.values(), return_exceptions=True)
    for name, event in events.items():
        if event.is_set():
            return name
    return None


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
        self.status_callback_events = status_callback_events or (
            frozenset({"completed"}) if status_callback else frozenset()
        )
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
        clock = self.ctx.clock
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        final_ok = self.status == "completed"
        return {
            "sid": self.sid,
            "date_created": clock.rfc2822(self.created_sim_s),
            "date_updated": clock.rfc2822(self.updated_sim_s),
            "parent_call_sid": self.parent_call_sid,
            "account_sid": self.account_sid,
            "to": self.to_number,
            "to_formatted": format_number(self.to_number),
            "from": self.from_number,
            "from_formatted": format_number(self.from_number),
            "phone_number_sid": self.phone_number_sid,
            "status": self.rest_status,
            "start_time": clock.rfc2822(self.start_sim_s) if self.start_sim_s is not None else None,
            "end_time": clock.rfc2822(self.end_sim_s) if self.end_sim_s is not None else None,
            "duration": str(self.duration_s or 0) if final_ok else None,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": base + ".json",
            "subresource_uris": {
                name: f"{base}/{path}.json"
                for name, path in (
                    ("notifications", "Notifications"),
                    ("recordings", "Recordings"),
                    ("payments", "Payments"),
                    ("events", "Events"),
                    ("siprec", "Siprec"),
                    ("streams", "Streams"),
                    ("transcriptions", "Transcriptions"),
                    ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                    ("user_defined_messages", "UserDefinedMessages"),
                )
            },
        }

    def call_params(self) -> dict[str, str]:
        """The parameters Twilio sends about this call on every request."""
        if self.customer is not None and self.customer.webhook_params:
            params = dict(self.customer.webhook_params)
        else:
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "CallSid": self.sid,
                "Called": self.to_number,
                "Caller": self.from_number,
                "Direction": self.direction,
                "From": self.from_number,
                "To": self.to_number,
                "CalledCountry": "US",
                "CallerCountry": "US",
                "FromCountry": "US",
                "ToCountry": "US",
            }
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
        if new not in _NEXT.get(old, frozenset()):
            raise SimulatorError(f"call {self.sid}: illegal status change {old} → {new}")
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
        event = "completed" if status in FINAL_STATUSES else _EVENT_OF.get(status)
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
            duration = self.duration_s or 0
            params["CallDuration"] = str(duration)
            params["Duration"] = str(math.ceil(duration / 60)) if duration else "0"
            params["SipResponseCode"] = _SIP_CODE[status]
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
                    await self._hangup("error")

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
            await self._run_inline(self.twiml)
        else:
            assert self.url is not None
            doc = await self._fetch(self.url, self.method, "answer")
            if isinstance(doc, _Doc):
                await self._run_document(doc)

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
            self._spawn_runner(self._first_stream(stream), "stream")

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

    async def _first_stream(self, stream: StreamRecord) -> None:
        """The incoming call's own ``<Connect><Stream>``: when it ends, go on with the rest
        of that first document (or the Connect's ``action``)."""
        call = self.customer
        assert call is not None
        verbs = parse_twiml(call.instruction.twiml)
        index = next(i for i, v in enumerate(verbs) if v.tag == "Connect")
        doc_url = call.webhook_url or None
        step = await self._after_stream(stream, verbs[index], doc_url)
        if isinstance(step, _End):
            return
        if isinstance(step, _Doc):
            await self._run_document(step)
        else:
            await self._run_document(_Doc(verbs, doc_url), start=index + 1)

    async def _after_stream(
        self, stream: StreamRecord, connect: TwimlVerb, doc_url: str | None
    ) -> _Step:
        await stream.closed.wait()
        if stream.end_reason in ("server-closed", "open-failed"):
            action = connect.attr("action")
            if action:
                return await self._fetch(
                    self._resolve(doc_url, action),
                    (connect.attr("method") or "POST").upper(),
                    "connect-action",
                )
            return None
        return END  # the caller hung up (the call's host hook finishes the leg)

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
            self._spawn_runner(self._after_redirect(url, method, twiml, dial_action), "redirect")

    async def _after_redirect(
        self,
        url: str | None,
        method: str,
        twiml: str | None,
        dial_action: tuple[str, str] | None,
    ) -> None:
        if dial_action is not None:
            action_url, action_method = dial_action
            await self._request(
                action_url,
                action_method,
                "dial-action",
                {"DialCallStatus": "completed", "DialCallDuration": "0"},
            )
        if twiml is not None:
            await self._run_inline(twiml)
            return
        assert url is not None
        doc = await self._fetch(url, method, "redirect")
        if isinstance(doc, _Doc):
            await self._run_document(doc)

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

    # -- executing TwiML --------------------------------------------------------------------

    async def _run_inline(self, twiml: str) -> None:
        try:
            verbs = parse_twiml(twiml)
        except TwimlError as exc:
            await self._application_error(12100, f"Twiml parameter: {exc}")
            return
        await self._run_document(_Doc(verbs, None))

    async def _run_document(self, doc: _Doc, start: int = 0) -> None:
        i = start
        while not self.is_final:
            if i >= len(doc.verbs):
                await self._hangup("end-of-twiml")
                return
            verb = doc.verbs[i]
            i += 1
            step = await self._verb(verb, doc.url)
            if isinstance(step, _End):
                return
            if isinstance(step, _Doc):
                doc, i = step, 0

    async def _verb(self, verb: TwimlVerb, doc_url: str | None) -> _Step:
        tag = verb.tag
        clock = self.ctx.clock
        if tag == "Say":
            loops = max(1, int(verb.number_attr("loop", 1)))
            self.heard.append(verb.text)
            self.ctx.timeline.record(
                "say",
                self.sid,
                text=verb.text,
                voice=verb.attr("voice"),
                language=verb.attr("language"),
            )
            await clock.sleep(_speech_s(verb.text) * loops)
            return None
        if tag == "Play":
            self.ctx.timeline.record("play", self.sid, url=verb.text)
            await clock.sleep(1.0 * max(1, int(verb.number_attr("loop", 1))))
            return None
        if tag == "Pause":
            length = verb.number_attr("length", 1.0)
            self.ctx.timeline.record("pause", self.sid, length=length)
            await clock.sleep(length)
            return None
        if tag in ("Hangup", "Reject"):
            await self._hangup("twiml")
            return END
        if tag == "Redirect":
            if not verb.text:
                return await self._application_error(12200, "<Redirect> has no URL")
            return await self._fetch(
                self._resolve(doc_url, verb.text),
                (verb.attr("method") or "POST").upper(),
                "redirect",
            )
        if tag == "Gather":
            return await self._gather(verb, doc_url)
        if tag == "Dial":
            return await self._dial(verb, doc_url)
        if tag == "Connect":
            return await self._connect(verb, doc_url)
        self.ctx.error(self.sid, 12200, f"<{tag}> is not supported by the simulator; skipped")
        return None

    def _resolve(self, doc_url: str | None, url: str) -> str:
        resolved = urljoin(doc_url or "", url)
        if urlsplit(resolved).scheme not in ("http", "https"):
            raise SimulatorError(f"cannot resolve {url!r} (document URL {doc_url!r})")
        return resolved

    async def _gather(self, verb: TwimlVerb, doc_url: str | None) -> _Step:
        clock = self.ctx.clock
        finish_on_key = verb.attrs.get("finishOnKey", "#")
        num_digits = int(verb.number_attr("numDigits", 0)) or None
        timeout = verb.number_attr("timeout", 5.0)
        action_attr = verb.attr("action")
        method = (verb.attr("method") or "POST").upper()
        action = self._resolve(doc_url, action_attr) if action_attr else doc_url
        for child in verb.children:
            await self._verb(child, doc_url)
        index = self.gathers
        self.gathers += 1
        keys = self.human.keys_for(index) if self.human is not None else None
        press_after = self.human.press_after_s if self.human is not None else 0.0
        digits = ""
        finished = ""
        timed_out = True
        if keys is not None and press_after <= timeout:
            await clock.sleep(press_after)
            self.pressed.append(keys)
            for key in keys:
                if finish_on_key and key == finish_on_key:
                    finished, timed_out = key, False
                    break
                digits += key
                if num_digits is not None and len(digits) >= num_digits:
                    timed_out = False
                    break
            if timed_out:
                await clock.sleep(timeout)  # waits for more keys, then submits what it has
        else:
            await clock.sleep(timeout)
        self.ctx.timeline.record(
            "gather",
            self.sid,
            digits=digits,
            finished_on_key=finished,
            timed_out=timed_out,
            action=action,
            index=index,
        )
        if digits or verb.bool_attr("actionOnEmptyResult", False):
            if action is None:
                return await self._application_error(12200, "<Gather> has no action to post to")
            return await self._fetch(
                action,
                method,
                "gather",
                {"Digits": digits, "FinishedOnKey": finished, "msg": "Gather End"},
            )
        return None

    async def _dial(self, verb: TwimlVerb, doc_url: str | None) -> _Step:
        nouns = [c for c in verb.children if c.tag == "Conference"]
        action_attr = verb.attr("action")
        method = (verb.attr("method") or "POST").upper()
        action = self._resolve(doc_url, action_attr) if action_attr else None
        if not nouns:
            self.ctx.error(self.sid, 13201, "the simulator dials only <Conference>")
            if action:
                return await self._fetch(
                    action, method, "dial-action", {"DialCallStatus": "failed"}
                )
            return None
        noun = nouns[0]
        if noun.attrs.get("statusCallback"):  # relative to the document, like every URL
            attrs = dict(noun.attrs)
            attrs["statusCallback"] = self._resolve(doc_url, attrs["statusCallback"])
            noun = TwimlVerb(noun.tag, attrs, noun.text, noun.children)
        self.dial_action = (action, method) if action else None
        p = self.ctx.conferences.join(self.sid, noun, label=None)
        self.participant = p
        if self.customer is not None:
            self.customer.in_conference = noun.text
        joined = self.ctx.clock.now_s()
        step = await self._stay_in_conference(p)
        if isinstance(step, _End):
            return step
        self.participant = None
        self.dial_action = None
        if self.customer is not None:
            self.customer.in_conference = None
        if action:
            return await self._fetch(
                action,
                method,
                "dial-action",
                {
                    "DialCallStatus": "completed",
                    "DialCallDuration": str(int(round(self.ctx.clock.now_s() - joined))),
                },
            )
        return None

    async def _stay_in_conference(self, p: Participant) -> _Step:
        conf = self.ctx.conferences.by_sid[p.conference_sid]
        clock = self.ctx.clock
        script = self.human
        if script is None:
            await p.left.wait()
            return None
        if not conf.started.is_set():
            which = await _first_of(
                {"left": p.left, "started": conf.started},
                clock.wall(script.max_wait_for_conference_s),
            )
            if which is None:
                await self._hangup("human")
                return END
            if which == "left":
                return None
        if script.talk_s is None:
            await p.left.wait()
            return None
        which = await _first_of({"left": p.left}, clock.wall(script.talk_s))
        if which == "left":
            return None
        await self._hangup("human")
        return END

    async def _connect(self, verb: TwimlVerb, doc_url: str | None) -> _Step:
        call = self.customer
        if call is None:
            self.ctx.error(self.sid, 31920, "<Connect><Stream> on a scripted human leg; skipped")
            return None
        try:
            instruction = stream_instruction(verb)
        except TwimlError as exc:
            return await self._application_error(12200, str(exc))
        try:
            stream = await call.open_stream(instruction)
        except SimulatorError as exc:
            self.ctx.error(self.sid, 31920, f"stream failed to open: {exc}")
            if call.streams and call.streams[-1].end_reason == "open-failed":
                return await self._after_stream(call.streams[-1], verb, doc_url)
            return None
        return await self._after_stream(stream, verb, doc_url)

    async def _hangup(self, by: str) -> None:
        """Hang up from inside the runner (``<Hangup/>``, end of TwiML, the human)."""
        await self._leave_activity("twiml" if by != "human" else "party")
        self._finish("completed" if self.status == "in-progress" else "canceled", by)

    # -- webhooks ---------------------------------------------------------------------------

    async def _request(
        self, url: str, method: str, purpose: str, extra: dict[str, str] | None = None
    ) -> httpx.Response | None:
        params = self.call_params()
        params.update(extra or {})
        status: int | None = None
        body = ""
        error: str | None = None
        resp: httpx.Response | None = None
        try:
            resp = await self.ctx.webhooks.request(method, url, params)
            status = resp.status_code
            body = resp.text[:4000]
        except httpx.HTTPError as exc:
            error = repr(exc)
        self.ctx.timeline.record(
            "webhook",
            self.sid,
            url=url,
            method=method,
            params=params,
            http_status=status,
            body=body,
            purpose=purpose,
            error=error,
        )
        return resp

    async def _fetch(
        self, url: str, method: str, purpose: str, extra: dict[str, str] | None = None
    ) -> _Doc | _End:
        """Request TwiML and parse it; any failure is an application error (hang-up)."""
        resp = await self._request(url, method, purpose, extra)
        if resp is None:
            return await self._application_error(11200, f"HTTP retrieval failure: {url}")
        if resp.status_code != 200:
            return await self._application_error(
                11200, f"HTTP {resp.status_code} from {url} ({purpose})"
            )
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("text/xml", "application/xml"):
            return await self._application_error(
                12300, f"Invalid Content-Type {ctype!r} from {url} ({purpose})"
            )
        try:
            verbs = parse_twiml(resp.text)
        except TwimlError as exc:
            return await self._application_error(12100, f"{url} ({purpose}): {exc}")
        return _Doc(verbs, url)

    async def _application_error(self, code: int, message: str) -> _End:
        self.ctx.error(self.sid, code, message)
        self.heard.append(APPLICATION_ERROR_SAY)
        self.ctx.timeline.record(
            "say", self.sid, text=APPLICATION_ERROR_SAY, voice=None, language=None
        )
        await self._hangup("error")
        return END
