"""The conversation state store under test, in memory or on the real Redis
(redis://127.0.0.1:6379/0, or ``DL_TEST_REDIS_URL``), on a unique namespace whose keys are
deleted afterwards; with a way to open another "process" on the same data."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

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
