"""Escalation test kit: a fake Twilio REST side (the :class:`CallControl` interface, with
Twilio's rules for what may be redirected or ended), the service running on a real
nats-server with real signed webhooks over HTTP, and helpers to play Twilio's callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from nats.aio.msg import Msg
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import (
    EscalationRequest,
    EscalationStatus,
    HumanCallStatus,
    StaffAction,
    StaffActionReply,
    StaffContact,
    loads,
)
from dealerline_common.state import ConversationState, CustomerInfo
from dealerline_common.state_store import MemoryStateStore, StateStore
from dealerline_escalation.service import Service
from dealerline_escalation.settings import EscalationSettings
from dealerline_escalation.staff_check import StaffDirectory, StaffRecord
from dealerline_escalation.twilio_client import CallNotLive

AUTH_TOKEN = "test-auth-token-escalation-0123456789"
PUBLIC_URL = "https://esc.example.com"
GATEWAY_URL = "https://dealer.example.com"
ACCOUNT_SID = "AC" + "0" * 32
FROM_NUMBER = "+18005550100"
CUSTOMER_CALL = "CA" + "c" * 32

STAFF = [
    StaffContact(name="Alice", phone="+14155550101", role="sales", staff_id=1),
    StaffContact(name="Bob", phone="+14155550102", role="service", staff_id=2),
]


class Roster:
    """The staff directory for unit tests: ids 1..4 (Alice, Bob, Carol, Dan) with the numbers
    the tests ring, all on duty (tests/test_dialing.py checks the database's own)."""

    def __init__(self) -> None:
        self.people: dict[int, StaffRecord] = {
            i: StaffRecord(i, name, f"+1415555010{i}", True)
            for i, name in enumerate(("Alice", "Bob", "Carol", "Dan"), start=1)
        }
        self.lookups: list[int] = []

    async def lookup(self, staff_id: int) -> StaffRecord | None:
        self.lookups.append(staff_id)
        return self.people.get(staff_id)

    async def close(self) -> None:
        pass


class FakeCalls:
    """Twilio's REST side for unit tests: calls, their status, redirects and hang-ups."""

    def __init__(self) -> None:
        self.statuses: dict[str, str] = {CUSTOMER_CALL: "in-progress"}
        self.created: list[dict[str, Any]] = []
        self.redirects: list[tuple[str, str]] = []
        self.ended: list[tuple[str, str]] = []
        self.fetches = 0
        self.changed = asyncio.Event()
        self._ids = itertools.count(1)
        self.reject_create: Exception | None = None
        # When set, ending a call waits for it (holds whoever ends the call mid-way).
        self.hold_end: asyncio.Event | None = None

    async def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str, timeout_s: int
    ) -> str:
        if self.reject_create is not None:
            raise self.reject_create
        sid = f"CA{next(self._ids):032x}"
        self.statuses[sid] = "queued"
        self.created.append(
            {
                "sid": sid,
                "to": to,
                "from": from_,
                "url": url,
                "status_callback": status_callback,
                "timeout": timeout_s,
            }
        )
        self.changed.set()
        return sid

    async def fetch_status(self, call_sid: str) -> str:
        self.fetches += 1
        if call_sid not in self.statuses:
            raise CallNotLive(f"no call {call_sid}")
        return self.statuses[call_sid]

    async def redirect(self, call_sid: str, url: str) -> None:
        if self.statuses.get(call_sid) != "in-progress":
            raise CallNotLive("call is not in progress")
        self.redirects.append((call_sid, url))
        self.changed.set()

    async def end_call(self, call_sid: str, status: Literal["canceled", "completed"]) -> None:
        if self.hold_end is not None:
            await self.hold_end.wait()
        current = self.statuses.get(call_sid)
        if status == "canceled" and current in ("queued", "initiated", "ringing"):
            self.statuses[call_sid] = "canceled"
        elif status == "completed" and current == "in-progress":
            self.statuses[call_sid] = "completed"
        else:
            raise CallNotLive(f"cannot set {status} on a {current} call")
        self.ended.append((call_sid, status))
        self.changed.set()

    async def close(self) -> None:
        pass

    async def wait(self, what: str, predicate: Any, within_s: float = 10.0) -> Any:
        async def poll() -> Any:
            while True:
                result = predicate()
                if result:
                    return result
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)

        try:
            return await asyncio.wait_for(poll(), within_s)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def created_call(self, n: int, within_s: float = 10.0) -> dict[str, Any]:
        await self.wait(f"call #{n}", lambda: len(self.created) >= n, within_s)
        return self.created[n - 1]


def make_settings(nats_url: str, **overrides: Any) -> EscalationSettings:
    values: dict[str, Any] = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "from_number": FROM_NUMBER,
        "public_url": PUBLIC_URL,
        "gateway_public_url": GATEWAY_URL,
        "nats_url": nats_url,
        "http_port": 0,
        "http_host": "127.0.0.1",
        "js_file_storage": False,
        "drain_timeout_s": 1.0,
        "watchdog_interval_s": 60.0,  # tests that want the watchdog lower it
        "ack_wait_s": 2.0,
        "database_url": None,  # a Roster, unless a test names a database
    }
    values.update(overrides)
    return EscalationSettings(**values)


async def seed_session(
    store: StateStore, session_id: str, customer_name: str | None = "Dana Smith"
) -> None:
    def mutate(state: ConversationState) -> None:
        state.call_sid = CUSTOMER_CALL
        state.caller_phone = "+14155559999"
        if customer_name:
            state.customer = CustomerInfo(id=7, name=customer_name)

    await store.update(session_id, mutate)


def request(
    session_id: str, task_id: str = "task_1", staff: list[StaffContact] | None = None
) -> EscalationRequest:
    return EscalationRequest(
        session_id=session_id,
        call_sid=CUSTOMER_CALL,
        task_id=task_id,
        reason="a trade-in offer on a 2019 Civic",
        customer_name="Dana Smith",
        staff=STAFF if staff is None else staff,
    )


class StatusLog:
    """Every EscalationStatus published for a session (core NATS subscription)."""

    def __init__(self) -> None:
        self.items: list[EscalationStatus] = []
        self.changed = asyncio.Event()

    async def handler(self, msg: Msg) -> None:
        self.items.append(loads(EscalationStatus, msg.data))
        self.changed.set()

    async def wait_for(
        self,
        status: HumanCallStatus,
        *,
        final: bool | None = None,
        attempt: int | None = None,
        within_s: float = 10.0,
    ) -> EscalationStatus:
        def find() -> EscalationStatus | None:
            for item in self.items:
                if (
                    item.status is status
                    and (final is None or item.final is final)
                    and (attempt is None or item.attempt == attempt)
                ):
                    return item
            return None

        async def poll() -> EscalationStatus:
            while True:
                found = find()
                if found is not None:
                    return found
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(poll(), within_s)
        except TimeoutError:
            seen = [(i.status.value, i.attempt, i.reason, i.final) for i in self.items]
            raise AssertionError(f"no {status.value} status; saw {seen}") from None

    def sequence(self) -> list[tuple[str, int, str | None, bool]]:
        return [(i.status.value, i.attempt, i.reason, i.final) for i in self.items]


async def status_log(bus: Bus, session_id: str) -> StatusLog:
    log = StatusLog()
    await bus.subscribe(subjects.escalation(session_id), log.handler)
    await bus.nc.flush()
    return log


async def staff_action(
    bus: Bus,
    session_id: str,
    action: Literal["claim", "pass"],
    person: StaffContact,
    timeout_s: float = 3.0,
) -> StaffActionReply:
    """What the dashboard API does: a NATS request to the escalation's owner (raises
    NoRespondersError when no escalation of the session is running)."""
    req = StaffAction(session_id=session_id, action=action, staff=person)
    msg = await bus.nc.request(subjects.staff_action(session_id), req.dumps(), timeout=timeout_s)
    return loads(StaffActionReply, msg.data)


def sign(url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(AUTH_TOKEN).compute_signature(url, params))


@dataclass
class TwilioSide:
    """Plays Twilio's webhooks against the running service, signed like Twilio signs."""

    http: httpx.AsyncClient
    session_id: str
    task_id: str = "task_1"
    seq: dict[str, int] = field(default_factory=dict)

    async def post(
        self,
        route: str,
        params: dict[str, str],
        query: dict[str, Any],
        signature: str | None = None,
    ) -> httpx.Response:
        path = f"/api/voice/{route}" + (f"?{urlencode(query)}" if query else "")
        sig = signature if signature is not None else sign(PUBLIC_URL + path, params)
        return await self.http.post(path, data=params, headers={"X-Twilio-Signature": sig})

    def query(self, attempt: int) -> dict[str, Any]:
        return {"session_id": self.session_id, "task_id": self.task_id, "attempt": attempt}

    async def status(
        self, attempt: int, call_sid: str, status: str, seq: int | None = None, expect: int = 204
    ) -> httpx.Response:
        if seq is None:
            seq = self.seq.get(call_sid, -1) + 1
        self.seq[call_sid] = max(seq, self.seq.get(call_sid, -1))
        params = {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "CallStatus": status,
            "SequenceNumber": str(seq),
            "CallbackSource": "call-progress-events",
            "Timestamp": "Tue, 02 Jul 2024 12:00:00 +0000",
        }
        resp = await self.post("human-status", params, self.query(attempt))
        assert resp.status_code == expect, resp.text
        return resp

    def call_params(self, call_sid: str, **extra: str) -> dict[str, str]:
        return {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "From": FROM_NUMBER,
            "To": "+14155550101",
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            **extra,
        }

    async def answer(self, attempt: int, call_sid: str) -> httpx.Response:
        return await self.post("human-answer", self.call_params(call_sid), self.query(attempt))

    async def detected(self, attempt: int, call_sid: str, digits: str = "5") -> httpx.Response:
        params = self.call_params(call_sid, Digits=digits, FinishedOnKey="")
        return await self.post("human-detected", params, self.query(attempt))

    async def confirmed(self, attempt: int, call_sid: str, digits: str = "1") -> httpx.Response:
        params = self.call_params(call_sid, Digits=digits, FinishedOnKey="")
        return await self.post("human-confirmed", params, self.query(attempt))

    async def conference(self, event: str, call_sid: str | None) -> httpx.Response:
        params = {
            "ConferenceSid": "CF" + "1" * 32,
            "FriendlyName": subjects.conference_name(self.session_id),
            "StatusCallbackEvent": event,
            "AccountSid": ACCOUNT_SID,
            "SequenceNumber": "1",
            "Timestamp": "Tue, 02 Jul 2024 12:00:00 +0000",
        }
        if call_sid:
            params["CallSid"] = call_sid
        return await self.post("conference-status", params, {"session_id": self.session_id})


@dataclass
class Running:
    service: Service
    settings: EscalationSettings
    store: StateStore
    calls: FakeCalls
    probe: Bus
    http: httpx.AsyncClient

    def twilio(self, session_id: str, task_id: str = "task_1") -> TwilioSide:
        return TwilioSide(self.http, session_id, task_id)

    async def resumed(self, session_id: str) -> None:
        """Until this replica runs the session's escalation: a request another replica
        died with comes back after ``ack_wait``."""
        for _ in range(200):
            if session_id in self.service.escalator.runs:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the request was not redelivered")


@contextlib.asynccontextmanager
async def running_service(
    nats_url: str,
    *,
    store: StateStore | None = None,
    calls: FakeCalls | None = None,
    use_service_calls: bool = False,
    staff: StaffDirectory | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    """The service on a real bus and HTTP port. With ``state_url`` and no ``store`` it
    builds (and owns) its store; with ``use_service_calls`` its own Twilio client; with
    ``database_url`` and no ``staff`` it checks staff in that database (else a
    :class:`Roster`)."""
    settings = make_settings(nats_url, **overrides)
    if store is None and settings.state_url is None:
        store = MemoryStateStore()
    fake = calls or FakeCalls()
    if staff is None and settings.database_url is None:
        staff = Roster()
    service = Service(settings, store=store, calls=None if use_service_calls else fake, staff=staff)
    store = service.store
    calls = fake
    await service.start()
    probe = Bus(nats_url, "probe", file_storage=False)
    await probe.connect()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}")
    try:
        yield Running(service, settings, store, calls, probe, http)
    finally:
        await http.aclose()
        await service.drain()
        await probe.close()
