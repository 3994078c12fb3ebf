"""The callers of a chaos run: a few simulated callers (the Twilio simulator, real audio;
crowd's scripts, voices and speeds) placing calls one after another until told to stop,
each saying a few lines and waiting
for each reply to be played to its end before the next; one that does not come within
the caller's patience (``patience_s``) is given up on (a lost turn) and the caller goes on.

Every line is recorded with the utterance the gateway made of it (from :class:`BusWatch`),
so the tally can tell, line by line, whether the caller got its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

from dealerline_sim import crowd
from dealerline_sim.call import Call
from dealerline_sim.chaos_watch import BusWatch
from dealerline_sim.phone import PhoneSimulator
from dealerline_sim.twiml import SimulatorError
from dealerline_sim.voice import synthesize_ulaw

# The callers are crowd's (varied scripts, voices and speeds); this many of its plans are
# used in turn, so their speech is synthesized once before the run.
PLANS = 8


@dataclass
class LineRecord:
    """One line a caller said, and the utterance id the gateway gave it (None: not seen)."""

    call: Call
    text: str
    utterance_id: str | None = None
    waited_out: bool = False  # no complete reply within the caller's patience: it gave up
    took_s: float | None = None  # from the start of the line to its reply heard complete


@dataclass
class ChaosCallers:
    sim: PhoneSimulator
    watch: BusWatch
    count: int
    lines_per_call: int = 3
    patience_s: float = 90.0
    rng: random.Random = field(default_factory=random.Random)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[Call] = field(default_factory=list)
    lines: list[LineRecord] = field(default_factory=list)
    greetings_missing: int = 0
    errors: list[str] = field(default_factory=list)

    async def prepare(self) -> None:
        await crowd.prepare(crowd.plans(PLANS, self.lines_per_call))

    async def run(self) -> None:
        """Run every caller until :attr:`stop` is set; each finishes its line first."""
        await asyncio.gather(*(self._caller(i) for i in range(self.count)))

    async def _caller(self, index: int) -> None:
        while not self.stop.is_set():
            try:
                await self._one_call()
            except (SimulatorError, OSError, TimeoutError) as exc:
                self.errors.append(f"caller {index}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _one_call(self) -> None:
        plan = crowd.plans(1, self.lines_per_call, first=self.rng.randrange(PLANS))[0]
        call = await self.sim.place_call(plan.from_number, crowd.DEALER)
        self.calls.append(call)
        async with call:
            if not await self._heard_greeting(call):
                self.greetings_missing += 1
            for line in plan.lines:
                if self.stop.is_set() or call.closed.is_set():
                    break
                await self._turn(call, line, plan)

    async def _heard_greeting(self, call: Call) -> bool:
        deadline = time.monotonic() + self.patience_s
        while not any(not e.cleared for e in call.mark_echoes):
            if time.monotonic() > deadline or call.closed.is_set():
                return False
            await asyncio.sleep(0.1)
        await _quiet(call, 1.0)
        return True

    async def _turn(self, call: Call, text: str, plan: crowd.CallPlan) -> None:
        record = LineRecord(call, text)
        self.lines.append(record)
        speech = await synthesize_ulaw(text, plan.voice, plan.speed)  # cached by prepare
        started = time.monotonic()
        await call.say_audio(speech, text=text)
        deadline = started + self.patience_s
        while time.monotonic() < deadline and not call.closed.is_set():
            if record.utterance_id is None:
                seen = self.watch.utterance_for(_session_of(call), started)
                record.utterance_id = seen.utterance_id if seen is not None else None
            if record.utterance_id is not None:
                if self._done(call, record.utterance_id):
                    record.took_s = time.monotonic() - started
                    break
            elif _heard_reply_and_quiet(call, 10.0):
                break  # the watch missed it (it was away during a NATS restart)
            await asyncio.sleep(0.1)
        else:
            record.waited_out = not call.closed.is_set()
        await _quiet(call, 0.8)

    def _done(self, call: Call, utterance_id: str) -> bool:
        """The reply was seen played, or the caller heard every sentence of it (what counts
        if the watch missed the ``TurnPlayed``)."""
        seen = self.watch.turns[utterance_id]
        if seen.played_at is None and seen.heard_at is None:
            echoed = {e.name for e in call.mark_echoes if not e.cleared}
            if any(self.watch.heard_all(t, echoed) for t in list(seen.turn_ids)):
                seen.heard_at = time.monotonic()
        return seen.played_at is not None or seen.heard_at is not None


def _session_of(call: Call) -> str:
    """The session id the gateway gave the call (a parameter of its stream's TwiML)."""
    return call.custom_parameters.get("session_id", "")


def _heard_reply_and_quiet(call: Call, quiet_s: float) -> bool:
    playout = call.playout
    loop_now = asyncio.get_running_loop().time()
    return playout.reply_bytes > 0 and playout.idle and loop_now - playout.last_activity > quiet_s


async def _quiet(call: Call, quiet_s: float) -> None:
    with contextlib.suppress(TimeoutError, SimulatorError):
        await call.wait_until_quiet(quiet_s, 20.0)
