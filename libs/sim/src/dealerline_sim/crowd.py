"""Many simulated callers at once, through the real fleet (``make load``, ``make soak`` and
the load test).

Each caller is a :class:`~dealerline_sim.call.Call` placed by its own
:class:`~dealerline_sim.phone.PhoneSimulator`: a signed webhook, a Media Stream, the
caller's lines spoken in real time (Kokoro, synthesized before the run in one of several
voices and speeds so the calls differ), and after each line a wait for the agent's reply.
Callers start staggered. Per call it records:

- turn latency: the caller's last voiced frame went out → the reply's first media frame
  arrived (the caller's own clock; ``None`` for a turn that got no reply: *unanswered*);
- late outbound frames, measured at the caller by :class:`FrameClock`: within one reply
  sentence (media messages with no mark between them), a message arriving more than
  20 ms after the audio before it had finished (arrival of the previous message plus its
  duration) is late — the caller's earpiece would have run dry;
- errors: the webhook refused, the stream failed or was closed by the server, no greeting,
  protocol errors (Twilio error 31924).

:func:`run_crowd` places a batch of calls at once; :func:`keep_calling` keeps ``slots``
calls going until a deadline, a new call starting as soon as one ends (the soak).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dealerline_common.audio import SAMPLE_RATE
from dealerline_common.logs import get_logger

from .call import Call
from .phone import PhoneSimulator
from .voice import synthesize_ulaw

__all__ = [
    "SCRIPTS",
    "VOICES",
    "CallPlan",
    "CallResult",
    "CrowdResult",
    "FrameClock",
    "FleetDoor",
    "keep_calling",
    "plans",
    "prepare",
    "run_call",
    "run_crowd",
]

log = get_logger(__name__)

LATE_AFTER_S = 0.020  # a message this much after the audio before it ran out is late
DEALER = "+18005550100"

# What the callers say: lines the scripted LLM scenario (demo.yaml) answers, none of which
# ends the call, so every caller turn should get a reply.
SCRIPTS: tuple[tuple[str, ...], ...] = (
    (
        "Hi, I would like to book an oil change for my car.",
        "Tuesday morning would be great, around nine.",
        "Thank you very much.",
    ),
    (
        "How much does a tire rotation cost?",
        "What time do you close on Saturday?",
        "Great, thanks.",
    ),
    (
        "What services do you offer?",
        "My name is Maria Lopez.",
        "Thanks a lot.",
    ),
    (
        "Are you open on Saturday?",
        "How much is an oil change?",
        "Thank you.",
    ),
)
# The bundled Kokoro voices other than the agent's (jf_nezumi), and speaking speeds.
VOICES: tuple[str, ...] = ("jm_kumo", "jf_alpha", "jf_tebukuro", "jf_gongitsune")
SPEEDS: tuple[float, ...] = (1.0, 0.9, 1.1, 1.2)


@dataclass(frozen=True)
class CallPlan:
    """One caller: what it says, in which voice and speed, and when it rings."""

    index: int
    lines: tuple[str, ...]
    voice: str
    speed: float
    start_delay_s: float = 0.0

    @property
    def from_number(self) -> str:
        return f"+1415555{self.index % 10_000:04d}"


def plans(n: int, turns: int, stagger_s: float = 0.7, first: int = 0) -> list[CallPlan]:
    """``n`` callers, each saying ``turns`` lines of its script (varied scripts, voices and
    speeds), the ``i``-th ringing ``i * stagger_s`` after the first."""
    out = []
    for i in range(n):
        k = first + i
        script = SCRIPTS[k % len(SCRIPTS)]
        lines = tuple(script[j % len(script)] for j in range(turns))
        voice, speed = VOICES[k % len(VOICES)], SPEEDS[(k // len(VOICES)) % len(SPEEDS)]
        out.append(CallPlan(k, lines, voice, speed, i * stagger_s))
    return out


async def prepare(call_plans: Sequence[CallPlan]) -> None:
    """Synthesize every line ahead (cached), so the callers' speech costs no CPU during
    the run."""
    for plan in call_plans:
        for line in plan.lines:
            await synthesize_ulaw(line, plan.voice, plan.speed)


class FrameClock(list[dict[str, Any]]):
    """Stands in for ``Call.received``: counts what the server sent and times each media
    message against the end of the audio before it (see the module's docstring). Keeps
    counts, not the messages, so long runs do not grow."""

    def __init__(self) -> None:
        super().__init__()
        self.media = 0
        self.late = 0
        self.worst_gap_s = 0.0
        self._audio_ends: float | None = None  # perf_counter the audio sent so far runs out

    def append(self, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        now = time.perf_counter()
        if event != "media":
            self._audio_ends = None  # a mark or clear: the sentence is over
            return
        payload = str(msg.get("media", {}).get("payload", ""))
        seconds = (len(payload) * 3 // 4 - payload[-2:].count("=")) / SAMPLE_RATE
        self.media += 1
        ends = self._audio_ends
        if ends is not None:
            gap = now - ends
            self.worst_gap_s = max(self.worst_gap_s, gap)
            if gap > LATE_AFTER_S:
                self.late += 1
        self._audio_ends = max(now, ends or now) + seconds


@dataclass
class CallResult:
    """What one caller saw."""

    plan: CallPlan
    session_id: str | None = None
    greeting_s: float | None = None
    latencies: list[float | None] = field(default_factory=list)  # one per caller turn
    media: int = 0
    late: int = 0
    worst_gap_s: float = 0.0
    error: str | None = None
    protocol_errors: int = 0

    @property
    def unanswered(self) -> int:
        return sum(1 for x in self.latencies if x is None)


@dataclass
class CrowdResult:
    calls: list[CallResult]
    seconds: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return [x for c in self.calls for x in c.latencies if x is not None]

    @property
    def turns(self) -> int:
        return sum(len(c.latencies) for c in self.calls)

    @property
    def unanswered(self) -> int:
        return sum(c.unanswered for c in self.calls)

    @property
    def errors(self) -> list[str]:
        return [f"call {c.plan.index}: {c.error}" for c in self.calls if c.error]

    @property
    def media(self) -> int:
        return sum(c.media for c in self.calls)

    @property
    def late(self) -> int:
        return sum(c.late for c in self.calls)


@dataclass(frozen=True)
class FleetDoor:
    """Where the callers ring: the gateway's local URL, its public URL, the auth token."""

    gateway_url: str
    public_url: str
    auth_token: str


def _reply_after(call: Call, first_segment: int, since: float) -> float | None:
    times = [
        s.first_received_at
        for s in call.heard_segments[first_segment:]
        if s.first_received_at is not None and s.first_received_at >= since
    ]
    return min(times) - since if times else None


async def _turns(
    call: Call, plan: CallPlan, result: CallResult, quiet_s: float, timeout_s: float
) -> None:
    started = time.time()
    await call.wait_until_quiet(quiet_s, timeout_s)  # the greeting
    result.greeting_s = _reply_after(call, 0, started)
    for line in plan.lines:
        first = len(call.heard_segments)
        speech = await synthesize_ulaw(line, plan.voice, plan.speed)
        said = await call.say_audio(speech, text=line)
        ended = said.speech_ended_at or time.time()
        with contextlib.suppress(TimeoutError):  # unanswered: recorded as None below
            await call.wait_until_quiet(quiet_s, timeout_s)
        result.latencies.append(_reply_after(call, first, ended))
        if not call.is_open:
            result.error = "the call ended before the script did"
            return


async def run_call(
    door: FleetDoor, plan: CallPlan, *, quiet_s: float = 1.5, timeout_s: float = 60.0
) -> CallResult:
    """Place one call, say the plan's lines, hang up; never raises (errors are recorded)."""
    result = CallResult(plan)
    clocks: list[FrameClock] = []

    def install(call: Call) -> None:
        clock = FrameClock()
        call.received = clock
        clocks.append(clock)

    await asyncio.sleep(plan.start_delay_s)
    try:
        async with PhoneSimulator(
            door.gateway_url, door.public_url, door.auth_token, caller_voice=plan.voice
        ) as sim:
            sim.add_call_observer(install)
            call = await sim.place_call(plan.from_number, DEALER)
            result.session_id = call.custom_parameters.get("session_id")
            async with call:
                await _turns(call, plan, result, quiet_s, timeout_s)
            result.protocol_errors = len(call.protocol_errors)
            if call.closed_by_server and result.error is None:
                result.error = "the server closed the stream"
    except Exception as exc:  # a failed call is a result, not the end of the run
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("simulated call failed", index=plan.index, error=result.error)
    for clock in clocks:
        result.media += clock.media
        result.late += clock.late
        result.worst_gap_s = max(result.worst_gap_s, clock.worst_gap_s)
    return result


async def run_crowd(door: FleetDoor, call_plans: Sequence[CallPlan], **kw: float) -> CrowdResult:
    """All ``call_plans`` at once (each after its start delay)."""
    started = time.perf_counter()
    results = await asyncio.gather(*(run_call(door, p, **kw) for p in call_plans))
    return CrowdResult(list(results), time.perf_counter() - started)


async def keep_calling(
    door: FleetDoor,
    slots: int,
    until: float,
    plan_for: Callable[[int], CallPlan],
    on_result: Callable[[CallResult], None],
    **kw: float,
) -> None:
    """Keep ``slots`` calls going until ``until`` (``time.monotonic()``): each slot places
    ``plan_for(n)`` (n counts every call placed) and starts the next when it ends."""
    counter = iter(range(1 << 62))

    async def slot() -> None:
        while time.monotonic() < until:
            on_result(await run_call(door, plan_for(next(counter)), **kw))

    await asyncio.gather(*(slot() for _ in range(slots)))
