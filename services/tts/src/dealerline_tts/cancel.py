"""Which turns and sessions a TTS worker must no longer speak for.

Every worker hears every control message (a plain subscription, not a queue group), so
each keeps its own bounded memory: a barge-in is remembered for ``ttl_s`` (longer than a
sentence can wait in the ``say`` stream) and the oldest entries go first past
``capacity``.

A call has several media streams over its life (a human leg in between), and the stop of
the old one may arrive after the next one started (another gateway, a slow teardown). So
the latest ``StreamStarted`` stream of each session is remembered the same way, and a stop
that names another stream is ignored instead of muting the call that replaced it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Expiring(Generic[K, V]):
    """An insertion-ordered map whose entries expire ``ttl_s`` after they were last put,
    holding at most ``capacity`` entries (the oldest go first)."""

    def __init__(self, ttl_s: float, capacity: int, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._items[key] = (self.clock(), value)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        self.expire()

    def get(self, key: K) -> V | None:
        self.expire()
        item = self._items.get(key)
        return None if item is None else item[1]

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def __iter__(self) -> Iterator[K]:
        self.expire()
        return iter(list(self._items))

    def __contains__(self, key: object) -> bool:
        self.expire()
        return key in self._items

    def __len__(self) -> int:
        self.expire()
        return len(self._items)

    def expire(self) -> None:
        limit = self.clock() - self.ttl_s
        while self._items and next(iter(self._items.values()))[0] < limit:
            self._items.popitem(last=False)


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
        self._turns: _Expiring[tuple[str, str], None] = _Expiring(ttl_s, capacity, clock)
        self._sessions: _Expiring[str, None] = _Expiring(ttl_s, capacity, clock)
        # session -> the stream_sid of its latest StreamStarted
        self._streams: _Expiring[str, str] = _Expiring(ttl_s, capacity, clock)

    def cancel_turn(self, session_id: str, turn_id: str) -> None:
        self._turns.put((session_id, turn_id), None)

    def stop_session(self, session_id: str, stream_sid: str | None = None) -> bool:
        """The call's media stream ended: nothing queued for it can be played.

        A stop naming a stream other than the session's latest started one is stale (that
        stream was already replaced) and is ignored; returns whether the session was muted.
        A stop without a stream, or for a session whose stream is not known here, mutes.
        """
        current = self._streams.get(session_id)
        if stream_sid is not None and current is not None and stream_sid != current:
            return False
        self._sessions.put(session_id, None)
        for key in [k for k in self._turns if k[0] == session_id]:
            self._turns.pop(key)
        return True

    def resume_session(self, session_id: str, stream_sid: str | None = None) -> None:
        """A media stream (re)started: the session speaks again (e.g. after a human leg)."""
        self._sessions.pop(session_id)
        if stream_sid is not None:
            self._streams.put(session_id, stream_sid)

    def current_stream(self, session_id: str) -> str | None:
        """The stream of the session's latest ``StreamStarted``, while remembered."""
        return self._streams.get(session_id)

    def is_cancelled(self, session_id: str, turn_id: str) -> bool:
        return (session_id, turn_id) in self._turns or session_id in self._sessions

    def __len__(self) -> int:
        """Cancelled turns plus muted sessions (the remembered streams are not counted)."""
        return len(self._turns) + len(self._sessions)
