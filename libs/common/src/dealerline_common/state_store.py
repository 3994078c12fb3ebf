"""Conversation state stores with optimistic locking (the seed's ``state_store.py``).

One JSON document per session holds the :class:`~dealerline_common.state.ConversationState`;
its ``version`` field is the lock token. A writer reads ``(state, version)``, works on it
(an agent turn may take seconds), and writes back only if the stored version is still the
one it read (:meth:`StateStore.set_state_if_version`); :meth:`StateStore.update` wraps that
read-mutate-write cycle with bounded, jittered retries.

Background results (escalation progress, notifications for the agent) never write the
document: they go to separate keys that are safe to write concurrently (an atomic list of
notifications, one record per task), and :meth:`StateStore.sync_atomic_updates_to_state`
merges them in at the start of a turn, exactly once, in the same atomic step as the state
write. Keys, with an optional namespace prefix ``ns``::

    {ns}state:<sid>                    the document (JSON)
    {ns}notifications:<sid>            LIST of Notification JSON (RPUSH)
    {ns}delivered_notifications:<sid>  SET of notification ids already merged
    {ns}task:<sid>:<task_id>           one BackgroundTask (JSON)
    {ns}tasks:<sid>                    SET of task ids: an index, so a turn never SCANs

Two implementations share the interface and one test suite: :class:`RedisStateStore`
(production; WATCH/MULTI/EXEC) and :class:`MemoryStateStore` (the embedded default for a
single process; an ``asyncio.Lock`` gives the same guarantees). Pick one with
:func:`state_store_from_url`.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_random_exponential,
)

from .logs import get_logger
from .messages import now
from .state import BackgroundTask, ConversationState, Notification

try:  # the Redis client is the optional ``dealerline-common[state]`` extra
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.retry import Retry as RedisRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.exceptions import WatchError

    _REDIS_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    _REDIS_IMPORT_ERROR = _exc

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
    "state_store_from_url",
]

log = get_logger(__name__)

T = TypeVar("T")

DEFAULT_TTL_S = 86400.0
DEFAULT_RETRIES = 3  # the seed: "retry (up to 3x)"

Mutator = Callable[[ConversationState], None | Awaitable[None]]


class StateStoreError(RuntimeError):
    """Base of every error the state stores raise (bad stored data included)."""


class StateConflictError(StateStoreError):
    """A write kept losing to concurrent writers after every retry."""


class StateStoreUnavailable(StateStoreError):
    """The backing store (Redis) could not be reached after bounded retries."""


class _Lost(Exception):
    """One optimistic attempt lost to a concurrent writer; internal retry signal."""


@dataclass(frozen=True, slots=True)
class _Keys:
    state: str
    notifications: str
    delivered: str
    tasks: str  # index of task ids
    task_prefix: str

    @classmethod
    def of(cls, ns: str, session_id: str) -> _Keys:
        return cls(
            state=f"{ns}state:{session_id}",
            notifications=f"{ns}notifications:{session_id}",
            delivered=f"{ns}delivered_notifications:{session_id}",
            tasks=f"{ns}tasks:{session_id}",
            task_prefix=f"{ns}task:{session_id}:",
        )

    def task(self, task_id: str) -> str:
        return f"{self.task_prefix}{task_id}"

    @property
    def fixed(self) -> tuple[str, str, str, str]:
        """The keys every session may have, whatever its tasks."""
        return (self.state, self.notifications, self.delivered, self.tasks)


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _parse_state(raw: str, key: str) -> ConversationState:
    try:
        return ConversationState.model_validate_json(raw)
    except ValidationError as exc:
        raise StateStoreError(f"stored state at {key!r} is not a valid ConversationState") from exc


def _stored_version(raw: str | None, key: str) -> int:
    """The version of a stored document without validating all of it (0 if absent)."""
    if raw is None:
        return 0
    try:
        doc = json.loads(raw)
        version = doc["version"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StateStoreError(f"stored state at {key!r} is not a versioned document") from exc
    if not isinstance(version, int):
        raise StateStoreError(f"stored state at {key!r} has a non-integer version")
    return version


def _parse_notifications(raws: Iterable[str], session_id: str) -> list[Notification]:
    out: list[Notification] = []
    for raw in raws:
        try:
            out.append(Notification.model_validate_json(raw))
        except ValidationError:
            # One bad entry must not block every later turn's sync; it can never be
            # delivered, so it is logged and skipped.
            log.error("state_store.bad_notification", session_id=session_id, raw=raw[:200])
    return out


def _parse_tasks(raws: Iterable[str | None], session_id: str) -> list[BackgroundTask]:
    out: list[BackgroundTask] = []
    for raw in raws:
        if raw is None:  # indexed but expired/deleted meanwhile
            continue
        try:
            out.append(BackgroundTask.model_validate_json(raw))
        except ValidationError:
            log.error("state_store.bad_task", session_id=session_id, raw=raw[:200])
    return out


def _merge_notifications(
    state: ConversationState, notifications: list[Notification], delivered: set[str]
) -> list[str]:
    """Append the not-yet-delivered notifications to ``state`` in place (first of each id
    wins) and return their ids; an id counts as delivered if either the delivered set or the
    state itself records it."""
    seen = delivered | set(state.delivered_notifications)
    new_ids: list[str] = []
    for note in notifications:
        if note.id in seen:
            continue
        seen.add(note.id)
        new_ids.append(note.id)
        state.pending_notifications.append(note)
        state.delivered_notifications.append(note.id)
    return new_ids


def _merge_tasks(state: ConversationState, tasks: list[BackgroundTask]) -> bool:
    """Put each task record into ``state.pending_tasks`` (replace if newer, else append);
    True if anything changed."""
    changed = False
    for record in sorted(tasks, key=lambda t: (t.updated_at, t.task_id)):
        index = next(
            (i for i, t in enumerate(state.pending_tasks) if t.task_id == record.task_id), None
        )
        if index is None:
            state.pending_tasks.append(record)
            changed = True
            continue
        current = state.pending_tasks[index]
        # Newer wins; an equal timestamp with different content also takes the record, so
        # the state converges on the record and the next sync sees no change.
        if record.updated_at >= current.updated_at and record != current:
            state.pending_tasks[index] = record
            changed = True
    return changed


class StateStore(abc.ABC):
    """The conversation state store: optimistic-locked document + atomic side keys.

    Every key of a session expires ``ttl_s`` after the session's last write, so a call that
    ends without cleanup never leaks. ``retries`` is how many times :meth:`update` (and the
    sync) re-reads and tries again after losing to a concurrent writer.
    """

    def __init__(
        self,
        *,
        namespace: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.05,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s!r}")
        self.namespace = namespace
        self.ttl_s = float(ttl_s)
        self.retries = retries
        self.backoff_s = backoff_s

    def keys(self, session_id: str) -> _Keys:
        _check_id("session_id", session_id)
        return _Keys.of(self.namespace, session_id)

    # -- the document --------------------------------------------------------------------

    @abc.abstractmethod
    async def get_state_with_version(self, session_id: str) -> tuple[ConversationState | None, int]:
        """The stored state and its version, or ``(None, 0)`` if there is none."""

    async def get_state(self, session_id: str) -> ConversationState:
        """The stored state, or a fresh (unstored) ``ConversationState`` for a new session."""
        state, _ = await self.get_state_with_version(session_id)
        return state if state is not None else ConversationState(session_id=session_id)

    @abc.abstractmethod
    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        """Write ``state`` only if the stored version is still ``expected_version``.

        ``expected_version`` 0 means "only if absent". On success the stored version is
        ``expected_version + 1``, ``state.version``/``state.updated_at`` are set to what was
        stored, and True is returned; a concurrent writer makes it return False (nothing
        written, ``state`` untouched).
        """

    async def update(
        self, session_id: str, mutate: Mutator, *, retries: int | None = None
    ) -> ConversationState:
        """Read, apply ``mutate`` (sync or async) to a fresh copy, write with the lock.

        On a lost race the state is re-read and ``mutate`` runs again on the new copy, so it
        must be a function of the state it is given (no side effects that must not repeat).
        Creates the document if absent. Raises :class:`StateConflictError` after
        ``1 + retries`` attempts; an exception from ``mutate`` propagates, nothing written.
        """
        _check_id("session_id", session_id)
        attempts = 1 + (self.retries if retries is None else retries)
        if attempts < 1:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Lost),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=self.backoff_s / 8, max=self.backoff_s),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    current, version = await self.get_state_with_version(session_id)
                    draft = current or ConversationState(session_id=session_id)
                    result = mutate(draft)
                    if inspect.isawaitable(result):
                        await result
                    if draft.session_id != session_id:
                        raise ValueError(
                            f"mutate changed session_id {session_id!r} -> {draft.session_id!r}"
                        )
                    if not await self.set_state_if_version(draft, version):
                        log.debug("state_store.conflict", session_id=session_id, version=version)
                        raise _Lost
                    return draft
        except _Lost:
            log.warning("state_store.conflict_exhausted", session_id=session_id, attempts=attempts)
            raise StateConflictError(
                f"state of session {session_id!r} changed under every one of "
                f"{attempts} attempts to update it"
            ) from None
        raise AssertionError("unreachable: tenacity either returned or raised")

    # -- background results -------------------------------------------------------------

    @abc.abstractmethod
    async def push_notification(self, session_id: str, notification: Notification) -> None:
        """Queue a notification for the agent (atomic append; safe from any process)."""

    @abc.abstractmethod
    async def set_task(self, session_id: str, task: BackgroundTask) -> None:
        """Store (replace) one background task record."""

    @abc.abstractmethod
    async def get_task(self, session_id: str, task_id: str) -> BackgroundTask | None:
        """One background task record, or None."""

    @abc.abstractmethod
    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        """Merge queued notifications and task records into the state, exactly once.

        Each notification id not yet delivered is appended to ``pending_notifications`` and
        recorded as delivered (in the state and the delivered set) in the same atomic write;
        each task record replaces the state's copy if newer, or is appended. Returns the
        stored state; its version is bumped only if something changed. Raises
        :class:`StateConflictError` if concurrent writers won every attempt.
        """

    # -- housekeeping ----------------------------------------------------------------------

    @abc.abstractmethod
    async def key_ttls(self, session_id: str) -> dict[str, float]:
        """Seconds to live of each existing key of the session (for ops and tests)."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> None:
        """Remove every key of the session."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


# ---------------------------------------------------------------------------------------
# In memory
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    value: str | list[str] | set[str]
    expires_at: float


class MemoryStateStore(StateStore):
    """The embedded store for one process, with the Redis store's semantics.

    Same keys, same version checks, same exactly-once delivery and TTLs (measured on an
    injectable monotonic ``clock``). One ``asyncio.Lock`` makes each operation atomic;
    ``update``'s mutate runs outside it, so conflicts happen exactly as with Redis.
    """

    _SWEEP_EVERY_S = 60.0

    def __init__(
        self,
        *,
        namespace: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(namespace=namespace, ttl_s=ttl_s, retries=retries, backoff_s=backoff_s)
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()
        self._next_sweep = clock() + self._SWEEP_EVERY_S

    # Helpers below must be called with the lock held.

    def _live(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at <= self._clock():
            del self._data[key]
            return None
        return entry

    def _get_str(self, key: str) -> str | None:
        entry = self._live(key)
        if entry is None:
            return None
        assert isinstance(entry.value, str)
        return entry.value

    def _get_set(self, key: str) -> set[str]:
        entry = self._live(key)
        if entry is None:
            return set()
        assert isinstance(entry.value, set)
        return entry.value

    def _get_list(self, key: str) -> list[str]:
        entry = self._live(key)
        if entry is None:
            return []
        assert isinstance(entry.value, list)
        return entry.value

    def _put(self, key: str, value: str | list[str] | set[str]) -> None:
        self._data[key] = _Entry(value, self._clock() + self.ttl_s)

    def _touch(self, keys: _Keys) -> None:
        """Refresh the TTL of every key of the session (fixed keys and task records)."""
        expires_at = self._clock() + self.ttl_s
        names = [*keys.fixed, *(keys.task(t) for t in self._get_set(keys.tasks))]
        for key in names:
            entry = self._live(key)
            if entry is not None:
                entry.expires_at = expires_at
        self._sweep()

    def _sweep(self) -> None:
        """Drop expired sessions nobody reads again, at most once a minute (O(keys))."""
        t = self._clock()
        if t < self._next_sweep:
            return
        self._next_sweep = t + self._SWEEP_EVERY_S
        for key in [k for k, e in self._data.items() if e.expires_at <= t]:
            del self._data[key]

    async def get_state_with_version(self, session_id: str) -> tuple[ConversationState | None, int]:
        keys = self.keys(session_id)
        async with self._lock:
            raw = self._get_str(keys.state)
        if raw is None:
            return None, 0
        state = _parse_state(raw, keys.state)
        return state, state.version

    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        keys = self.keys(state.session_id)
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version!r}")
        stamped = state.model_copy(update={"version": expected_version + 1, "updated_at": now()})
        payload = stamped.model_dump_json()
        async with self._lock:
            if _stored_version(self._get_str(keys.state), keys.state) != expected_version:
                return False
            self._put(keys.state, payload)
            self._touch(keys)
        state.version = stamped.version
        state.updated_at = stamped.updated_at
        return True

    async def push_notification(self, session_id: str, notification: Notification) -> None:
        keys = self.keys(session_id)
        payload = notification.model_dump_json()
        async with self._lock:
            items = self._get_list(keys.notifications)
            items.append(payload)
            self._put(keys.notifications, items)
            self._touch(keys)

    async def set_task(self, session_id: str, task: BackgroundTask) -> None:
        keys = self.keys(session_id)
        _check_id("task_id", task.task_id)
        payload = task.model_dump_json()
        async with self._lock:
            self._put(keys.task(task.task_id), payload)
            index = self._get_set(keys.tasks)
            index.add(task.task_id)
            self._put(keys.tasks, index)
            self._touch(keys)

    async def get_task(self, session_id: str, task_id: str) -> BackgroundTask | None:
        keys = self.keys(session_id)
        _check_id("task_id", task_id)
        async with self._lock:
            raw = self._get_str(keys.task(task_id))
        return None if raw is None else BackgroundTask.model_validate_json(raw)

    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        keys = self.keys(session_id)
        async with self._lock:
            raw = self._get_str(keys.state)
            state = (
                _parse_state(raw, keys.state)
                if raw is not None
                else ConversationState(session_id=session_id)
            )
            notes = _parse_notifications(self._get_list(keys.notifications), session_id)
            task_ids = sorted(self._get_set(keys.tasks))
            tasks = _parse_tasks((self._get_str(keys.task(t)) for t in task_ids), session_id)
            delivered = self._get_set(keys.delivered)
            new_ids = _merge_notifications(state, notes, delivered)
            tasks_changed = _merge_tasks(state, tasks)
            if not new_ids and not tasks_changed:
                return state
            state.version += 1
            state.updated_at = now()
            self._put(keys.state, state.model_dump_json())
            delivered.update(new_ids)
            if delivered:
                self._put(keys.delivered, delivered)
            self._touch(keys)
        log.debug(
            "state_store.synced",
            session_id=session_id,
            notifications=len(new_ids),
            version=state.version,
        )
        return state

    async def key_ttls(self, session_id: str) -> dict[str, float]:
        keys = self.keys(session_id)
        async with self._lock:
            t = self._clock()
            names = [*keys.fixed, *(keys.task(i) for i in self._get_set(keys.tasks))]
            return {k: e.expires_at - t for k in names if (e := self._live(k)) is not None}

    async def delete(self, session_id: str) -> None:
        keys = self.keys(session_id)
        async with self._lock:
            for task_id in self._get_set(keys.tasks):
                self._data.pop(keys.task(task_id), None)
            for key in keys.fixed:
                self._data.pop(key, None)

    async def close(self) -> None:
        """Nothing to release; the data stays for the life of the process."""


# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------


# Refreshes the TTL of a session's fixed keys (KEYS, the task index last) and of every task
# record the index names, in one server-side step: no extra round trip for a write and no
# SCAN. It touches task keys it is not given in KEYS, which is fine on a single Redis (and a
# session's keys could only share a Cluster slot with hash tags anyway).
_REFRESH_LUA = """
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[2]) end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[#KEYS])) do
  redis.call('PEXPIRE', ARGV[1] .. id, ARGV[2])
end
return 1
"""


def _text(value: bytes | str | None) -> str | None:
    """redis-py types replies as bytes or str; with decode_responses=True they are str."""
    return value.decode() if isinstance(value, bytes) else value


def _texts(values: Iterable[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


class RedisStateStore(StateStore):
    """The production store: Redis, optimistic locking with WATCH/MULTI/EXEC.

    Connection errors are retried here with tenacity (``connect_attempts`` in all, jittered
    exponential backoff) and then raised as :class:`StateStoreUnavailable`; redis-py's own
    retry is switched off so the bound is this one. A retry after a connection error never
    applies a write twice: set_state_if_version recognises its own already-stored payload,
    notifications are de-duplicated by id at delivery, and the other writes are idempotent.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.05,
        connect_attempts: int = 4,
        socket_timeout_s: float = 5.0,
        client_name: str | None = None,
    ) -> None:
        super().__init__(namespace=namespace, ttl_s=ttl_s, retries=retries, backoff_s=backoff_s)
        if _REDIS_IMPORT_ERROR is not None:
            raise ImportError(
                "RedisStateStore needs the redis client: install dealerline-common[state]"
            ) from _REDIS_IMPORT_ERROR
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts must be >= 1, got {connect_attempts!r}")
        self._ttl_ms = max(1, round(self.ttl_s * 1000))
        self._connect_attempts = connect_attempts
        self._redis: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=RedisRetry(NoBackoff(), 0),
            client_name=client_name,  # shows in CLIENT LIST: which service holds a connection
        )
        kw = self._redis.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        self._where = f"{where}/{kw.get('db', 0)}"  # no credentials in errors or logs

    def _refresh(self, pipe: Pipeline, keys: _Keys) -> None:
        """Queue, inside the caller's MULTI, the TTL refresh of every key of the session."""
        pipe.eval(_REFRESH_LUA, len(keys.fixed), *keys.fixed, keys.task_prefix, self._ttl_ms)

    async def _get(self, key: str) -> str | None:
        return _text(await self._redis.get(key))

    async def _io(self, op: str, session_id: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation, retrying connection errors, then failing clearly."""

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning(
                "state_store.redis_retry",
                op=op,
                session_id=session_id,
                attempt=rs.attempt_number,
                where=self._where,
                error=repr(exc),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((RedisConnectionError, RedisTimeoutError)),
            stop=stop_after_attempt(self._connect_attempts),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await fn()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StateStoreUnavailable(
                f"redis at {self._where} unreachable during {op} for session {session_id!r} "
                f"after {self._connect_attempts} attempts: {exc}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returned or raised")

    async def get_state_with_version(self, session_id: str) -> tuple[ConversationState | None, int]:
        keys = self.keys(session_id)
        raw: str | None = await self._io("get_state", session_id, lambda: self._get(keys.state))
        if raw is None:
            return None, 0
        state = _parse_state(raw, keys.state)
        return state, state.version

    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        keys = self.keys(state.session_id)
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version!r}")
        stamped = state.model_copy(update={"version": expected_version + 1, "updated_at": now()})
        payload = stamped.model_dump_json()

        async def attempt() -> bool:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keys.state)
                    raw = _text(await pipe.get(keys.state))
                    if raw == payload:
                        # An earlier attempt's EXEC landed but its reply was lost with the
                        # connection (payload carries a fresh updated_at, so it is unique).
                        return True
                    if _stored_version(raw, keys.state) != expected_version:
                        return False
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.set(keys.state, payload, px=self._ttl_ms)
                    self._refresh(pipe, keys)
                    await pipe.execute()
                except WatchError:
                    return False
            return True

        ok = await self._io("set_state", state.session_id, attempt)
        if ok:
            state.version = stamped.version
            state.updated_at = stamped.updated_at
        return ok

    async def push_notification(self, session_id: str, notification: Notification) -> None:
        keys = self.keys(session_id)
        payload = notification.model_dump_json()

        async def push() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(keys.notifications, payload)
                self._refresh(pipe, keys)
                await pipe.execute()

        await self._io("push_notification", session_id, push)

    async def set_task(self, session_id: str, task: BackgroundTask) -> None:
        keys = self.keys(session_id)
        _check_id("task_id", task.task_id)
        payload = task.model_dump_json()

        async def put() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(keys.task(task.task_id), payload, px=self._ttl_ms)
                pipe.sadd(keys.tasks, task.task_id)
                self._refresh(pipe, keys)
                await pipe.execute()

        await self._io("set_task", session_id, put)

    async def get_task(self, session_id: str, task_id: str) -> BackgroundTask | None:
        keys = self.keys(session_id)
        _check_id("task_id", task_id)
        raw: str | None = await self._io(
            "get_task", session_id, lambda: self._get(keys.task(task_id))
        )
        return None if raw is None else BackgroundTask.model_validate_json(raw)

    async def _sync_once(self, session_id: str) -> ConversationState:
        """One optimistic sync attempt; raises _Lost if a concurrent write intervened."""
        keys = self.keys(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            # Watching the delivered set too: a concurrent sync that delivered something
            # makes this attempt fail even if the state document were somehow not rewritten.
            await pipe.watch(keys.state, keys.delivered)
            raw = _text(await pipe.get(keys.state))
            raw_notes = _texts(await pipe.lrange(keys.notifications, 0, -1))
            delivered = set(_texts(await pipe.smembers(keys.delivered)))
            task_ids = sorted(_texts(await pipe.smembers(keys.tasks)))
            raw_tasks: list[str | None] = (
                [_text(v) for v in await pipe.mget([keys.task(t) for t in task_ids])]
                if task_ids
                else []
            )
            state = (
                _parse_state(raw, keys.state)
                if raw is not None
                else ConversationState(session_id=session_id)
            )
            tasks = _parse_tasks(raw_tasks, session_id)
            new_ids = _merge_notifications(
                state, _parse_notifications(raw_notes, session_id), delivered
            )
            tasks_changed = _merge_tasks(state, tasks)
            if not new_ids and not tasks_changed:
                return state
            state.version += 1
            state.updated_at = now()
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            pipe.set(keys.state, state.model_dump_json(), px=self._ttl_ms)
            if new_ids:
                pipe.sadd(keys.delivered, *new_ids)
            self._refresh(pipe, keys)
            try:
                await pipe.execute()
            except WatchError:
                raise _Lost from None
        log.debug(
            "state_store.synced",
            session_id=session_id,
            notifications=len(new_ids),
            version=state.version,
        )
        return state

    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        attempts = 1 + self.retries
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Lost),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=self.backoff_s / 8, max=self.backoff_s),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._io("sync", session_id, lambda: self._sync_once(session_id))
        except _Lost:
            raise StateConflictError(
                f"state of session {session_id!r} changed under every one of "
                f"{attempts} attempts to merge background updates"
            ) from None
        raise AssertionError("unreachable: tenacity either returned or raised")

    async def key_ttls(self, session_id: str) -> dict[str, float]:
        keys = self.keys(session_id)

        async def read() -> dict[str, float]:
            task_ids = _texts(await self._redis.smembers(keys.tasks))
            names = [*keys.fixed, *(keys.task(t) for t in sorted(task_ids))]
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.pttl(name)
                ttls: list[int] = await pipe.execute()
            # PTTL: -2 absent, -1 no expiry (reported as infinite so a test can catch it).
            return {
                n: (float("inf") if ms == -1 else ms / 1000)
                for n, ms in zip(names, ttls, strict=True)
                if ms != -2
            }

        return await self._io("key_ttls", session_id, read)

    async def delete(self, session_id: str) -> None:
        keys = self.keys(session_id)

        async def once() -> bool:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    # Watch the index so a task recorded meanwhile is not left behind.
                    await pipe.watch(keys.tasks)
                    task_ids = _texts(await pipe.smembers(keys.tasks))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.delete(*keys.fixed, *(keys.task(t) for t in task_ids))
                    await pipe.execute()
                except WatchError:
                    return False
            return True

        for _ in range(1 + max(self.retries, 3)):
            if await self._io("delete", session_id, once):
                return
        # Whatever was recorded in the race expires with its TTL.
        log.warning("state_store.delete_raced", session_id=session_id)

    async def close(self) -> None:
        await self._redis.aclose()


def state_store_from_url(
    url: str | None, *, namespace: str = "", ttl_s: float = DEFAULT_TTL_S, **kwargs: Any
) -> StateStore:
    """The store a URL names: None, ``""`` or ``memory://`` → :class:`MemoryStateStore`;
    ``redis://…`` / ``rediss://…`` → :class:`RedisStateStore`. Extra keyword arguments
    (``retries``, ``backoff_s``, ...) go to the store's constructor."""
    if url is None or url.strip() in ("", "memory://"):
        return MemoryStateStore(namespace=namespace, ttl_s=ttl_s, **kwargs)
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme in ("redis", "rediss"):
        return RedisStateStore(url.strip(), namespace=namespace, ttl_s=ttl_s, **kwargs)
    shown = url.split("@")[-1] if "@" in url else url  # never echo credentials
    raise ValueError(
        f"unsupported state store URL {shown!r}: use memory:// (or leave it empty) "
        "for the in-process store, or redis://host:port/db / rediss://... for Redis"
    )
