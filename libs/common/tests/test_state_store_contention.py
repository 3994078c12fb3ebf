"""Many writers racing on one session, on the real Redis, with the product's own retry
policy and nothing else: 50 writers (each its own connection pool, as replicas are) x 200
updates, 0 lost. The 50 x 1,000 run is ``bench/state_store_bench.py``. Plus the write
lease that makes it hold: a crashed holder delays writers no longer than its lease, a
stuck one only until the deadline, a failing writer gives it back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from store_testkit import REDIS_URL, Backend, contend, open_backend

from dealerline_common.state import ConversationState
from dealerline_common.state_store import RedisStateStore, StateConflictError


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async for b in open_backend("redis", ttl_s=600.0):
        yield b


def _sid() -> str:
    return f"sess-{uuid.uuid4().hex[:8]}"


def _raw(b: Backend) -> Redis:
    assert b.raw is not None
    return b.raw


async def test_fifty_writers_lose_no_update(redis_backend: Backend) -> None:
    writers, updates = 50, 200
    seen = await contend(redis_backend.other, _sid(), writers=writers, updates=updates)
    print(seen.summary())  # the figures, for -s runs
    assert seen.lost() == 0
    assert seen.counts() == {f"w{w}": updates for w in range(writers)}
    assert len(seen.latencies_s) == writers * updates  # every call returned
    # Background results merged exactly once meanwhile.
    ids = [n.id for n in seen.final.pending_notifications]
    assert sorted(ids) == sorted(f"n{i}" for i in range(seen.notifications))
    # The writers really raced (else the proof proves nothing) ...
    assert seen.attempts > writers * updates
    # ... and queued rather than re-applying after every other's commit (optimistic retries
    # alone made ~9 attempts per update with 50 writers).
    assert seen.attempts < 3 * writers * updates


async def test_a_crashed_holders_lease_delays_writers_only_until_it_expires(
    redis_backend: Backend,
) -> None:
    store, raw, sid = redis_backend.store, _raw(redis_backend), _sid()
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    await raw.set(store.keys(sid).lease, "crashed-holder", px=300)
    # Nobody will give the lease back: the writer waits for its expiry, then writes.
    state = await store.update(sid, lambda s: s.messages.append({"n": 2}))
    assert state.messages == [{"n": 1}, {"n": 2}]
    assert await raw.exists(store.keys(sid).lease) == 0  # given back after the write


async def test_a_stuck_lease_fails_the_write_at_the_deadline(redis_backend: Backend) -> None:
    raw, sid = _raw(redis_backend), _sid()
    store = RedisStateStore(REDIS_URL, namespace=redis_backend.namespace, conflict_deadline_s=1.0)
    try:
        await store.update(sid, lambda s: s.messages.append({"n": 1}))
        await raw.set(store.keys(sid).lease, "stuck-holder", px=60_000)
        with pytest.raises(StateConflictError, match="attempts to update it"):
            await store.update(sid, lambda s: s.messages.append({"n": "never"}))
        # While another writer holds the lease, even a plain compare-and-set is refused.
        current, version = await store.get_state_with_version(sid)
        assert current is not None
        assert await store.set_state_if_version(current, version) is False
        assert (await store.get_state(sid)).messages == [{"n": 1}]
        await raw.delete(store.keys(sid).lease)
        assert await store.set_state_if_version(current, version) is True
    finally:
        await store.close()


async def test_a_writer_that_fails_under_the_lease_gives_it_back(redis_backend: Backend) -> None:
    store, other, raw, sid = redis_backend.store, redis_backend.other(), _raw(redis_backend), _sid()
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    lease_seen: list[int] = []
    calls = 0

    async def loses_then_fails(state: ConversationState) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # another process writes between our read and our write
            await other.update(sid, lambda s: s.messages.append({"n": "other"}))
            return
        lease_seen.append(await raw.pttl(store.keys(sid).lease))  # held, with a short TTL
        raise KeyError("tool failed")

    with pytest.raises(KeyError):
        await store.update(sid, loses_then_fails)
    assert calls == 2 and 0 < lease_seen[0] <= 1000
    assert await raw.exists(store.keys(sid).lease) == 0
    # The next writer goes straight through, and a waiter (if any) was woken by the baton,
    # which expires on its own.
    state = await other.update(sid, lambda s: s.messages.append({"n": 2}))
    assert state.messages == [{"n": 1}, {"n": "other"}, {"n": 2}]
    assert 0 < await raw.pttl(store.keys(sid).baton) <= 10_000


async def test_writers_queued_on_the_lease_all_get_through(redis_backend: Backend) -> None:
    """A held lease makes fresh writers queue; once the holder gives it back, every queued
    writer writes, one at a time, and none is lost."""
    store, raw, sid = redis_backend.store, _raw(redis_backend), _sid()
    await store.update(sid, lambda s: s.messages.append({"n": "start"}))
    await raw.set(store.keys(sid).lease, "slow-holder", px=60_000)
    waiting = [redis_backend.other() for _ in range(10)]
    writes = [
        asyncio.create_task(s.update(sid, lambda st, i=i: st.messages.append({"n": i})))
        for i, s in enumerate(waiting)
    ]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in writes)  # all queued behind the holder
    await raw.delete(store.keys(sid).lease)
    await raw.rpush(store.keys(sid).baton, 1)  # the holder's release wakes the first
    await asyncio.gather(*writes)
    final = await store.get_state(sid)
    assert sorted(m["n"] for m in final.messages[1:]) == list(range(10))
