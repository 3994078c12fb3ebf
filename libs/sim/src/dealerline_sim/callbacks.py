"""Signed webhook requests and status-callback delivery with fault injection.

Every request the simulator makes to an application (TwiML fetches, ``<Gather>`` actions,
call and conference status callbacks) goes through :class:`WebhookClient`: form-encoded,
signed with ``X-Twilio-Signature`` over the exact public URL as
``twilio.request_validator.RequestValidator`` checks it, and sent to wherever that public
URL is served locally (``add_route("https://esc.example.com", "http://127.0.0.1:8085")``;
a URL with no route is requested as it is). For ``GET`` the parameters go into the query
string and the signature covers the full URL, as Twilio does.

Status callbacks are delivered by :class:`CallbackDispatcher`, one ordered lane per call
(or conference), never blocking the call itself — as with Twilio, the application may see
an answer webhook before the ``in-progress`` callback. :class:`Faults` bends delivery the
ways Twilio's own callbacks may arrive (twice, out of order, never: docs/twilio.md); each
rule applies to the next ``times`` matching callbacks:

- ``faults.drop(status="completed")`` — never delivered (its SequenceNumber is used up,
  so the receiver sees a gap);
- ``faults.duplicate(status="ringing", copies=2)`` — delivered ``copies`` times with the
  same SequenceNumber, Timestamp and ``I-Twilio-Idempotency-Token``;
- ``faults.reorder(status="initiated")`` — held back and delivered right after the next
  callback of the same call (a later one arrives before an earlier one);
- ``faults.delay(5.0, status="in-progress")`` — delivered 5 simulated seconds late while
  later callbacks go ahead.

``status`` matches ``CallStatus`` of call callbacks and ``StatusCallbackEvent`` of
conference ones; ``call_sid``, ``to`` (the dialled number) and ``kind`` (``call`` or
``conference``) narrow a rule further.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator

from dealerline_common.logs import get_logger, mask_phone
from dealerline_sim.tasks import TaskSet
from dealerline_sim.timeline import SimClock, Timeline

__all__ = [
    "Callback",
    "CallbackDispatcher",
    "FaultAction",
    "FaultRule",
    "Faults",
    "WebhookClient",
]

log = get_logger(__name__)

TWILIO_USER_AGENT = "TwilioProxy/1.1"
CallbackKind = Literal["call", "conference"]
FaultAction = Literal["drop", "duplicate", "delay", "reorder"]


class WebhookClient:
    """Twilio's outgoing HTTP: signed form posts (or GETs) to public URLs, routed locally."""

    def __init__(
        self,
        auth_token: str,
        *,
        timeout_s: float = 15.0,
        forwarded_headers: bool = False,
    ) -> None:
        self.validator = RequestValidator(auth_token)
        self.routes: dict[str, str] = {}
        self.forwarded_headers = forwarded_headers
        self._http = httpx.AsyncClient(timeout=timeout_s, trust_env=False, follow_redirects=False)

    def add_route(self, public_prefix: str, local_base: str) -> None:
        """Requests for URLs under ``public_prefix`` go to ``local_base`` instead (the
        signature still covers the public URL)."""
        self.routes[public_prefix.rstrip("/")] = local_base.rstrip("/")

    def local_url(self, url: str) -> str:
        best = ""
        for prefix in self.routes:
            under = url == prefix or url.startswith((prefix + "/", prefix + "?"))
            if under and len(prefix) > len(best):
                best = prefix
        return self.routes[best] + url[len(best) :] if best else url

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        return str(self.validator.compute_signature(url, dict(params)))

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, str],
        *,
        idempotency_token: str | None = None,
    ) -> httpx.Response:
        """One signed request; raises ``httpx.HTTPError`` if it could not be made."""
        method = method.upper()
        form = {k: str(v) for k, v in params.items()}
        headers = {
            "User-Agent": TWILIO_USER_AGENT,
            "I-Twilio-Idempotency-Token": idempotency_token or secrets.token_hex(16),
        }
        if self.forwarded_headers:
            parts = urlsplit(url)
            headers["X-Forwarded-Proto"] = parts.scheme
            headers["X-Forwarded-Host"] = parts.netloc
        if method == "GET":
            signed_url = url
            if form:
                signed_url += ("&" if "?" in url else "?") + urlencode(form)
            headers["X-Twilio-Signature"] = self.sign(signed_url, {})
            return await self._http.get(self.local_url(signed_url), headers=headers)
        if method != "POST":
            raise ValueError(f"Twilio requests webhooks with GET or POST, not {method}")
        headers["X-Twilio-Signature"] = self.sign(url, form)
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=UTF-8"
        return await self._http.post(self.local_url(url), data=form, headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass
class Callback:
    """One status callback Twilio is about to send."""

    kind: CallbackKind
    key: str  # the ordering lane: the call sid, or the conference sid
    url: str
    method: str
    params: dict[str, str]
    status: str  # CallStatus, or StatusCallbackEvent for a conference
    sequence: int
    call_sid: str | None = None
    to: str | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass
class FaultRule:
    """Bend the delivery of the next ``times`` matching callbacks (None: all of them)."""

    action: FaultAction
    status: str | None = None
    call_sid: str | None = None
    to: str | None = None
    kind: CallbackKind | None = None
    times: int | None = 1
    copies: int = 2
    delay_s: float = 0.0
    applied: int = 0

    def matches(self, cb: Callback) -> bool:
        if self.times is not None and self.applied >= self.times:
            return False
        return (
            (self.status is None or self.status == cb.status)
            and (self.call_sid is None or self.call_sid == cb.call_sid)
            and (self.to is None or self.to == cb.to)
            and (self.kind is None or self.kind == cb.kind)
        )


class Faults:
    """Fault rules for status callbacks; the first matching rule applies."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def _add(self, rule: FaultRule) -> FaultRule:
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be at least 1 (or None for every match)")
        self.rules.append(rule)
        return rule

    def drop(
        self,
        *,
        status: str | None = None,
        call_sid: str | None = None,
        to: str | None = None,
        kind: CallbackKind | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        return self._add(FaultRule("drop", status, call_sid, to, kind, times))

    def duplicate(
        self,
        *,
        status: str | None = None,
        call_sid: str | None = None,
        to: str | None = None,
        kind: CallbackKind | None = None,
        times: int | None = 1,
        copies: int = 2,
    ) -> FaultRule:
        if copies < 2:
            raise ValueError("a duplicate needs at least 2 copies")
        return self._add(FaultRule("duplicate", status, call_sid, to, kind, times, copies=copies))

    def reorder(
        self,
        *,
        status: str | None = None,
        call_sid: str | None = None,
        to: str | None = None,
        kind: CallbackKind | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        return self._add(FaultRule("reorder", status, call_sid, to, kind, times))

    def delay(
        self,
        seconds: float,
        *,
        status: str | None = None,
        call_sid: str | None = None,
        to: str | None = None,
        kind: CallbackKind | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        if seconds < 0:
            raise ValueError("a delay must not be negative")
        return self._add(FaultRule("delay", status, call_sid, to, kind, times, delay_s=seconds))

    def clear(self) -> None:
        self.rules.clear()

    def take(self, cb: Callback) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(cb):
                rule.applied += 1
                return rule
        return None


_Item = tuple[Callback, str | None] | None  # None: the lane is finished, flush what is held


@dataclass
class _Lane:
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    held: list[Callback] = field(default_factory=list)
    finished: bool = False


class CallbackDispatcher:
    """Delivers status callbacks in order per lane, applying :class:`Faults`."""

    def __init__(
        self,
        client: WebhookClient,
        faults: Faults,
        timeline: Timeline,
        clock: SimClock,
        tasks: TaskSet,
    ) -> None:
        self.client = client
        self.faults = faults
        self.timeline = timeline
        self.clock = clock
        self.tasks = tasks
        self._lanes: dict[str, _Lane] = {}
        self._outstanding = 0  # callbacks submitted and not yet delivered or dropped

    @property
    def idle(self) -> bool:
        return self._outstanding == 0

    def submit(self, cb: Callback) -> None:
        lane = self._lanes.get(cb.key)
        if lane is None or lane.finished:
            lane = _Lane()
            self._lanes[cb.key] = lane
            self.tasks.spawn(self._worker(lane), f"callbacks-{cb.key[:10]}")
        rule = self.faults.take(cb)
        action = rule.action if rule else None
        if action == "drop":
            self._record(cb, "callback_dropped", fault="drop")
            return
        if action == "delay":
            assert rule is not None
            self._outstanding += 1
            self.tasks.spawn(self._delayed(cb, rule.delay_s), f"callback-delay-{cb.key[:10]}")
            return
        if action == "reorder":
            self._outstanding += 1
            lane.held.append(cb)
            return
        copies = rule.copies if rule is not None and action == "duplicate" else 1
        for i in range(copies):
            self._outstanding += 1
            lane.queue.put_nowait((cb, "duplicate" if i else None))

    def finish(self, key: str) -> None:
        """No more callbacks will come on this lane: deliver anything held back."""
        lane = self._lanes.get(key)
        if lane is not None and not lane.finished:
            lane.finished = True
            lane.queue.put_nowait(None)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every submitted callback has been delivered (or dropped)."""
        await self.timeline.wait_for(lambda: self.idle, timeout_s, "status callbacks delivered")

    async def _worker(self, lane: _Lane) -> None:
        while True:
            item = await lane.queue.get()
            if item is None:
                await self._flush(lane)
                return
            cb, fault = item
            await self._deliver(cb, fault)
            await self._flush(lane)

    async def _flush(self, lane: _Lane) -> None:
        while lane.held:
            await self._deliver(lane.held.pop(0), "reorder")

    async def _delayed(self, cb: Callback, delay_s: float) -> None:
        await self.clock.sleep(delay_s)
        await self._deliver(cb, "delay")

    async def _deliver(self, cb: Callback, fault: str | None) -> None:
        try:
            status: int | None = None
            error: str | None = None
            try:
                resp = await self.client.request(
                    cb.method, cb.url, cb.params, idempotency_token=cb.token
                )
                status = resp.status_code
                if status >= 400:
                    # Twilio logs 11200 in its debugger and does not retry.
                    error = f"11200: HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"11200: {exc!r}"
            self._record(cb, "callback", fault=fault, http_status=status, error=error)
            if error:
                log.warning(
                    "status_callback_failed",
                    kind=cb.kind,
                    status=cb.status,
                    to=mask_phone(cb.to),
                    error=error,
                )
        finally:
            self._outstanding -= 1
            self.timeline.notify()

    def _record(self, cb: Callback, kind: str, **extra: object) -> None:
        self.timeline.record(
            kind,
            cb.call_sid,
            url=cb.url,
            method=cb.method,
            params=dict(cb.params),
            callback_kind=cb.kind,
            status=cb.status,
            sequence=cb.sequence,
            conference_sid=cb.params.get("ConferenceSid"),
            **extra,
        )
