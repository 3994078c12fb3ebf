"""The conversation state store under test, in memory or on the real Redis
(redis://127.0.0.1:6379/0, or ``DL_TEST_REDIS_URL``), on a unique namespace whose keys are
deleted afterwards; with a way to open another "process" on the same data; and
:func:`contend`, many writers racing on one session (the contention test and
``bench/state_store_bench.py``)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from dealerline_common.state import ConversationState, Notification
from dealerline_common.state_store import MemoryStateStore, RedisStateStore, StateStore

REDIS_URL = os.environ.get("DL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Backend:
    """A store under test plus a way to open another "process" on the same data."""

    kind: str
    namespace: str
    store: StateStore
    open_other: Callable[[], StateStore]
    raw: Redis | None = None
    _others: list[StateStore] = field(default_factory=list)

    def other(self) -> StateStore:
        """Redis: a separate store with its own connection pool (a separate process).
        Memory: the same store, which is all one process can share."""
        s = self.open_other()
        if s is not self.store:
            self._others.append(s)
        return s


async def open_backend(kind: str, **store_options: Any) -> AsyncIterator[Backend]:
    """A ``memory`` or ``redis`` backend built with ``store_options``; closed and its keys
    deleted when the generator ends."""
    ns = f"dltest:{uuid.uuid4().hex}:"
    if kind == "memory":
        memory = MemoryStateStore(namespace=ns, **store_options)
        yield Backend("memory", ns, memory, lambda: memory)
        return
    raw = Redis.from_url(REDIS_URL, decode_responses=True)

    def open_redis() -> StateStore:
        return RedisStateStore(REDIS_URL, namespace=ns, **store_options)

    b = Backend("redis", ns, open_redis(), open_redis, raw)
    try:
        yield b
    finally:
        for s in [b.store, *b._others]:
            await s.close()
        keys = [k async for k in raw.scan_iter(match=f"{ns}*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


# -- contention: many writers on one session through the product's own API -----------------


def _padding() -> list[dict[str, Any]]:
    """About 3 KB of conversation, so each attempt parses and writes a realistic document."""
    return [
        {"type": "human" if i % 2 else "ai", "data": {"content": f"turn {i}: " + "words " * 40}}
        for i in range(10)
    ]


@dataclass
class Contention:
    """What :func:`contend` saw: elapsed seconds, per-update latencies, attempts made."""

    writers: int
    updates: int
    elapsed_s: float
    latencies_s: list[float]
    attempts: int
    syncs: int
    notifications: int
    final: ConversationState

    def counts(self) -> dict[str, int]:
        """Each writer's counter as the final document holds it."""
        return {
            m["writer"]: m["n"] for m in self.final.messages if isinstance(m.get("writer"), str)
        }

    def lost(self) -> int:
        """Updates missing from the final document (0 if none was lost)."""
        counts = self.counts()
        return sum(self.updates - counts.get(f"w{w}", 0) for w in range(self.writers))

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        n = self.writers * self.updates
        return (
            f"{self.writers} writers x {self.updates} updates: {self.elapsed_s:.1f} s, "
            f"{n / self.elapsed_s:.0f} updates/s, {self.attempts / n:.2f} attempts/update, "
            f"latency p50 {self.quantile(0.5) * 1000:.0f} ms p95 {self.quantile(0.95) * 1000:.0f} "
            f"ms max {max(self.latencies_s) * 1000:.0f} ms, {self.syncs} syncs, "
            f"{self.notifications} notifications, lost {self.lost()}"
        )


async def contend(
    open_store: Callable[[], StateStore],
    session_id: str,
    *,
    writers: int,
    updates: int,
    notifications: int = 50,
    syncers: int = 2,
) -> Contention:
    """``writers`` stores (each its own connection pool, as replicas are) each make
    ``updates`` :meth:`StateStore.update` calls on one session with the product's own
    retry policy, while a pusher queues ``notifications`` background results and
    ``syncers`` stores merge them in (the agent's sync at the start of a turn). Every
    update increments its writer's counter in the document, so a lost update shows as a
    counter short of ``updates``. Exceptions (a StateConflictError) propagate."""
    seed = open_store()
    await seed.update(session_id, lambda s: s.messages.extend(_padding()))
    stores = [open_store() for _ in range(writers + syncers + 1)]
    latencies: list[float] = []
    attempts = 0
    syncs = 0
    pushing = asyncio.Event()

    async def writer(store: StateStore, name: str) -> None:
        nonlocal attempts

        def bump(state: ConversationState) -> None:
            nonlocal attempts
            attempts += 1
            mine = next((m for m in state.messages if m.get("writer") == name), None)
            if mine is None:
                state.messages.append({"writer": name, "n": 1})
            else:
                mine["n"] += 1

        for _ in range(updates):
            t0 = time.perf_counter()
            await store.update(session_id, bump)
            latencies.append(time.perf_counter() - t0)

    async def pusher(store: StateStore) -> None:
        for i in range(notifications):
            await store.push_notification(
                session_id, Notification(id=f"n{i}", kind="human_available", data={"i": i})
            )
            await asyncio.sleep(0.01)
        pushing.set()

    async def syncer(store: StateStore) -> None:
        nonlocal syncs
        while not pushing.is_set():
            await store.sync_atomic_updates_to_state(session_id)
            syncs += 1
            await asyncio.sleep(0.005)

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            for w in range(writers):
                tg.create_task(writer(stores[w], f"w{w}"), name=f"writer-{w}")
            for s in range(syncers):
                tg.create_task(syncer(stores[writers + s]), name=f"syncer-{s}")
            tg.create_task(pusher(stores[-1]), name="pusher")
        elapsed = time.perf_counter() - started
        final = await seed.sync_atomic_updates_to_state(session_id)
    finally:
        for store in [seed, *stores]:
            await store.close()
    return Contention(writers, updates, elapsed, latencies, attempts, syncs, notifications, final)
