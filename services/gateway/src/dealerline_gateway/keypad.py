"""The caller's key presses grouped into runs, one stream at a time; no I/O, no clock of
its own (every call is given the time).

A run ends at once at ``#`` (which stays in its digits) or when it reaches
:data:`MAX_KEYS` keys; otherwise it ends ``interdigit_s`` after its last key. A stream's
runs are numbered from 1, so the agent can name the turn that answers each one. The keys
are never logged here: callers key in account and card numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEYS = frozenset("0123456789*#")  # what a Media Streams ``dtmf`` event may carry
END_KEY = "#"
MAX_KEYS = 32


@dataclass(frozen=True)
class KeyRun:
    """Keys the caller pressed in one go."""

    run: int  # 1, 2, … per stream
    digits: str
    first_at: float  # the run's first key
    at: float  # the run's last key


@dataclass
class _Open:
    run: int
    first_at: float
    at: float
    digits: list[str] = field(default_factory=list)


class KeyRuns:
    def __init__(self, interdigit_s: float) -> None:
        self.interdigit_s = interdigit_s
        self._runs = 0
        self._open: _Open | None = None

    @property
    def deadline(self) -> float | None:
        """When the open run ends unless another key comes (None: no run open)."""
        return None if self._open is None else self._open.at + self.interdigit_s

    def press(self, digit: str, at: float) -> list[KeyRun]:
        """Add a key pressed at ``at``; the runs that ended, oldest first: the open run if
        it had already expired, and the run this key ends (at ``#`` or the cap)."""
        ended = [run] if (run := self.expire(at)) is not None else []
        if self._open is None:
            self._runs += 1
            self._open = _Open(self._runs, at, at)
        self._open.digits.append(digit)
        self._open.at = at
        if digit == END_KEY or len(self._open.digits) >= MAX_KEYS:
            ended.append(self._end())
        return ended

    def expire(self, now: float) -> KeyRun | None:
        """The open run, ended, if no key came for ``interdigit_s`` by ``now``."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        return self._end()

    def drop(self) -> None:
        """Forget the open run (the caller left before it ended)."""
        self._open = None

    def _end(self) -> KeyRun:
        run = self._open
        assert run is not None
        self._open = None
        return KeyRun(run.run, "".join(run.digits), run.first_at, run.at)
