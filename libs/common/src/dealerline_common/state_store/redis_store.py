"""The production state store: Redis, optimistic locking by a server-side compare-and-set
(one Lua step, one round trip), every key of a session given a fresh TTL by each write,
connection errors retried until a deadline and then raised as
:class:`StateStoreUnavailable`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from tenacity import RetryCallState

from ..logs import get_logger
from ..state import BackgroundTask, ConversationState, Notification
from .base import (
    DEFAULT_TTL_S,
    Mutator,
    StateStore,
    WindowCount,
    apply,
    check_reply,
    check_window,
    contiguous_reply,
)
from .errors import LostRace, StateStoreError, StateStoreUnavailable
from .keys import SessionKeys, check_id, window_key
from .lease import LEASE_S, Lease, write_in_turn
from .merge import merge_notifications, merge_tasks
from .policy import (
    DEFAULT_BACKOFF_S,
    DEFAULT_CONFLICT_DEADLINE_S,
    DEFAULT_UNAVAILABLE_DEADLINE_S,
    FIRST_UNAVAILABLE_BACKOFF_S,
    UNAVAILABLE_BACKOFF_S,
    RetryPolicy,
)
from .scripts import (
    ACQUIRE_LUA,
    DELETE_LUA,
    READ_LUA,
    REFRESH_LUA,
    RELEASE_LUA,
    SET_IF_VERSION_LUA,
    SYNC_READ_LUA,
    WINDOW_LUA,
    session_args,
)
from .stored import (
    next_version,
    parse_notifications,
    parse_state_or_new,
    parse_tasks,
    state_with_version,
)

try:  # the Redis client is the optional ``dealerline-common[state]`` extra
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.retry import Retry as RedisRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    _REDIS_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    _REDIS_IMPORT_ERROR = _exc

__all__ = ["RedisStateStore"]

log = get_logger(__name__)

T = TypeVar("T")


def _text(value: bytes | str | None) -> str | None:
    """redis-py types replies as bytes or str; with decode_responses=True they are str."""
    return value.decode() if isinstance(value, bytes) else value


def _texts(values: Iterable[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


class RedisStateStore(StateStore):
    """The production store: Redis, optimistic locking by a compare-and-set in Lua.

    A write (:meth:`update`, the sync) tries once optimistically; a writer that loses
    queues for the session's short write lease and writes holding it (:mod:`.lease`), so
    fifty writers on one session commit in turn instead of starving one another. Lost
    races are retried until ``conflict_deadline_s`` (and ``retries``, if given).

    Connection errors (refused, reset, Redis loading its data after a restart, timeouts)
    are retried here with tenacity for up to ``unavailable_deadline_s`` (and at most
    ``connect_attempts`` times, if given), with jittered exponential backoff, and then
    raised as :class:`StateStoreUnavailable`; redis-py's own retry is switched off so the
    bound is this one. A retry after a connection error never applies a write twice:
    the compare-and-set recognises its own already-stored payload, notifications are
    de-duplicated by id at delivery, a reply sentence is set only if absent, and the other
    writes are idempotent.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        retries: int | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        conflict_deadline_s: float = DEFAULT_CONFLICT_DEADLINE_S,
        unavailable_deadline_s: float = DEFAULT_UNAVAILABLE_DEADLINE_S,
        connect_attempts: int | None = None,
        socket_timeout_s: float = 5.0,
        client_name: str | None = None,
    ) -> None:
        super().__init__(
            namespace=namespace,
            ttl_s=ttl_s,
            retries=retries,
            backoff_s=backoff_s,
            conflict_deadline_s=conflict_deadline_s,
        )
        if _REDIS_IMPORT_ERROR is not None:
            raise ImportError(
                "RedisStateStore needs the redis client: install dealerline-common[state]"
            ) from _REDIS_IMPORT_ERROR
        self.unavailable = RetryPolicy(
            deadline_s=unavailable_deadline_s,
            first_s=FIRST_UNAVAILABLE_BACKOFF_S,
            cap_s=UNAVAILABLE_BACKOFF_S,
            attempts=connect_attempts,
        )
        self._ttl_ms = max(1, round(self.ttl_s * 1000))
        self._lease_ms = round(LEASE_S * 1000)
        self._baton_ms = 10 * self._lease_ms
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
        numkeys, args = session_args(keys, self._ttl_ms)
        pipe.eval(REFRESH_LUA, numkeys, *args)

    async def _session_script(self, script: str, keys: SessionKeys, *extra: str | int) -> Any:
        numkeys, args = session_args(keys, self._ttl_ms, *extra)
        return await self._redis.eval(script, numkeys, *args)

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

        errors = (RedisConnectionError, RedisTimeoutError)
        attempts = 0
        try:
            async for attempt in self.unavailable.retrying(*errors, before_sleep=before_sleep):
                with attempt:
                    attempts += 1
                    return await fn()
        except errors as exc:
            raise StateStoreUnavailable(
                f"redis at {self._where} unreachable during {op} for session {session_id!r} "
                f"after {attempts} attempts: {exc}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returned or raised")

    # -- the document --------------------------------------------------------------------

    async def get_state_with_version(self, session_id: str) -> tuple[ConversationState | None, int]:
        keys = self.keys(session_id)
        raw: str | None = await self._io("get_state", session_id, lambda: self._get(keys.state))
        return state_with_version(raw, keys.state)

    async def _set_if_version(
        self,
        op: str,
        keys: SessionKeys,
        sid: str,
        payload: str,
        expected: int,
        token: str,
        *ids: str,
    ) -> bool:
        """The compare-and-set (with ``ids`` recorded as delivered; refused while another
        writer holds the lease), retried on I/O errors."""

        async def cas() -> int:
            found = await self._session_script(
                SET_IF_VERSION_LUA, keys, payload, expected, token, self._baton_ms, *ids
            )
            return int(found)

        found = await self._io(op, sid, cas)
        if found < 0:
            raise StateStoreError(f"stored state at {keys.state!r} is not a versioned document")
        return found == 1

    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        keys = self.keys(state.session_id)
        stamped = next_version(state, expected_version)
        payload = stamped.model_dump_json()
        sid = state.session_id
        if not await self._set_if_version("set_state", keys, sid, payload, expected_version, ""):
            return False
        state.version = stamped.version
        state.updated_at = stamped.updated_at
        return True

    def _lease(self, keys: SessionKeys, sid: str) -> Lease:
        async def acquire(token: str) -> int:
            found = await self._io(
                "lease", sid, lambda: self._session_script(ACQUIRE_LUA, keys, token, self._lease_ms)
            )
            return int(found)

        async def release(token: str) -> None:
            await self._io(
                "lease", sid, lambda: self._session_script(RELEASE_LUA, keys, token, self._baton_ms)
            )

        async def wait(timeout_s: float) -> None:
            await self._io("lease", sid, lambda: self._redis.blpop([keys.baton], timeout_s))

        return Lease(acquire, release, wait)

    async def update(
        self, session_id: str, mutate: Mutator, *, retries: int | None = None
    ) -> ConversationState:
        keys = self.keys(session_id)
        if retries is not None and retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        policy = self.conflicts if retries is None else self.conflicts.with_attempts(1 + retries)

        async def attempt(token: str) -> ConversationState:
            found = await self._io(
                "get_state", session_id, lambda: self._session_script(READ_LUA, keys, token)
            )
            raw, leased = _text(found[0]), int(found[1])
            if leased:
                raise LostRace  # another writer's turn: wait for it rather than race it
            current, version = state_with_version(raw, keys.state)
            draft = await apply(mutate, current, session_id)
            stamped = next_version(draft, version)
            payload = stamped.model_dump_json()
            if not await self._set_if_version(
                "set_state", keys, session_id, payload, version, token
            ):
                raise LostRace
            draft.version, draft.updated_at = stamped.version, stamped.updated_at
            return draft

        return await write_in_turn(
            policy, self._lease(keys, session_id), session_id, "update it", attempt
        )

    # -- background results -------------------------------------------------------------

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

    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        keys = self.keys(session_id)
        return await write_in_turn(
            self.conflicts,
            self._lease(keys, session_id),
            session_id,
            "merge background updates",
            lambda token: self._sync_once(keys, session_id, token),
        )

    async def _sync_once(self, keys: SessionKeys, session_id: str, token: str) -> ConversationState:
        """One sync: a consistent snapshot, the merge, the compare-and-set of the document
        with the delivered ids; raises LostRace if a concurrent write intervened (a
        concurrent sync that delivered something also bumped the version) or another
        writer holds the lease."""
        snapshot = await self._io(
            "sync", session_id, lambda: self._session_script(SYNC_READ_LUA, keys, token)
        )
        raw, leased, raw_notes, delivered, raw_tasks = snapshot
        if int(leased):
            raise LostRace
        state = parse_state_or_new(_text(raw), keys.state, session_id)
        expected = state.version
        tasks = parse_tasks((_text(t) for t in raw_tasks), session_id)
        notes = parse_notifications(_texts(raw_notes), session_id)
        new_ids = merge_notifications(state, notes, set(_texts(delivered)))
        tasks_changed = merge_tasks(state, tasks)  # always: not behind the notifications
        if not new_ids and not tasks_changed:
            if token:
                await self._lease(keys, session_id).release(token)
            return state
        stamped = next_version(state, expected)
        payload = stamped.model_dump_json()
        if not await self._set_if_version(
            "sync", keys, session_id, payload, expected, token, *new_ids
        ):
            raise LostRace
        log.debug(
            "state_store.synced",
            session_id=session_id,
            notifications=len(new_ids),
            version=stamped.version,
        )
        return stamped

    # -- the reply log ----------------------------------------------------------------------

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

    # -- counters shared by every session -------------------------------------------------

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
                found = await self._redis.eval(WINDOW_LUA, 1, key, *args)
            except ResponseError as exc:  # e.g. the key holds another type
                raise StateStoreError(f"window counter {key!r} unusable: {exc}") from exc
            n, counted = (int(v) for v in found)
            return WindowCount(count=n, counted=bool(counted))

        return await self._io("count_in_window", f"window:{name}", count)

    # -- housekeeping ----------------------------------------------------------------------

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
        await self._io("delete", session_id, lambda: self._session_script(DELETE_LUA, keys))

    async def close(self) -> None:
        await self._redis.aclose()
