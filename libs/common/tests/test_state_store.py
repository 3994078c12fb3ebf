"""The conversation state stores: one suite run against the in-memory store and real Redis.

Redis tests use redis://127.0.0.1:6379/0 (``DL_TEST_REDIS_URL`` overrides) with a unique
key namespace per test, and delete their keys afterwards, so parallel runs never collide.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from store_testkit import REDIS_URL, Backend, open_backend

from dealerline_common.state import (
    BackgroundTask,
    ConversationState,
    CustomerInfo,
    Notification,
    TaskStatus,
)
from dealerline_common.state_store import (
    MemoryStateStore,
    RedisStateStore,
    StateConflictError,
    StateStore,
    StateStoreError,
    StateStoreUnavailable,
    state_store_from_url,
)

TTL_S = 600.0


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for b in open_backend(request.param, ttl_s=TTL_S, backoff_s=0.005):
        yield b


@pytest.fixture
async def redis_ns() -> AsyncIterator[tuple[str, Redis]]:
    """A unique key namespace on the real Redis and a raw client; keys deleted after."""
    ns = f"dltest:{uuid.uuid4().hex}:"
    raw = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield ns, raw
    finally:
        keys = [k async for k in raw.scan_iter(match=f"{ns}*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


def _sid() -> str:
    return f"sess-{uuid.uuid4().hex[:8]}"


def _note(nid: str, kind: str = "human_available", **data: str) -> Notification:
    return Notification(id=nid, kind=kind, data=data or {"name": nid})


# -- the document --------------------------------------------------------------------------


async def test_absent_session_reads_as_new_and_is_not_created(backend: Backend) -> None:
    store, sid = backend.store, _sid()
    assert await store.get_state_with_version(sid) == (None, 0)
    fresh = await store.get_state(sid)
    assert fresh.session_id == sid and fresh.version == 0 and fresh.messages == []
    assert await store.get_state_with_version(sid) == (None, 0)
    assert await store.key_ttls(sid) == {}


async def test_round_trip_and_version_bump(backend: Backend) -> None:
    store, sid = backend.store, _sid()
    state = ConversationState(session_id=sid, caller_phone="+14155550123")
    state.customer = CustomerInfo(id=7, name="Ann", phone="+14155550123")
    state.booking_slots.service = "oil change"
    state.messages.append({"type": "human", "data": {"content": "hi"}})
    before = state.updated_at

    assert await store.set_state_if_version(state, 0) is True
    assert state.version == 1 and state.updated_at >= before
    got, version = await store.get_state_with_version(sid)
    assert version == 1 and got is not None
    assert got.model_dump() == state.model_dump()

    got.booking_slots.date = "2030-01-02"
    assert await store.set_state_if_version(got, 1) is True
    again = await store.get_state(sid)
    assert again.version == 2 and again.booking_slots.date == "2030-01-02"
    assert again.customer is not None and again.customer.name == "Ann"


async def test_stale_write_is_refused(backend: Backend) -> None:
    store, sid = backend.store, _sid()
    await store.update(sid, lambda s: s.messages.append({"n": 0}))
    a, va = await store.get_state_with_version(sid)
    b, vb = await backend.other().get_state_with_version(sid)
    assert a is not None and b is not None and va == vb == 1

    a.messages.append({"n": "a"})
    assert await store.set_state_if_version(a, va) is True
    b.messages.append({"n": "b"})
    assert await backend.other().set_state_if_version(b, vb) is False
    assert b.version == 1  # the loser's object is untouched

    stored = await store.get_state(sid)
    assert stored.version == 2 and stored.messages == [{"n": 0}, {"n": "a"}]
    # expected_version 0 means "create only": refused once the document exists.
    assert await store.set_state_if_version(ConversationState(session_id=sid), 0) is False


async def test_update_creates_and_accepts_async_mutators(backend: Backend) -> None:
    store, sid = backend.store, _sid()

    async def mark(state: ConversationState) -> None:
        await asyncio.sleep(0)
        state.end_requested = True

    first = await store.update(sid, lambda s: s.messages.append({"n": 1}))
    assert first.version == 1
    second = await store.update(sid, mark)
    assert second.version == 2 and second.end_requested and second.messages == [{"n": 1}]
    assert (await store.get_state(sid)).model_dump() == second.model_dump()


async def test_update_retries_past_a_concurrent_writer(backend: Backend) -> None:
    store, other, sid = backend.store, backend.other(), _sid()
    await store.update(sid, lambda s: s.messages.append({"n": "start"}))
    calls = 0

    async def mutate(state: ConversationState) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # another process writes between our read and our write
            await other.update(sid, lambda s: s.messages.append({"n": "other"}))
        state.messages.append({"n": "mine"})

    result = await store.update(sid, mutate)
    assert calls == 2
    assert result.messages == [{"n": "start"}, {"n": "other"}, {"n": "mine"}]
    assert result.version == 3
    assert (await store.get_state(sid)).messages == result.messages


async def test_conflict_error_after_retries_exhausted(backend: Backend) -> None:
    store, other, sid = backend.store, backend.other(), _sid()
    calls = 0

    async def always_loses(state: ConversationState) -> None:
        nonlocal calls
        calls += 1
        await other.update(sid, lambda s: s.messages.append({"n": "winner"}))
        state.messages.append({"n": "loser"})

    with pytest.raises(StateConflictError, match="3 attempts"):
        await store.update(sid, always_loses, retries=2)
    assert calls == 3
    stored = await store.get_state(sid)
    assert stored.messages == [{"n": "winner"}] * 3 and stored.version == 3


async def test_lost_races_are_retried_until_the_deadline() -> None:
    """The product's policy is a deadline, not a count: a writer that keeps losing keeps
    trying (with growing, jittered waits) until ``conflict_deadline_s`` has passed. (On
    Redis a loser queues for the session's write lease instead: see
    test_state_store_contention.py.)"""
    store, sid = MemoryStateStore(conflict_deadline_s=1.0, backoff_s=0.01), _sid()
    calls = 0

    async def always_loses(state: ConversationState) -> None:
        nonlocal calls
        calls += 1
        await store.update(sid, lambda s: s.messages.append({"n": "winner"}))

    with pytest.raises(StateConflictError, match="attempts to update it"):
        await store.update(sid, always_loses)
    assert calls > 4  # more than the old fixed count of attempts
    assert (await store.get_state(sid)).messages == [{"n": "winner"}] * calls

    with pytest.raises(ValueError, match="deadline_s"):
        MemoryStateStore(conflict_deadline_s=0)


async def test_a_failing_mutator_writes_nothing(backend: Backend) -> None:
    store, sid = backend.store, _sid()

    def boom(state: ConversationState) -> None:
        state.messages.append({"n": "half"})
        raise KeyError("tool failed")

    with pytest.raises(KeyError):
        await store.update(sid, boom)
    assert await store.get_state_with_version(sid) == (None, 0)
    with pytest.raises(ValueError, match="session_id"):
        await store.update(sid, lambda s: setattr(s, "session_id", "other"))


async def test_bad_arguments_are_refused(backend: Backend) -> None:
    store = backend.store
    with pytest.raises(ValueError, match="session_id"):
        await store.get_state("")
    with pytest.raises(ValueError, match="expected_version"):
        await store.set_state_if_version(ConversationState(session_id="s"), -1)
    with pytest.raises(ValueError, match="task_id"):
        await store.set_task("s", BackgroundTask(task_id="", kind="escalation"))
    with pytest.raises(ValueError, match="retries"):
        await store.update("s", lambda s: None, retries=-1)


# -- background results ---------------------------------------------------------------------


async def test_notifications_are_delivered_exactly_once(backend: Backend) -> None:
    store, pusher, sid = backend.store, backend.other(), _sid()
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    await pusher.push_notification(sid, _note("n1", name="Bob"))
    await pusher.push_notification(sid, _note("n2", kind="escalation_failed", reason="busy"))
    await pusher.push_notification(sid, _note("n1", name="Bob again"))  # same id again

    synced = await store.sync_atomic_updates_to_state(sid)
    assert [n.id for n in synced.pending_notifications] == ["n1", "n2"]
    assert synced.pending_notifications[0].data == {"name": "Bob"}  # the first push wins
    assert synced.delivered_notifications == ["n1", "n2"]
    assert synced.version == 2 and synced.messages == [{"n": 1}]
    assert (await store.get_state(sid)).model_dump() == synced.model_dump()

    again = await store.sync_atomic_updates_to_state(sid)
    assert again.version == 2  # nothing new: no write
    assert [n.id for n in again.pending_notifications] == ["n1", "n2"]

    # The agent consumes the pending ones; they must not come back on the next turn.
    await store.update(sid, lambda s: s.pending_notifications.clear())
    await pusher.push_notification(sid, _note("n3"))
    await pusher.push_notification(sid, _note("n2"))
    third = await store.sync_atomic_updates_to_state(sid)
    assert [n.id for n in third.pending_notifications] == ["n3"]
    assert third.delivered_notifications == ["n1", "n2", "n3"]
    assert third.version == 4

    # The delivered set, not the document's copy, is what makes delivery exactly-once: a
    # writer that trims the document's bookkeeping does not cause a re-delivery.
    def trim(s: ConversationState) -> None:
        s.pending_notifications.clear()
        s.delivered_notifications.clear()

    await store.update(sid, trim)
    fourth = await store.sync_atomic_updates_to_state(sid)
    assert fourth.pending_notifications == [] and fourth.version == 5


async def test_sync_of_an_unknown_session_creates_nothing_until_there_is_news(
    backend: Backend,
) -> None:
    store, sid = backend.store, _sid()
    empty = await store.sync_atomic_updates_to_state(sid)
    assert empty.version == 0 and empty.pending_notifications == []
    assert await store.get_state_with_version(sid) == (None, 0)

    await store.push_notification(sid, _note("early"))
    created = await store.sync_atomic_updates_to_state(sid)
    assert created.version == 1 and [n.id for n in created.pending_notifications] == ["early"]


async def test_task_records_are_merged_newest_wins(backend: Backend) -> None:
    store, worker, sid = backend.store, backend.other(), _sid()
    t1 = BackgroundTask(task_id="t1", kind="escalation", created_at=100.0, updated_at=100.0)
    await worker.set_task(sid, t1)
    got = await store.get_task(sid, "t1")
    assert got is not None and got.model_dump() == t1.model_dump()
    assert await store.get_task(sid, "nope") is None

    s1 = await store.sync_atomic_updates_to_state(sid)
    assert [(t.task_id, t.status) for t in s1.pending_tasks] == [("t1", TaskStatus.PENDING)]

    running = t1.model_copy(update={"status": TaskStatus.RUNNING, "updated_at": 200.0})
    await worker.set_task(sid, running)
    await worker.set_task(sid, BackgroundTask(task_id="t2", kind="callback", updated_at=150.0))
    s2 = await store.sync_atomic_updates_to_state(sid)
    assert [(t.task_id, t.status) for t in s2.pending_tasks] == [
        ("t1", TaskStatus.RUNNING),
        ("t2", TaskStatus.PENDING),
    ]
    assert s2.version == s1.version + 1
    assert s2.task("t1") is not None and s2.task("t1").updated_at == 200.0  # type: ignore[union-attr]

    # An older record (a late, out-of-order write) does not overwrite a newer state copy.
    stale = t1.model_copy(update={"status": TaskStatus.FAILED, "updated_at": 150.0})
    await worker.set_task(sid, stale)
    s3 = await store.sync_atomic_updates_to_state(sid)
    assert s3.version == s2.version
    assert s3.task("t1").status == TaskStatus.RUNNING  # type: ignore[union-attr]


async def test_one_sync_merges_a_notification_and_a_task_record_together(
    backend: Backend,
) -> None:
    """An escalation leaves both at once (the status to speak and its task record): the
    task record is merged in the same sync as the notification, not left behind it."""
    store, worker, sid = backend.store, backend.other(), _sid()
    await worker.push_notification(sid, _note("t1:confirmed", name="Alice"))
    await worker.set_task(sid, BackgroundTask(task_id="t1", kind="escalation", updated_at=1.0))
    state = await store.sync_atomic_updates_to_state(sid)
    assert [n.id for n in state.pending_notifications] == ["t1:confirmed"]
    assert [t.task_id for t in state.pending_tasks] == ["t1"]


async def test_sync_keeps_concurrent_document_writes(backend: Backend) -> None:
    store, other, sid = backend.store, backend.other(), _sid()
    await other.update(sid, lambda s: s.messages.append({"n": "a"}))
    await other.push_notification(sid, _note("x"))
    await store.sync_atomic_updates_to_state(sid)
    await other.update(sid, lambda s: s.messages.append({"n": "b"}))
    final = await store.get_state(sid)
    assert final.messages == [{"n": "a"}, {"n": "b"}]
    assert [n.id for n in final.pending_notifications] == ["x"]


# -- TTL and delete ------------------------------------------------------------------------


async def _populate(store: StateStore, sid: str) -> None:
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    await store.push_notification(sid, _note("n1"))
    await store.set_task(sid, BackgroundTask(task_id="t1", kind="escalation"))
    await store.sync_atomic_updates_to_state(sid)


def _session_keys(ns: str, sid: str) -> set[str]:
    """The keys ``_populate`` gives a session: the session id is every key's hash tag."""
    return {
        f"{ns}state:{{{sid}}}",
        f"{ns}notifications:{{{sid}}}",
        f"{ns}delivered_notifications:{{{sid}}}",
        f"{ns}tasks:{{{sid}}}",
        f"{ns}task:{{{sid}}}:t1",
    }


async def test_every_key_has_the_ttl(backend: Backend) -> None:
    store, sid = backend.store, _sid()
    await _populate(store, sid)
    ttls = await store.key_ttls(sid)
    assert set(ttls) == _session_keys(backend.namespace, sid)
    assert all(0 < t <= TTL_S for t in ttls.values()), ttls
    if backend.raw is not None:  # ask Redis itself, not the store
        for key in _session_keys(backend.namespace, sid):
            assert 0 < await backend.raw.ttl(key) <= TTL_S, key


async def test_writes_refresh_the_ttl_in_redis(redis_ns: tuple[str, Redis]) -> None:
    ns, raw = redis_ns
    store, sid = RedisStateStore(REDIS_URL, namespace=ns, ttl_s=TTL_S), _sid()
    try:
        await _populate(store, sid)
        for key in _session_keys(ns, sid):
            await raw.expire(key, 5)
        await store.push_notification(sid, _note("n2"))  # a background write...
        for key in _session_keys(ns, sid):  # ...keeps every key of the session alive
            assert await raw.ttl(key) > 5, key
        for key in _session_keys(ns, sid):
            await raw.expire(key, 5)
        await store.update(sid, lambda s: s.messages.append({"n": 2}))
        for key in _session_keys(ns, sid):
            assert await raw.ttl(key) > 5, key
    finally:
        await store.close()


async def test_memory_store_expires_by_its_clock() -> None:
    clock = [1000.0]
    store = MemoryStateStore(ttl_s=10, clock=lambda: clock[0])
    sid = "s1"
    await _populate(store, sid)
    clock[0] += 6
    await store.push_notification(sid, _note("n2"))  # refreshes every key of the session
    clock[0] += 6  # 12 s after the first writes, 6 s after the refresh
    state, version = await store.get_state_with_version(sid)
    assert state is not None and version == 2
    assert set(await store.key_ttls(sid)) == _session_keys("", sid)
    clock[0] += 11
    assert await store.get_state_with_version(sid) == (None, 0)
    assert await store.get_task(sid, "t1") is None
    assert await store.key_ttls(sid) == {}
    fresh = await store.sync_atomic_updates_to_state(sid)
    assert fresh.version == 0 and fresh.pending_notifications == []


async def test_delete_removes_every_key(backend: Backend) -> None:
    store, sid, keep = backend.store, _sid(), _sid()
    await _populate(store, sid)
    await _populate(store, keep)
    await store.delete(sid)
    assert await store.key_ttls(sid) == {}
    assert await store.get_state_with_version(sid) == (None, 0)
    assert await store.get_task(sid, "t1") is None
    assert set(await store.key_ttls(keep)) == _session_keys(backend.namespace, keep)
    if backend.raw is not None:
        left = [k async for k in backend.raw.scan_iter(match=f"{backend.namespace}*{sid}*")]
        assert left == []
    await store.delete(sid)  # deleting twice is fine


# -- the concurrency proof ----------------------------------------------------------------------


async def test_concurrent_writers_and_background_results_lose_nothing(backend: Backend) -> None:
    writers, updates, pushers, per_pusher, syncers = 20, 10, 4, 15, 3
    sid = _sid()
    done_pushing = asyncio.Event()
    mutations = Counter[str]()

    async def writer(w: int) -> None:
        store = backend.other()
        for u in range(updates):
            marker = {"marker": f"w{w}-u{u}"}

            async def turn(state: ConversationState, m: dict[str, str] = marker) -> None:
                mutations["update"] += 1
                await asyncio.sleep(0)  # a turn takes time: others get to write meanwhile
                state.messages.append(m)

            await store.update(sid, turn)  # the product's own retry policy, nothing more

    async def pusher(p: int) -> None:
        store = backend.other()
        for i in range(per_pusher):
            note = _note(f"p{p}-{i}")
            await store.push_notification(sid, note)
            await store.push_notification(sid, note)  # a retried publish: same id twice
            await asyncio.sleep(0)

    async def syncer() -> None:
        store = backend.other()
        while not done_pushing.is_set():
            await store.sync_atomic_updates_to_state(sid)  # the product's policy alone
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for s in range(syncers):
            tg.create_task(syncer(), name=f"syncer-{s}")
        async with asyncio.TaskGroup() as work:
            for w in range(writers):
                work.create_task(writer(w), name=f"writer-{w}")
            for p in range(pushers):
                work.create_task(pusher(p), name=f"pusher-{p}")
        done_pushing.set()

    final = await backend.store.sync_atomic_updates_to_state(sid)
    markers = Counter(m["marker"] for m in final.messages)
    assert set(markers) == {f"w{w}-u{u}" for w in range(writers) for u in range(updates)}
    assert set(markers.values()) == {1}
    note_ids = Counter(n.id for n in final.pending_notifications)
    expected = {f"p{p}-{i}" for p in range(pushers) for i in range(per_pusher)}
    assert set(note_ids) == expected and set(note_ids.values()) == {1}
    assert Counter(final.delivered_notifications) == note_ids
    # Each writer's own markers stay in its order.
    for w in range(writers):
        mine = [m["marker"] for m in final.messages if m["marker"].startswith(f"w{w}-")]
        assert mine == [f"w{w}-u{u}" for u in range(updates)]
    if backend.raw is not None:
        delivered = await backend.raw.smembers(backend.store.keys(sid).delivered)
        assert delivered == expected
    assert final.version >= writers * updates + 1
    # The proof only means something if writers really raced: some attempts were lost.
    assert mutations["update"] > writers * updates, mutations


# -- Redis specifics -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_redis_raises_state_store_unavailable() -> None:
    store = RedisStateStore(
        f"redis://127.0.0.1:{_free_port()}/0", connect_attempts=2, socket_timeout_s=1
    )
    try:
        with pytest.raises(StateStoreUnavailable, match="unreachable during get_state"):
            await store.get_state("s1")
        with pytest.raises(StateStoreUnavailable, match="set_state"):
            await store.set_state_if_version(ConversationState(session_id="s1"), 0)
        with pytest.raises(StateStoreUnavailable):
            await store.update("s1", lambda s: None)
        with pytest.raises(StateStoreUnavailable):
            await store.push_notification("s1", _note("n"))
        with pytest.raises(StateStoreUnavailable):
            await store.sync_atomic_updates_to_state("s1")
    finally:
        await store.close()


async def test_a_dropped_connection_is_retried_transparently(redis_ns: tuple[str, Redis]) -> None:
    ns, raw = redis_ns
    name = f"dltest-{uuid.uuid4().hex[:12]}"
    store = RedisStateStore(REDIS_URL, namespace=ns, client_name=name)
    try:
        await store.update("s1", lambda s: s.messages.append({"n": 1}))
        victims = [c["id"] for c in await raw.client_list() if c.get("name") == name]
        assert victims
        for cid in victims:
            await raw.client_kill_filter(_id=cid)
        # The pooled connection is dead; the store reconnects and the write lands once.
        state = await store.update("s1", lambda s: s.messages.append({"n": 2}))
        assert state.messages == [{"n": 1}, {"n": 2}]
        assert (await store.get_state("s1")).messages == [{"n": 1}, {"n": 2}]
    finally:
        await store.close()


async def test_corrupt_redis_data_fails_clearly_or_is_skipped(
    redis_ns: tuple[str, Redis],
) -> None:
    ns, raw = redis_ns
    store = RedisStateStore(REDIS_URL, namespace=ns)
    try:
        await raw.set(f"{ns}state:{{bad}}", "{not json")
        with pytest.raises(StateStoreError, match="state:{bad}"):
            await store.get_state("bad")
        with pytest.raises(StateStoreError, match="state:{bad}"):
            await store.update("bad", lambda s: None)
        await raw.set(f"{ns}state:{{unversioned}}", '{"session_id": "unversioned"}')
        unversioned = ConversationState(session_id="unversioned")
        with pytest.raises(StateStoreError, match="not a versioned document"):
            await store.set_state_if_version(unversioned, 0)

        # A poisoned notification is skipped; the good ones still arrive.
        await raw.rpush(f"{ns}notifications:{{ok}}", '{"kind": "no id"}')
        await store.push_notification("ok", _note("good"))
        synced = await store.sync_atomic_updates_to_state("ok")
        assert [n.id for n in synced.pending_notifications] == ["good"]
    finally:
        await store.close()


# -- the factory -------------------------------------------------------------------------------


async def test_factory_picks_the_store_from_the_url() -> None:
    for url in (None, "", "memory://"):
        store = state_store_from_url(url, namespace="x:", ttl_s=5)
        assert isinstance(store, MemoryStateStore)
        assert store.namespace == "x:" and store.ttl_s == 5
    for url in (REDIS_URL, "rediss://user:secret@example.invalid:6380/1"):
        store = state_store_from_url(url, namespace="y:")
        assert isinstance(store, RedisStateStore) and store.namespace == "y:"
        await store.close()
    with pytest.raises(ValueError, match="unsupported state store URL") as err:
        state_store_from_url("postgres://user:secret@db/x")
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="ttl_s"):
        state_store_from_url(None, ttl_s=0)
    # A service passes its policy settings the same way whichever store its URL names; the
    # in-process store takes the ones it has and ignores the Redis-only ones.
    policy = {"conflict_deadline_s": 3.0, "unavailable_deadline_s": 5.0, "connect_attempts": 2}
    memory = state_store_from_url("memory://", **policy)
    assert isinstance(memory, MemoryStateStore) and memory.conflicts.deadline_s == 3.0
    redis_store = state_store_from_url(REDIS_URL, **policy)
    assert isinstance(redis_store, RedisStateStore)
    assert redis_store.conflicts.deadline_s == 3.0
    assert redis_store.unavailable.deadline_s == 5.0 and redis_store.unavailable.attempts == 2
    await redis_store.close()
