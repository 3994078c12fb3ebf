"""How many messages one media-stream socket may send: a token bucket, with no I/O.

Twilio sends 50 media frames a second on a call, plus the odd mark echo or key press. A
socket that sends far more than that for long is not Twilio: every message it sends
costs the gateway's one event loop its WebSocket parsing and frame handling, time taken
from every other call's playback. :class:`MessageBudget` allows ``RATE`` messages a
second on average and ``BURST`` at once (a carrier catching up after a network stall, a
test or simulator sending seconds of audio at a time); the media session closes a socket
that goes past it (1008, counted as ``flood``). Before ``start`` Twilio sends one message
(``connected``): a socket sending more than ``BEFORE_START`` messages before it is closed
the same way.
"""

from __future__ import annotations

RATE = 500.0  # messages a second: ten times what Twilio sends
BURST = 3000.0  # a minute of Twilio's media frames at once
BEFORE_START = 20  # messages a socket may send before its start


class MessageBudget:
    """``rate`` messages a second, ``burst`` at once; ``now`` is any monotonic clock."""

    def __init__(self, now: float, rate: float = RATE, burst: float = BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now
        self._count = 0

    def take(self, now: float, started: bool = True) -> bool:
        """One message arrived at ``now``: False when it is past the budget (before the
        stream started, ``BEFORE_START`` messages in all)."""
        self._count += 1
        if not started and self._count > BEFORE_START:
            return False
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
