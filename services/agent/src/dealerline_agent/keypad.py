"""The caller's key presses as input: "press 1 to confirm" works.

The gateway publishes one ``Dtmf`` per key on ``call.<sid>.control``. Keys are grouped
into runs: a run ends ``AGENT_DTMF_INTERDIGIT_S`` after its last key, or at once at
``#``. Each run becomes a normal turn whose input is ``[DTMF:<keys>]`` and whose id is
``turn_id_for_dtmf(<stream>, n)``, ``n`` being the position of the run's first key among
the stream's key presses.

Every replica hears every key on its plain control subscription and collects the runs;
the replica that received the run's first key through the ``agent`` queue group answers
it, so exactly one replica does and a run is never split between replicas. A key press
does not cut the reply being played short (what counts as a barge-in is the gateway's
call). The keys themselves are never logged: callers key in account and card numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from dealerline_common.conversation import dtmf_marker, turn_id_for_dtmf
from dealerline_common.logs import get_logger
from dealerline_common.messages import Dtmf

from .sessions import Sessions
from .tasks import Tasks
from .turns import TurnInput, TurnRunner

log = get_logger(__name__)

END_KEY = "#"
# How long a replica that collected a run waits for the queue group's word that the
# run's first key was its own (the two subscriptions may handle one key in either order).
CLAIM_GRACE_S = 0.5
_MAX_CLAIMS = 10_000


class Timer(Protocol):
    def cancel(self) -> None: ...


# ``loop.call_later``: run the callback after a delay, unless the timer is cancelled.
Schedule = Callable[[float, Callable[[], None]], Timer]


@dataclass(frozen=True)
class KeyRun:
    """Keys the caller pressed in one go."""

    session_id: str
    stream_sid: str | None
    digits: str
    seq: int  # the position (from 1) of its first key among the stream's key presses
    first_at: float  # its first key's ``Dtmf.at``: the same on every replica


@dataclass
class _Open:
    stream_sid: str | None
    seq: int
    first_at: float
    digits: list[str] = field(default_factory=list)
    timer: Timer | None = None


class DigitCollector:
    """Groups each session's key presses into runs and hands each finished run to
    ``on_run``: ``interdigit_s`` after its last key, or at once at ``#``."""

    def __init__(
        self,
        interdigit_s: float,
        on_run: Callable[[KeyRun], None],
        schedule: Schedule | None = None,
    ) -> None:
        self.interdigit_s = interdigit_s
        self.on_run = on_run
        self._schedule = schedule
        self._open: dict[str, _Open] = {}
        self._pressed: dict[str, tuple[str | None, int]] = {}  # keys so far, per stream

    def press(self, sid: str, stream_sid: str | None, digit: str, at: float) -> None:
        stream, pressed = self._pressed.get(sid, (stream_sid, 0))
        if stream != stream_sid:
            self.drop(sid)  # a new stream: its keys are counted afresh
            pressed = 0
        self._pressed[sid] = (stream_sid, pressed + 1)
        run = self._open.get(sid)
        if run is None:
            run = self._open[sid] = _Open(stream_sid, pressed + 1, at)
        run.digits.append(digit)
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if digit == END_KEY:
            self._end(sid)
        else:
            schedule = self._schedule or asyncio.get_running_loop().call_later
            run.timer = schedule(self.interdigit_s, partial(self._end, sid))

    def _end(self, sid: str) -> None:
        run = self._open.pop(sid, None)
        if run is None:
            return
        if run.timer is not None:
            run.timer.cancel()
        self.on_run(KeyRun(sid, run.stream_sid, "".join(run.digits), run.seq, run.first_at))

    def drop(self, sid: str) -> None:
        """Forget the session's keys (the stream ended): a run in progress is dropped."""
        run = self._open.pop(sid, None)
        if run is not None and run.timer is not None:
            run.timer.cancel()
        self._pressed.pop(sid, None)

    def close(self) -> None:
        for sid in list(self._open):
            self.drop(sid)
        self._pressed.clear()


class Keypad:
    def __init__(
        self,
        runner: TurnRunner,
        sessions: Sessions,
        tasks: Tasks,
        interdigit_s: float,
        *,
        schedule: Schedule | None = None,
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.tasks = tasks
        self.collector = DigitCollector(interdigit_s, self._run_ended, schedule)
        self._claims: OrderedDict[tuple[str, float], None] = OrderedDict()

    def pressed(self, dtmf: Dtmf) -> None:
        """Every replica: collect the key."""
        sid = dtmf.session_id
        if self.sessions.hung_up(sid):
            return
        session = self.sessions.get(sid)
        if session is not None:
            session.touch()
        stream_sid = session.stream_sid if session is not None else None
        self.collector.press(sid, stream_sid, dtmf.digit, dtmf.at)

    def claim(self, dtmf: Dtmf) -> None:
        """The queue group gave this replica the key: it answers the run the key starts."""
        self._claims[(dtmf.session_id, dtmf.at)] = None
        while len(self._claims) > _MAX_CLAIMS:
            self._claims.popitem(last=False)

    def stream_stopped(self, sid: str) -> None:
        self.collector.drop(sid)

    def close(self) -> None:
        self.collector.close()

    def _run_ended(self, run: KeyRun) -> None:
        self.tasks.spawn(self._answer(run), name=f"keys:{run.session_id}:{run.seq}")

    async def _answer(self, run: KeyRun) -> None:
        if not await self._claimed(run.session_id, run.first_at):
            return  # another replica answers
        turn_id = turn_id_for_dtmf(run.stream_sid or run.session_id, run.seq)
        log.info("key presses", session_id=run.session_id, turn_id=turn_id, keys=len(run.digits))
        await self.runner.turn(run.session_id, TurnInput(turn_id, dtmf_marker(run.digits)))

    async def _claimed(self, sid: str, at: float) -> bool:
        deadline = time.monotonic() + CLAIM_GRACE_S
        while (sid, at) not in self._claims:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        del self._claims[(sid, at)]
        return True
