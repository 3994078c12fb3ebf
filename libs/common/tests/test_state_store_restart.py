"""A Redis restart of a few seconds mid-call: the store's calls wait it out (connection
errors retried until ``unavailable_deadline_s``) and complete after it, nothing lost.
On a redis-server of the test's own (append-only, a free port), never the system one."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from dealerline_common.state import BackgroundTask, ConversationState, Notification
from dealerline_common.state_store import (
    DEFAULT_UNAVAILABLE_DEADLINE_S,
    RedisStateStore,
    StateStoreUnavailable,
)
from dealerline_common.state_store.local_redis import RedisServer

DOWN_S = 2.0  # how long Redis stays down: "a restart of a few seconds"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_calls_ride_out_a_redis_restart(redis_server: RedisServer) -> None:
    sid, writers = "restart-1", 4
    stores = [RedisStateStore(redis_server.url, namespace="rt:") for _ in range(writers + 1)]
    assert stores[0].unavailable.deadline_s == DEFAULT_UNAVAILABLE_DEADLINE_S > DOWN_S
    acked: Counter[str] = Counter()  # updates the store confirmed, per writer
    during = Counter[str]()  # calls issued while Redis was down (they must complete)
    down = asyncio.Event()
    restarted = asyncio.Event()

    async def writer(store: RedisStateStore, name: str) -> None:
        def bump(state: ConversationState) -> None:
            mine = next((m for m in state.messages if m.get("writer") == name), None)
            if mine is None:
                state.messages.append({"writer": name, "n": 1})
            else:
                mine["n"] += 1

        while not restarted.is_set() or acked[name] < 20:
            issued_down = down.is_set()
            await store.update(sid, bump)
            acked[name] += 1
            during["update"] += issued_down
            await asyncio.sleep(0.02)

    async def background(store: RedisStateStore) -> None:
        i = 0
        while not restarted.is_set() or i < 20:
            issued_down = down.is_set()
            note = Notification(id=f"n{i}", kind="human_available", data={"name": f"s{i}"})
            await store.push_notification(sid, note)
            await store.set_task(sid, BackgroundTask(task_id=f"t{i % 3}", kind="escalation"))
            await store.note_reply(sid, "turn-1", i, f"sentence {i}")
            await store.sync_atomic_updates_to_state(sid)
            during["background"] += issued_down
            i += 1
            await asyncio.sleep(0.02)
        acked["notifications"] = i

    async def restart() -> None:
        await _wait(lambda: min(acked[f"w{w}"] for w in range(writers)) >= 10, "writers")
        down.set()
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(redis_server.start)
        down.clear()
        restarted.set()

    try:
        async with asyncio.TaskGroup() as tg:
            for w in range(writers):
                tg.create_task(writer(stores[w], f"w{w}"), name=f"writer-{w}")
            tg.create_task(background(stores[-1]), name="background")
            tg.create_task(restart(), name="restart")
        final = await stores[0].sync_atomic_updates_to_state(sid)
        noted = await stores[0].noted_reply(sid, "turn-1")
    finally:
        for store in stores:
            await store.close()

    # Calls were issued while Redis was down, and every one of them completed.
    assert during["update"] >= 1 and during["background"] >= 1, during
    counts = {m["writer"]: m["n"] for m in final.messages}
    assert counts == {f"w{w}": acked[f"w{w}"] for w in range(writers)}  # nothing lost
    assert final.version >= sum(counts.values())
    n = acked["notifications"]
    assert Counter(x.id for x in final.pending_notifications) == Counter(f"n{i}" for i in range(n))
    assert noted == [f"sentence {i}" for i in range(n)]
    assert {t.task_id for t in final.pending_tasks} == {"t0", "t1", "t2"}


async def test_a_redis_down_past_the_deadline_fails_clearly(redis_server: RedisServer) -> None:
    store = RedisStateStore(redis_server.url, namespace="rt:", unavailable_deadline_s=1.0)
    try:
        await store.update("s1", lambda s: s.messages.append({"n": 1}))
        await asyncio.to_thread(redis_server.stop)
        with pytest.raises(StateStoreUnavailable, match="unreachable during get_state"):
            await store.update("s1", lambda s: s.messages.append({"n": 2}))
        await asyncio.to_thread(redis_server.start)
        # Back up: the data survived the restart (append-only) and the store reconnects.
        state = await store.update("s1", lambda s: s.messages.append({"n": 3}))
        assert state.messages == [{"n": 1}, {"n": 3}]
    finally:
        await store.close()
