"""Every key a session gets lives on one Redis Cluster slot: the session id is each key's
hash tag, and neither the namespace nor the session id may carry braces that would change
the tag."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.cluster import key_slot
from store_testkit import Backend, open_backend

from dealerline_common.state import BackgroundTask, Notification
from dealerline_common.state_store import MemoryStateStore, RedisStateStore, state_store_from_url


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async for b in open_backend("redis", ttl_s=600.0):
        yield b


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


async def test_every_key_of_a_session_is_on_the_session_ids_slot(redis_backend: Backend) -> None:
    store, raw = redis_backend.store, redis_backend.raw
    assert raw is not None
    sid = f"sess-{uuid.uuid4().hex[:8]}"
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    await store.push_notification(sid, Notification(id="n1", kind="human_available"))
    await store.set_task(sid, BackgroundTask(task_id="t1", kind="escalation"))
    await store.set_task(sid, BackgroundTask(task_id="t2", kind="callback"))
    await store.note_reply(sid, "turn-1", 0, "hello")
    await store.note_reply(sid, "turn-2", 0, "again")
    await store.sync_atomic_updates_to_state(sid)

    # Every key Redis really holds for the session, found by scanning rather than by asking
    # the store; the write lease and its baton (absent without contention) by name.
    found = {k async for k in raw.scan_iter(match=f"{redis_backend.namespace}*", count=1000)}
    keys = store.keys(sid)
    expected = {*keys.fixed, keys.task("t1"), keys.task("t2")}
    expected |= {keys.reply("turn-1"), keys.reply("turn-2")}
    assert found == expected, found ^ expected
    assert {_slot(k) for k in [*found, *keys.all]} == {_slot(sid)}
    assert all(f"{{{sid}}}" in k for k in found)


def test_the_tag_is_the_session_id_alone() -> None:
    for ns in ("", "dl:", "prod-east:dealer_7:"):
        keys = MemoryStateStore(namespace=ns).keys("CA1234")
        for key in (*keys.all, keys.task("t:1"), keys.reply("turn{x}")):
            assert key.startswith(ns)
            # Redis hashes what lies between the first "{" and the next "}".
            start = key.index("{")
            assert key[start + 1 : key.index("}", start)] == "CA1234", key
            assert _slot(key) == _slot("CA1234")
    # Different sessions may land on different slots (their keys are not tied together).
    assert len({_slot(MemoryStateStore().keys(f"s{i}").state) for i in range(20)}) > 1


async def test_braces_are_refused_in_namespaces_and_session_ids() -> None:
    for ns in ("{dl}:", "dl}:", "a{b"):
        with pytest.raises(ValueError, match="namespace may not contain braces"):
            MemoryStateStore(namespace=ns)
        with pytest.raises(ValueError, match="namespace may not contain braces"):
            RedisStateStore(namespace=ns)
        with pytest.raises(ValueError, match="namespace may not contain braces"):
            state_store_from_url(None, namespace=ns)
    store = MemoryStateStore()
    for sid in ("}x", "a{b}", "{s}"):
        with pytest.raises(ValueError, match="session_id may not contain braces"):
            await store.get_state(sid)
        with pytest.raises(ValueError, match="session_id may not contain braces"):
            await store.note_reply(sid, "t", 0, "x")
