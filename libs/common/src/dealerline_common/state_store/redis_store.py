"""The production state store: Redis, optimistic locking with WATCH/MULTI/EXEC, every
key of a session given a fresh TTL by each write, connection errors retried a bounded
number of times and then raised as :class:`StateStoreUnavailable`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ..logs import get_logger
from ..messages import now
from ..state import BackgroundTask, ConversationState, Notification
from .base import (
    DEFAULT_RETRIES,
    DEFAULT_TTL_S,
    StateStore,
    WindowCount,
    check_reply,
    check_window,
    contiguous_reply,
    lost_race_retrying,
)
from .errors import LostRace, StateConflictError, StateStoreError, StateStoreUnavailable
from .keys import SessionKeys, check_id, window_key
from .merge import merge_notifications, merge_tasks
from .stored import (
    next_version,
    parse_notifications,
    parse_state_or_new,
    parse_tasks,
    state_with_version,
    stored_version,
)

try:  # the Redis client is the optional ``dealerline-common[state]`` extra
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.retry import Retry as RedisRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError, WatchError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    _REDIS_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    _REDIS_IMPORT_ERROR = _exc

__all__ = ["RedisStateStore"]

log = get_logger(__name__)

T = TypeVar("T")


# Refreshes the TTL of a session's fixed keys (KEYS) and of every record an index names, in
# one server-side step: no extra round trip for a write and no SCAN. ARGV[1] is the TTL in
# ms, then pairs (position in KEYS of an index SET, the prefix of the keys it names): the
# task records and the reply logs.
_REFRESH_LUA = """
local ttl = ARGV[1]
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
for i = 2, #ARGV, 2 do
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[tonumber(ARGV[i])])) do
    redis.call('PEXPIRE', ARGV[i + 1] .. id, ttl)
  end
end
return 1
"""


# A counter of events within a rolling window (count_in_window): a sorted set of event ids
# scored by the Redis server's own clock in milliseconds (one clock for every replica).
# KEYS[1] the set; ARGV: window in ms, the event id ('' none), the limit ('' none).
# Returns {events within the window, 1 if the event is among them}.
_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local counted = 0
if ARGV[2] ~= '' then
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    counted = 1
  elseif ARGV[3] == '' or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], now, ARGV[2])
    redis.call('PEXPIRE', KEYS[1], window)
    counted = 1
  end
end
return {redis.call('ZCARD', KEYS[1]), counted}
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

    def _refresh(self, pipe: Pipeline, keys: SessionKeys) -> None:
        """Queue, inside the caller's MULTI, the TTL refresh of every key of the session."""
        fixed = keys.fixed
        indexes = (
            *(fixed.index(keys.tasks) + 1, keys.task_prefix),
            *(fixed.index(keys.replies) + 1, keys.reply_prefix),
        )
        pipe.eval(_REFRESH_LUA, len(fixed), *fixed, self._ttl_ms, *indexes)

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
        return state_with_version(raw, keys.state)

    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        keys = self.keys(state.session_id)
        stamped = next_version(state, expected_version)
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
                    if stored_version(raw, keys.state) != expected_version:
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
        check_id("task_id", task.task_id)
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
        check_id("task_id", task_id)
        raw: str | None = await self._io(
            "get_task", session_id, lambda: self._get(keys.task(task_id))
        )
        return None if raw is None else BackgroundTask.model_validate_json(raw)

    async def note_reply(self, session_id: str, turn_id: str, seq: int, text: str) -> None:
        keys = self.keys(session_id)
        check_reply(turn_id, seq, text)

        async def note() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(keys.reply(turn_id), str(seq), text)
                pipe.sadd(keys.replies, turn_id)
                self._refresh(pipe, keys)
                await pipe.execute()

        await self._io("note_reply", session_id, note)

    async def noted_reply(self, session_id: str, turn_id: str) -> list[str]:
        keys = self.keys(session_id)
        check_id("turn_id", turn_id)

        async def read() -> dict[bytes | str, bytes | str]:
            return await self._redis.hgetall(keys.reply(turn_id))

        found = await self._io("noted_reply", session_id, read)
        noted = {_text(k) or "": _text(v) or "" for k, v in found.items()}
        return contiguous_reply({int(k): v for k, v in noted.items() if k.isdigit()})

    async def _sync_once(self, session_id: str) -> ConversationState:
        """One optimistic sync attempt; raises LostRace if a concurrent write intervened."""
        keys = self.keys(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            # Watching the delivered set too: a concurrent sync that delivered something
            # makes this attempt fail even if the state document were somehow not rewritten.
            await pipe.watch(keys.state, keys.delivered)
            state, new_ids, tasks_changed = await self._read_and_merge(pipe, keys, session_id)
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
                raise LostRace from None
        log.debug(
            "state_store.synced",
            session_id=session_id,
            notifications=len(new_ids),
            version=state.version,
        )
        return state

    async def _read_and_merge(
        self, pipe: Pipeline, keys: SessionKeys, session_id: str
    ) -> tuple[ConversationState, list[str], bool]:
        """Read (under the caller's WATCH) the state and every background result, and merge
        them: the merged state, the newly delivered notification ids, whether tasks changed."""
        raw = _text(await pipe.get(keys.state))
        raw_notes = _texts(await pipe.lrange(keys.notifications, 0, -1))
        delivered = set(_texts(await pipe.smembers(keys.delivered)))
        task_ids = sorted(_texts(await pipe.smembers(keys.tasks)))
        raw_tasks: list[str | None] = (
            [_text(v) for v in await pipe.mget([keys.task(t) for t in task_ids])]
            if task_ids
            else []
        )
        state = parse_state_or_new(raw, keys.state, session_id)
        tasks = parse_tasks(raw_tasks, session_id)
        new_ids = merge_notifications(state, parse_notifications(raw_notes, session_id), delivered)
        return state, new_ids, merge_tasks(state, tasks)

    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        attempts = 1 + self.retries
        try:
            async for attempt in lost_race_retrying(attempts, self.backoff_s):
                with attempt:
                    return await self._io("sync", session_id, lambda: self._sync_once(session_id))
        except LostRace:
            raise StateConflictError(
                f"state of session {session_id!r} changed under every one of "
                f"{attempts} attempts to merge background updates"
            ) from None
        raise AssertionError("unreachable: tenacity either returned or raised")

    async def count_in_window(
        self, name: str, window_s: float, *, event: str | None = None, limit: int | None = None
    ) -> WindowCount:
        check_window(window_s, event, limit)
        key = window_key(self.namespace, name)
        args: list[str | int] = [
            max(1, round(window_s * 1000)),
            event or "",
            "" if limit is None else limit,
        ]

        async def count() -> WindowCount:
            try:
                found = await self._redis.eval(_WINDOW_LUA, 1, key, *args)
            except ResponseError as exc:  # e.g. the key holds another type
                raise StateStoreError(f"window counter {key!r} unusable: {exc}") from exc
            n, counted = (int(v) for v in found)
            return WindowCount(count=n, counted=bool(counted))

        return await self._io("count_in_window", f"window:{name}", count)

    async def key_ttls(self, session_id: str) -> dict[str, float]:
        keys = self.keys(session_id)

        async def read() -> dict[str, float]:
            task_ids = _texts(await self._redis.smembers(keys.tasks))
            turn_ids = _texts(await self._redis.smembers(keys.replies))
            names = [
                *keys.fixed,
                *(keys.task(t) for t in sorted(task_ids)),
                *(keys.reply(t) for t in sorted(turn_ids)),
            ]
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
                    # Watch the indexes so a record made meanwhile is not left behind.
                    await pipe.watch(keys.tasks, keys.replies)
                    task_ids = _texts(await pipe.smembers(keys.tasks))
                    turn_ids = _texts(await pipe.smembers(keys.replies))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.delete(
                        *keys.fixed,
                        *(keys.task(t) for t in task_ids),
                        *(keys.reply(t) for t in turn_ids),
                    )
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
