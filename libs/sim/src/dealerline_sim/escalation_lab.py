"""Human escalation through the whole fleet, against the simulated Twilio account.

:class:`EscalationLab` starts a :class:`~dealerline_sim.twilio_rest.TwilioSim` and a
:class:`~dealerline_cli.fleet.Fleet` wired to it: the escalation service rings staff through
the simulator's REST API with the real twilio client, the simulator hosts the customer's
call (REST redirects, conferences, return to the AI) and the staff legs (scripted humans),
and routes every webhook to the service that owns it, signed as Twilio signs them.

:meth:`EscalationLab.run` places one customer call, asks for a person and follows the
escalation to its end, returning an :class:`EscalationCall`: the human-call statuses in
order, what the caller heard on each Media Stream (transcribed with Whisper), the staff
legs, the conference and the final conversation state in the store. The end-to-end tests
and ``make demo SCENARIO=escalation`` both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from nats.aio.msg import Msg
from pydantic import ValidationError

from dealerline_cli.fleet import Fleet, LlmChoice, TwilioAccount
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import (
    EscalationStatus,
    HumanCallStatus,
    Say,
    TurnPlayed,
    loads,
    parse_control,
)
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore, state_store_from_url

from .conference import Conference
from .humans import HumanScript
from .legs import CallLeg
from .phone import Call, PhoneSimulator, Transcriber
from .twilio_rest import TwilioSim

S = HumanCallStatus
CALLER_NUMBER = "+14155550123"  # John Carter in the demo dealership
DEALER_NUMBER = "+14155550100"  # the dealership's line; staff calls come from it too
ASK_FOR_A_PERSON = "Could I talk to a person, please?"


@dataclass(frozen=True)
class StaffMember:
    name: str
    phone: str


async def on_duty_staff(database_url: str) -> list[StaffMember]:
    """The hunt list as the agent builds it: on-duty staff in hunt order."""
    from sqlalchemy import select

    from dealerline_common.db.engine import create_engine_from_url, session_factory
    from dealerline_common.db.models import Staff

    engine = create_engine_from_url(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (
                await session.execute(
                    select(Staff).where(Staff.on_duty.is_(True)).order_by(Staff.hunt_order)
                )
            ).scalars()
            return [StaffMember(s.name, s.phone) for s in rows]
    finally:
        await engine.dispose()


@dataclass
class StatusLog:
    """Every :class:`EscalationStatus` of every call, as published, per session."""

    by_session: dict[str, list[EscalationStatus]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    echo: Callable[[EscalationStatus], None] | None = None  # shows progress as it happens

    async def on_msg(self, msg: Msg) -> None:
        try:
            status = loads(EscalationStatus, msg.data)
        except ValidationError:
            return
        self.by_session.setdefault(status.session_id, []).append(status)
        self.changed.set()
        if self.echo is not None:
            self.echo(status)

    def of(self, session_id: str) -> list[EscalationStatus]:
        return list(self.by_session.get(session_id, []))

    async def wait(
        self,
        session_id: str,
        predicate: Callable[[list[EscalationStatus]], bool],
        timeout_s: float,
        what: str,
    ) -> list[EscalationStatus]:
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.of(session_id)
            if predicate(seen):
                return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [f"{s.status.value}{'(final)' if s.final else ''}" for s in seen]
                raise TimeoutError(f"{what} not within {timeout_s:.0f}s; statuses: {got}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))


@dataclass
class TurnLog:
    """The agent's turns as the bus shows them, per session: when each turn's first
    sentence went out (wall time) and which turns the gateway reported played to the end."""

    said_at: dict[str, dict[str, float]] = field(default_factory=dict)
    played: dict[str, set[str]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_say(self, msg: Msg) -> None:
        try:
            say = loads(Say, msg.data)
        except ValidationError:
            return
        self.said_at.setdefault(say.session_id, {}).setdefault(say.turn_id, time.time())
        self.changed.set()

    async def on_control(self, msg: Msg) -> None:
        try:
            message = parse_control(msg.data)
        except ValidationError:
            return
        if isinstance(message, TurnPlayed):
            self.played.setdefault(message.session_id, set()).add(message.turn_id)
            self.changed.set()

    async def wait_played(self, session_id: str, after: float, timeout_s: float) -> None:
        """Wait until a turn that started after wall time ``after`` has played to its end
        (all its sentences, however long the next one takes to synthesise)."""
        deadline = time.monotonic() + timeout_s
        while True:
            later = {t for t, at in self.said_at.get(session_id, {}).items() if at > after}
            if later & self.played.get(session_id, set()):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no turn after the final status played in {timeout_s:.0f}s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))


def reached(status: HumanCallStatus) -> Callable[[list[EscalationStatus]], bool]:
    return lambda seen: any(s.status is status for s in seen)


def finished(seen: list[EscalationStatus]) -> bool:
    return any(s.final for s in seen)


@dataclass
class EscalationCall:
    """What happened on one escalated call."""

    session_id: str
    call: Call
    statuses: list[EscalationStatus]
    heard: list[str]  # per Media Stream, transcribed
    staff_legs: list[CallLeg]
    conference: Conference | None
    state: ConversationState | None
    started_at: float

    @property
    def sequence(self) -> list[HumanCallStatus]:
        """The statuses in the order they were published (one person after another)."""
        return [s.status for s in self.statuses]

    @property
    def final(self) -> EscalationStatus | None:
        return next((s for s in self.statuses if s.final), None)

    def legs_to(self, phone: str) -> list[CallLeg]:
        return [leg for leg in self.staff_legs if leg.to_number == phone]

    def timeline(self) -> list[str]:
        """One line per status: seconds since the call started, status, who, detail."""
        out = []
        for s in self.statuses:
            who = f" {s.staff_name}" if s.staff_name else ""
            detail = f" ({s.detail})" if s.detail else ""
            tail = f" final:{s.reason}" if s.final else ""
            out.append(
                f"{s.at - self.started_at:6.1f}s  attempt {s.attempt}  "
                f"{s.status.value:<21}{who}{detail}{tail}"
            )
        return out


@dataclass
class EscalationLab:
    """The simulated Twilio account and the fleet, wired together. ``async with``."""

    log_dir: Path | None = None
    time_scale: float = 0.1  # the staff legs run 10x faster (the caller talks in real time)
    ring_timeout_s: int = 8
    watchdog_interval_s: float = 2.0
    pace: float = 1.0  # >1: the caller's audio is sent and played faster than real time
    llm: LlmChoice | None = None
    quiet: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    sim: TwilioSim = field(init=False)
    fleet: Fleet = field(init=False)
    bus: Bus = field(init=False)
    phone: PhoneSimulator = field(init=False)
    store: StateStore = field(init=False)
    statuses: StatusLog = field(default_factory=StatusLog)
    turns: TurnLog = field(default_factory=TurnLog)
    staff: list[StaffMember] = field(default_factory=list)
    transcriber: Transcriber = field(default_factory=Transcriber)

    async def __aenter__(self) -> EscalationLab:
        self.sim = await TwilioSim(time_scale=self.time_scale, dial_delay_s=0.2).start()
        try:
            await self._start_fleet()
        except BaseException:
            await self.sim.aclose()
            raise
        return self

    async def _start_fleet(self) -> None:
        env = {
            "ESCALATION_RING_TIMEOUT_S": str(self.ring_timeout_s),
            "ESCALATION_WATCHDOG_INTERVAL_S": str(self.watchdog_interval_s),
            **self.extra_env,
        }
        self.fleet = Fleet(
            log_dir=self.log_dir,
            quiet=self.quiet,
            extra_env=env,
            twilio=TwilioAccount(
                account_sid=self.sim.account_sid,
                auth_token=self.sim.auth_token,
                from_number=DEALER_NUMBER,
                api_base_url=self.sim.rest_url,
            ),
            **({"llm": self.llm} if self.llm is not None else {}),
        )
        await self.fleet.start()
        try:
            for prefix, local in self.fleet.twilio_routes().items():
                self.sim.add_route(prefix, local)
            assert self.fleet.database_url is not None
            assert self.fleet.state_url is not None
            self.staff = await on_duty_staff(self.fleet.database_url)
            self.store = state_store_from_url(
                self.fleet.state_url, namespace=self.fleet.state_namespace
            )
            self.bus = Bus(str(self.fleet.nats_url), "escalation-lab")
            await self.bus.connect()
            await self.bus.subscribe(subjects.ALL_ESCALATION, self.statuses.on_msg)
            await self.bus.subscribe(subjects.ALL_SAY, self.turns.on_say)
            await self.bus.subscribe(subjects.ALL_CONTROL, self.turns.on_control)
            self.phone = self.sim.phone(
                self.fleet.gateway_url, self.fleet.public_url, pace=self.pace
            )
            await self.phone.prepare(ASK_FOR_A_PERSON)
        except BaseException:
            await self.fleet.stop()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            await self.phone.aclose()
        with contextlib.suppress(Exception):
            await self.bus.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        await self.sim.aclose()
        await self.fleet.stop()

    def humans(self, scripts: Mapping[str, HumanScript]) -> None:
        """Who answers at each staff phone for the next call (others never answer), and
        no fault rules left from an earlier call."""
        self.sim.humans.clear()
        self.sim.faults.clear()
        for phone in (s.phone for s in self.staff):
            self.sim.add_human(phone, scripts.get(phone, HumanScript.never_answers()))

    async def place(self) -> tuple[Call, str]:
        """Ring the dealership as the caller; returns once the greeting has played."""
        call = await self.phone.place_call(CALLER_NUMBER, DEALER_NUMBER)
        await call.wait_until_quiet(1.0, 30.0)
        return call, call.custom_parameters["session_id"]

    async def ask_for_a_person(self, call: Call, session_id: str, timeout_s: float = 30.0) -> None:
        """Ask for a person; returns once the escalation has started (CALLING published)."""
        await call.say(ASK_FOR_A_PERSON)
        await self.statuses.wait(session_id, reached(S.CALLING), timeout_s, "CALLING")

    async def collect(self, call: Call, session_id: str, started_at: float) -> EscalationCall:
        """Everything the tests check, once the call is over."""
        await self.sim.settle(20.0)
        heard = [
            await self.transcriber.transcribe_ulaw(s.heard_audio) if s.heard_audio else ""
            for s in call.streams
        ]
        legs = [
            leg
            for leg in self.sim.calls.values()
            if leg.customer is None and _session_of(leg) == session_id
        ]
        state, _ = await self.store.get_state_with_version(session_id)
        return EscalationCall(
            session_id=session_id,
            call=call,
            statuses=self.statuses.of(session_id),
            heard=heard,
            staff_legs=legs,
            conference=self.sim.conferences.get(subjects.conference_name(session_id)),
            state=state,
            started_at=started_at,
        )

    async def run(
        self,
        scripts: Mapping[str, HumanScript],
        *,
        hang_up_at: HumanCallStatus | None = None,
        faults: Callable[[TwilioSim], None] | None = None,
        during: Callable[[str], Awaitable[None]] | None = None,
        timeout_s: float = 90.0,
    ) -> EscalationCall:
        """One escalated call: place it, ask for a person, and follow the escalation.

        ``hang_up_at``: the caller hangs up as soon as that status is published (for
        IN_CONFERENCE: once they are in the room with the team member). Otherwise
        the call goes on until the escalation is final; then, if the caller is back with
        the AI (a new stream) or was told nobody could be reached, the caller listens to
        the agent and hangs up. ``during(session_id)`` runs once the escalation has started
        (to crash a service mid-way, say); the call is followed to its end after it."""
        self.humans(scripts)
        if faults is not None:
            faults(self.sim)
        started_at = time.time()
        call, sid = await self.place()
        await self.ask_for_a_person(call, sid)
        heard_before = len(call.heard_segments)
        if during is not None:
            await during(sid)
        if hang_up_at is not None:
            await self.statuses.wait(sid, reached(hang_up_at), timeout_s, hang_up_at.value)
            if hang_up_at is S.IN_CONFERENCE:
                room = subjects.conference_name(sid)
                await self.sim.wait_for(
                    lambda: (
                        (conf := self.sim.conferences.get(room)) is not None
                        and conf.started.is_set()
                        and call.in_conference is not None
                    ),
                    20.0,
                    "the caller and the team member in the conference",
                )
            await call.hangup()
        seen = await self.statuses.wait(sid, finished, timeout_s, "the final status")
        final = next(s for s in seen if s.final)
        if call.is_open:
            if final.reason == "human_ended":
                await call.wait_for_stream(2, timeout_s=20.0)
                await call.wait_until_quiet(1.5, 30.0)  # welcomed back by the AI
            else:
                # Nobody could be reached: the agent says so (a turn after the final status),
                # heard to its end: a quiet gap alone could fall between two sentences.
                await _new_audio(call, heard_before, final.at, 30.0)
                await self.turns.wait_played(sid, final.at, 30.0)
                await call.wait_until_quiet(1.5, 30.0)
            await call.hangup()
        await asyncio.sleep(0.5)  # the last statuses and events land
        return await self.collect(call, sid, started_at)


async def _new_audio(call: Call, first: int, after: float, timeout_s: float) -> None:
    """Wait until the caller starts hearing audio that arrived after wall time ``after``."""
    deadline = time.monotonic() + timeout_s
    while not any((seg.first_received_at or 0.0) > after for seg in call.heard_segments[first:]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the agent said nothing within {timeout_s:.0f}s")
        if not call.is_open:
            return
        await asyncio.sleep(0.05)


def _session_of(leg: CallLeg) -> str | None:
    """The session a staff leg was created for (its answer URL carries ``session_id``)."""
    if not leg.url:
        return None
    return (parse_qs(urlsplit(leg.url).query).get("session_id") or [None])[0]


async def escalation_demo(log_dir: Path) -> int:
    """``make demo SCENARIO=escalation``: the caller asks for a person; the first on the
    hunt list is busy, the second answers, presses a key, hears who is calling and why,
    accepts, talks in the conference and hangs up; the caller is back with the AI."""
    from dealerline_common.logs import configure_logging, mask_phone

    configure_logging("demo", level="WARNING", json=False)

    def progress(status: EscalationStatus) -> None:
        who = f" {status.staff_name}" if status.staff_name else ""
        print(f"  [human call] {status.status.value}{who}", flush=True)

    async with EscalationLab(
        log_dir=log_dir, time_scale=1.0, quiet=False, statuses=StatusLog(echo=progress)
    ) as lab:
        print(f"LLM: {lab.fleet.llm.describe()}", flush=True)
        first, second = lab.staff[0], lab.staff[1]
        print(
            f"Hunt list: {', '.join(s.name for s in lab.staff)}. {first.name} is busy; "
            f"{second.name} answers, accepts and talks for 10 s.",
            flush=True,
        )
        print(f"Placing a call from {mask_phone(CALLER_NUMBER)} ...", flush=True)
        run = await lab.run(
            {
                first.phone: HumanScript.busy(ring_s=3.0),
                second.phone: HumanScript.accepts_then_hangs_up(talk_s=10.0, ring_s=3.0),
            }
        )
        said = {leg.sid: lab.sim.said_to(leg.sid) for leg in run.staff_legs}
    _print_caller_side(run)
    _print_staff_side(run, said)
    _print_final_state(run)
    if not _came_back_from_staff(run):
        print(
            "\nthe escalation did not end with the caller back from the team member",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_caller_side(run: EscalationCall) -> None:
    print("\n── What the caller heard " + "─" * 45)
    print(f"  the caller said: {ASK_FOR_A_PERSON}")
    for i, text in enumerate(run.heard, 1):
        label = "with the AI" if i == 1 else "back with the AI"
        print(f"  stream {i} ({label}): {text}")
    print("\n── Human-call status timeline (seconds since the call started) " + "─" * 8)
    for line in run.timeline():
        print("  " + line)


def _print_staff_side(run: EscalationCall, said: Mapping[str, list[str]]) -> None:
    """The staff legs as Twilio saw them (what each heard, keys pressed) and the room."""
    from dealerline_common.logs import mask_phone

    print("\n── Staff calls (Twilio's view) " + "─" * 39)
    for leg in run.staff_legs:
        print(f"  {leg.sid}  to {mask_phone(leg.to_number)}  {' → '.join(leg.statuses)}")
        for text in said.get(leg.sid, []):
            print(f"      heard: {text}")
        if leg.pressed:
            print(f"      keys pressed: {', '.join(leg.pressed)}")
    if run.conference is not None:
        names = {run.call.call_sid: "the caller"}
        names.update({leg.sid: f"staff {mask_phone(leg.to_number)}" for leg in run.staff_legs})
        who = [names.get(p.call_sid, p.call_sid) for p in run.conference.participants_history]
        together = len(who) > 1 and run.conference.held_together(
            *{p.call_sid for p in run.conference.participants_history}
        )
        print(
            f"  conference {run.conference.friendly_name}: {', '.join(who)}"
            f" ({'held both legs' if together else 'never held both legs'})"
        )


def _print_final_state(run: EscalationCall) -> None:
    esc = run.state.escalation if run.state else None
    print("\n── Final escalation state in the store " + "─" * 31)
    if esc is not None:
        print(
            f"  status={esc.status.value} detail={esc.detail} staff={esc.staff_name} "
            f"attempts={esc.attempts}"
        )


def _came_back_from_staff(run: EscalationCall) -> bool:
    """The staff member ended the call and the caller heard the AI on a second stream."""
    final = run.final
    return (
        final is not None
        and final.status is S.COMPLETED
        and final.reason == "human_ended"
        and len(run.heard) == 2
    )
