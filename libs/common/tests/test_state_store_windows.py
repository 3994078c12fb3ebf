"""Counters of events within a rolling window (``StateStore.count_in_window``): the same
suite on the in-memory store and on real Redis (redis://127.0.0.1:6379/0, or
``DL_TEST_REDIS_URL``), a unique namespace per test, keys deleted afterwards."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from store_testkit import Backend, open_backend

from dealerline_common.state_store import (
    MemoryStateStore,
    RedisStateStore,
    StateStoreError,
    StateStoreUnavailable,
    WindowCount,
)

DAY = 86400.0


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for b in open_backend(request.param):
        yield b


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async for b in open_backend("redis"):
        yield b


async def test_events_are_counted_once_each(backend: Backend) -> None:
    store = backend.store
    assert await store.count_in_window("fails:1", DAY) == WindowCount(0, False)
    assert await store.count_in_window("fails:1", DAY, event="a") == WindowCount(1, True)
    assert await store.count_in_window("fails:1", DAY, event="b") == WindowCount(2, True)
    # The same event again (a retried write) counts once.
    assert await store.count_in_window("fails:1", DAY, event="a") == WindowCount(2, True)
    # Reading records nothing; another counter is another count.
    assert await store.count_in_window("fails:1", DAY) == WindowCount(2, False)
    assert await store.count_in_window("fails:2", DAY) == WindowCount(0, False)
    # Another replica sees the same counts.
    other = backend.other()
    assert await other.count_in_window("fails:1", DAY, event="c") == WindowCount(3, True)
    assert await store.count_in_window("fails:1", DAY) == WindowCount(3, False)


async def test_a_limit_refuses_new_events_but_not_known_ones(backend: Backend) -> None:
    store = backend.store
    for i in range(3):
        got = await store.count_in_window("codes:7", DAY, event=f"e{i}", limit=3)
        assert got == WindowCount(i + 1, True)
    assert await store.count_in_window("codes:7", DAY, event="e3", limit=3) == WindowCount(3, False)
    assert await store.count_in_window("codes:7", DAY, event="e1", limit=3) == WindowCount(3, True)
    assert await store.count_in_window("codes:7", DAY, event="e4", limit=0) == WindowCount(3, False)
    # Without a limit it still counts (failures are recorded whatever the count).
    assert await store.count_in_window("codes:7", DAY, event="e5") == WindowCount(4, True)


async def test_concurrent_replicas_cannot_exceed_the_limit(backend: Backend) -> None:
    """Forty reservations at once from two replicas: exactly the limit gets a slot."""
    stores = [backend.store, backend.other()]
    got = await asyncio.gather(
        *(
            stores[i % 2].count_in_window("codes:9", DAY, event=f"send-{i}", limit=5)
            for i in range(40)
        )
    )
    assert sum(g.counted for g in got) == 5
    assert all(g.count <= 5 for g in got)
    assert await backend.store.count_in_window("codes:9", DAY) == WindowCount(5, False)


async def test_bad_arguments_are_refused_before_anything_is_stored(backend: Backend) -> None:
    store = backend.store
    bad: list[tuple[str, float, str | None, int | None]] = [
        ("", DAY, "e", None),
        ("n", 0, "e", None),
        ("n", -1, "e", None),
        ("n", float("inf"), "e", None),
        ("n", float("nan"), "e", None),
        ("n", DAY, "", None),
        ("n", DAY, "e", -1),
    ]
    for name, window, event, limit in bad:
        with pytest.raises(ValueError):
            await store.count_in_window(name, window, event=event, limit=limit)
    assert await store.count_in_window("n", DAY) == WindowCount(0, False)


async def test_memory_window_rolls_by_its_clock() -> None:
    clock = [1000.0]
    store = MemoryStateStore(clock=lambda: clock[0])
    await store.count_in_window("f", 30, event="a")
    clock[0] += 10
    await store.count_in_window("f", 30, event="b")
    clock[0] += 20  # "a" is exactly 30 s old: out of the window
    assert await store.count_in_window("f", 30) == WindowCount(1, False)
    # A slot freed by age is free again under the limit.
    assert await store.count_in_window("f", 30, event="c", limit=2) == WindowCount(2, True)
    clock[0] += 30.5  # everything old: the counter is gone
    assert await store.count_in_window("f", 30) == WindowCount(0, False)
    assert store._data == {}


async def test_redis_window_is_a_sorted_set_that_rolls_and_expires(
    redis_backend: Backend,
) -> None:
    backend = redis_backend
    raw, store = backend.raw, backend.store
    assert raw is not None
    key = f"{backend.namespace}window:verify-fail:1"
    assert await store.count_in_window("verify-fail:1", 60, event="new") == WindowCount(1, True)
    assert await raw.type(key) == "zset"
    assert 0 < await raw.pttl(key) <= 60_000
    # An event recorded 61 s ago by the server's clock is out of the 60 s window.
    seconds, micros = await raw.time()
    await raw.zadd(key, {"old": seconds * 1000 + micros // 1000 - 61_000})
    assert await raw.zcard(key) == 2
    assert await store.count_in_window("verify-fail:1", 60, event="x", limit=2) == WindowCount(
        2, True
    )
    assert set(await raw.zrange(key, 0, -1)) == {"new", "x"}


async def test_redis_counter_of_another_type_fails_clearly(redis_backend: Backend) -> None:
    raw, key = redis_backend.raw, f"{redis_backend.namespace}window:broken"
    assert raw is not None
    await raw.set(key, "not a set")
    with pytest.raises(StateStoreError, match="window counter .*broken.* unusable"):
        await redis_backend.store.count_in_window("broken", DAY, event="e")
    assert await raw.get(key) == "not a set"


async def test_unreachable_redis_raises_state_store_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    store = RedisStateStore(f"redis://127.0.0.1:{port}/0", connect_attempts=2, socket_timeout_s=1)
    try:
        with pytest.raises(StateStoreUnavailable, match="count_in_window"):
            await store.count_in_window("n", DAY, event="e", limit=1)
    finally:
        await store.close()
