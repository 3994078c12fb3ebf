"""Which turns and sessions a TTS worker must no longer speak for.

Every worker hears every control message (a plain subscription, not a queue group), so
each keeps its own bounded memory: a barge-in is remembered for ``ttl_s`` (longer than a
sentence can wait in the ``say`` stream) and the oldest entries go first past
``capacity``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


class CancelledTurns:
    def __init__(
        self,
        ttl_s: float = 600.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.clock = clock
        self._turns: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._sessions: OrderedDict[str, float] = OrderedDict()

    def cancel_turn(self, session_id: str, turn_id: str) -> None:
        self._put(self._turns, (session_id, turn_id))

    def stop_session(self, session_id: str) -> None:
        """The call's media stream ended: nothing queued for it can be played."""
        self._put(self._sessions, session_id)
        for key in [k for k in self._turns if k[0] == session_id]:
            del self._turns[key]

    def resume_session(self, session_id: str) -> None:
        """A media stream (re)started: the session speaks again (e.g. after a human leg)."""
        self._sessions.pop(session_id, None)

    def is_cancelled(self, session_id: str, turn_id: str) -> bool:
        self._expire()
        return (session_id, turn_id) in self._turns or session_id in self._sessions

    def __len__(self) -> int:
        self._expire()
        return len(self._turns) + len(self._sessions)

    def _put(self, table: OrderedDict[K, float], key: K) -> None:
        table[key] = self.clock()
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)
        self._expire()

    def _expire(self) -> None:
        limit = self.clock() - self.ttl_s
        for table in (self._turns, self._sessions):
            while table and next(iter(table.values())) < limit:
                table.popitem(last=False)
