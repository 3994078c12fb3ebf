"""The in-process state store: the Redis store's keys, version checks, exactly-once
delivery and TTLs, kept in a dict behind one ``asyncio.Lock`` (the embedded default for a
single process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..logs import get_logger
from ..messages import now
from ..state import BackgroundTask, ConversationState, Notification
from .base import (
    DEFAULT_TTL_S,
    StateStore,
    WindowCount,
    check_reply,
    check_window,
    contiguous_reply,
)
from .keys import SessionKeys, check_id, window_key
from .merge import merge_notifications, merge_tasks
from .policy import DEFAULT_BACKOFF_S, DEFAULT_CONFLICT_DEADLINE_S
from .stored import (
    next_version,
    parse_notifications,
    parse_state_or_new,
    parse_tasks,
    state_with_version,
    stored_version,
)

__all__ = ["MemoryStateStore"]

log = get_logger(__name__)


@dataclass(slots=True)
class _Reply:
    """A turn's reply log (Redis: a HASH of seq -> sentence)."""

    sentences: dict[int, str]


@dataclass(slots=True)
class _Entry:
    value: str | list[str] | set[str] | dict[str, float] | _Reply  # a dict: event id -> time
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
        retries: int | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        conflict_deadline_s: float = DEFAULT_CONFLICT_DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            namespace=namespace,
            ttl_s=ttl_s,
            retries=retries,
            backoff_s=backoff_s,
            conflict_deadline_s=conflict_deadline_s,
        )
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

    def _get_events(self, key: str, since: float) -> dict[str, float]:
        """A window counter's events after ``since`` (a copy)."""
        entry = self._live(key)
        if entry is None:
            return {}
        assert isinstance(entry.value, dict)
        return {event: at for event, at in entry.value.items() if at > since}

    def _get_reply(self, key: str) -> _Reply:
        entry = self._live(key)
        if entry is None:
            return _Reply({})
        assert isinstance(entry.value, _Reply)
        return entry.value

    def _session_keys(self, keys: SessionKeys) -> list[str]:
        """Every key the session may have: the fixed ones, task records, reply logs."""
        return [
            *keys.fixed,
            *(keys.task(t) for t in sorted(self._get_set(keys.tasks))),
            *(keys.reply(t) for t in sorted(self._get_set(keys.replies))),
        ]

    def _put(self, key: str, value: str | list[str] | set[str] | _Reply) -> None:
        self._data[key] = _Entry(value, self._clock() + self.ttl_s)

    def _touch(self, keys: SessionKeys) -> None:
        """Refresh the TTL of every key of the session (fixed keys, task records, replies)."""
        expires_at = self._clock() + self.ttl_s
        for key in self._session_keys(keys):
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
        return state_with_version(raw, keys.state)

    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        keys = self.keys(state.session_id)
        stamped = next_version(state, expected_version)
        payload = stamped.model_dump_json()
        async with self._lock:
            if stored_version(self._get_str(keys.state), keys.state) != expected_version:
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
        check_id("task_id", task.task_id)
        payload = task.model_dump_json()
        async with self._lock:
            self._put(keys.task(task.task_id), payload)
            index = self._get_set(keys.tasks)
            index.add(task.task_id)
            self._put(keys.tasks, index)
            self._touch(keys)

    async def get_task(self, session_id: str, task_id: str) -> BackgroundTask | None:
        keys = self.keys(session_id)
        check_id("task_id", task_id)
        async with self._lock:
            raw = self._get_str(keys.task(task_id))
        return None if raw is None else BackgroundTask.model_validate_json(raw)

    async def note_reply(self, session_id: str, turn_id: str, seq: int, text: str) -> None:
        keys = self.keys(session_id)
        check_reply(turn_id, seq, text)
        async with self._lock:
            reply = self._get_reply(keys.reply(turn_id))
            reply.sentences.setdefault(seq, text)
            self._put(keys.reply(turn_id), reply)
            index = self._get_set(keys.replies)
            index.add(turn_id)
            self._put(keys.replies, index)
            self._touch(keys)

    async def noted_reply(self, session_id: str, turn_id: str) -> list[str]:
        keys = self.keys(session_id)
        check_id("turn_id", turn_id)
        async with self._lock:
            return contiguous_reply(self._get_reply(keys.reply(turn_id)).sentences)

    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        keys = self.keys(session_id)
        async with self._lock:
            state = parse_state_or_new(self._get_str(keys.state), keys.state, session_id)
            notes = parse_notifications(self._get_list(keys.notifications), session_id)
            task_ids = sorted(self._get_set(keys.tasks))
            tasks = parse_tasks((self._get_str(keys.task(t)) for t in task_ids), session_id)
            delivered = self._get_set(keys.delivered)
            new_ids = merge_notifications(state, notes, delivered)
            tasks_changed = merge_tasks(state, tasks)
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

    async def count_in_window(
        self, name: str, window_s: float, *, event: str | None = None, limit: int | None = None
    ) -> WindowCount:
        check_window(window_s, event, limit)
        key = window_key(self.namespace, name)
        async with self._lock:
            t = self._clock()
            events = self._get_events(key, t - window_s)
            counted = event is not None and event in events
            if event is not None and not counted and (limit is None or len(events) < limit):
                events[event] = t
                counted = True
            if events:
                self._data[key] = _Entry(events, max(events.values()) + window_s)
            else:
                self._data.pop(key, None)
            self._sweep()
        return WindowCount(count=len(events), counted=counted)

    async def key_ttls(self, session_id: str) -> dict[str, float]:
        keys = self.keys(session_id)
        async with self._lock:
            t = self._clock()
            names = self._session_keys(keys)
            return {k: e.expires_at - t for k in names if (e := self._live(k)) is not None}

    async def delete(self, session_id: str) -> None:
        keys = self.keys(session_id)
        async with self._lock:
            for key in self._session_keys(keys):
                self._data.pop(key, None)

    async def close(self) -> None:
        """Nothing to release; the data stays for the life of the process."""
