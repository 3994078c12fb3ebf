"""Conversation state stores with optimistic locking.

One JSON document per session holds the :class:`~dealerline_common.state.ConversationState`;
its ``version`` field is the lock token. A writer reads ``(state, version)``, works on it
(an agent turn may take seconds), and writes back only if the stored version is still the
one it read (:meth:`StateStore.set_state_if_version`); :meth:`StateStore.update` wraps that
read-mutate-write cycle with bounded, jittered retries.

Background results (escalation progress, notifications for the agent) never write the
document: they go to separate keys that are safe to write concurrently (an atomic list of
notifications, one record per task; see :mod:`.keys`), and
:meth:`StateStore.sync_atomic_updates_to_state` merges them in at the start of a turn,
exactly once, in the same atomic step as the state write.

:meth:`StateStore.count_in_window` counts events per name within a rolling window (a
sorted set in Redis), atomically and across processes: limits that must hold across calls
and replicas, such as failed identity checks per customer.

Two implementations share the interface and one test suite: :class:`RedisStateStore`
(production; WATCH/MULTI/EXEC) and :class:`MemoryStateStore` (the embedded default for a
single process; an ``asyncio.Lock`` gives the same guarantees). Pick one with
:func:`state_store_from_url`.

- :mod:`.base`: the :class:`StateStore` interface and the shared update cycle;
- :mod:`.errors`: the errors the stores raise;
- :mod:`.keys`: a session's key layout (and a window counter's key);
- :mod:`.stored`: decoding stored documents, notifications and task records;
- :mod:`.merge`: merging background results into the state;
- :mod:`.memory_store` / :mod:`.redis_store`: the two stores;
- :mod:`.from_url`: :func:`state_store_from_url`.
"""

from .base import DEFAULT_RETRIES, DEFAULT_TTL_S, Mutator, StateStore, WindowCount
from .errors import StateConflictError, StateStoreError, StateStoreUnavailable
from .from_url import state_store_from_url
from .memory_store import MemoryStateStore
from .redis_store import RedisStateStore

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TTL_S",
    "MemoryStateStore",
    "Mutator",
    "RedisStateStore",
    "StateConflictError",
    "StateStore",
    "StateStoreError",
    "StateStoreUnavailable",
    "WindowCount",
    "state_store_from_url",
]
