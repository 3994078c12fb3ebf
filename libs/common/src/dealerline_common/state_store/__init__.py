"""Conversation state stores with optimistic locking.

One JSON document per session holds the :class:`~dealerline_common.state.ConversationState`;
its ``version`` field is the lock token. A writer reads ``(state, version)``, works on it
(an agent turn may take seconds), and writes back only if the stored version is still the
one it read (:meth:`StateStore.set_state_if_version`); :meth:`StateStore.update` wraps that
read-mutate-write cycle, retrying a lost race with jittered backoff until a deadline.

Background results (escalation progress, notifications for the agent) never write the
document: they go to separate keys that are safe to write concurrently (an atomic list of
notifications, one record per task; see :mod:`.keys`), and
:meth:`StateStore.sync_atomic_updates_to_state` merges them in at the start of a turn,
exactly once, in the same atomic step as the state write.

:meth:`StateStore.count_in_window` counts events per name within a rolling window (a
sorted set in Redis), atomically and across processes: limits that must hold across calls
and replicas, such as failed identity checks per customer.

A turn's reply is logged sentence by sentence before it is published
(:meth:`StateStore.note_reply`), so whoever takes over a redelivered turn resumes it.

Two implementations share the interface and one test suite: :class:`RedisStateStore`
(production; a compare-and-set in Lua, Redis restarts ridden out until a deadline) and :class:`MemoryStateStore` (the embedded default for a
single process; an ``asyncio.Lock`` gives the same guarantees). Pick one with
:func:`state_store_from_url`.

- :mod:`.base`: the :class:`StateStore` interface and the shared update cycle;
- :mod:`.errors`: the errors the stores raise;
- :mod:`.keys`: a session's key layout, hash-tagged for Redis Cluster (and a window
  counter's key);
- :mod:`.policy`: how long lost races and an unreachable Redis are retried;
- :mod:`.scripts`: the Redis store's Lua steps;
- :mod:`.stored`: decoding stored documents, notifications and task records;
- :mod:`.merge`: merging background results into the state;
- :mod:`.memory_store` / :mod:`.redis_store`: the two stores;
- :mod:`.from_url`: :func:`state_store_from_url`.
"""

from .base import DEFAULT_TTL_S, Mutator, StateStore, WindowCount
from .errors import StateConflictError, StateStoreError, StateStoreUnavailable
from .from_url import state_store_from_url
from .memory_store import MemoryStateStore
from .policy import (
    DEFAULT_BACKOFF_S,
    DEFAULT_CONFLICT_DEADLINE_S,
    DEFAULT_UNAVAILABLE_DEADLINE_S,
    RetryPolicy,
)
from .redis_store import RedisStateStore

__all__ = [
    "DEFAULT_BACKOFF_S",
    "DEFAULT_CONFLICT_DEADLINE_S",
    "DEFAULT_TTL_S",
    "DEFAULT_UNAVAILABLE_DEADLINE_S",
    "MemoryStateStore",
    "Mutator",
    "RedisStateStore",
    "RetryPolicy",
    "StateConflictError",
    "StateStore",
    "StateStoreError",
    "StateStoreUnavailable",
    "WindowCount",
    "state_store_from_url",
]
