"""The reply log (note_reply / noted_reply): a turn's sentences recorded before they are
published, first text per seq wins, read back contiguous from 0; kept, expired and deleted
with the session. One suite on the in-memory store and on the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from store_testkit import Backend, open_backend

from dealerline_common.state_store import MemoryStateStore

TTL_S = 600.0


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for b in open_backend(request.param, ttl_s=TTL_S, backoff_s=0.005):
        yield b


def _sid() -> str:
    return f"sess-{uuid.uuid4().hex[:8]}"


async def test_noted_sentences_come_back_in_order(backend: Backend) -> None:
    store, sid = backend.store, _sid()
    assert await store.noted_reply(sid, "t1") == []
    await store.note_reply(sid, "t1", 1, "We open at eight.")
    await store.note_reply(sid, "t1", 0, "Sure.")
    await store.note_reply(sid, "t1", 2, "See you then.")
    # Another process (a new owner of the redelivered turn) reads the same log.
    assert await backend.other().noted_reply(sid, "t1") == [
        "Sure.",
        "We open at eight.",
        "See you then.",
    ]
    # Turns and sessions are separate logs.
    assert await store.noted_reply(sid, "t2") == []
    assert await store.noted_reply(_sid(), "t1") == []


async def test_the_first_text_noted_for_a_seq_wins(backend: Backend) -> None:
    store, rerun, sid = backend.store, backend.other(), _sid()
    await store.note_reply(sid, "t1", 0, "Sure, Tuesday works.")
    await rerun.note_reply(sid, "t1", 0, "Let me check Tuesday.")  # a re-run's other wording
    await rerun.note_reply(sid, "t1", 1, "I've booked you in.")
    assert await store.noted_reply(sid, "t1") == ["Sure, Tuesday works.", "I've booked you in."]


async def test_the_log_stops_at_the_first_gap(backend: Backend) -> None:
    store, sid = backend.store, _sid()
    await store.note_reply(sid, "t1", 1, "second")
    assert await store.noted_reply(sid, "t1") == []  # seq 0 never noted
    await store.note_reply(sid, "t1", 0, "first")
    await store.note_reply(sid, "t1", 3, "fourth")
    assert await store.noted_reply(sid, "t1") == ["first", "second"]
    await store.note_reply(sid, "t1", 2, "")  # an empty sentence still fills its seq
    assert await store.noted_reply(sid, "t1") == ["first", "second", "", "fourth"]


async def test_racing_writers_of_one_seq_agree_on_one_text(backend: Backend) -> None:
    sid = _sid()
    stores = [backend.other() for _ in range(8)]
    await asyncio.gather(
        *(
            s.note_reply(sid, "t1", seq, f"writer {i}")
            for i, s in enumerate(stores)
            for seq in (0, 1)
        )
    )
    noted = await backend.store.noted_reply(sid, "t1")
    assert len(noted) == 2 and all(n.startswith("writer ") for n in noted)
    assert [await s.noted_reply(sid, "t1") for s in stores] == [noted] * len(stores)


async def test_reply_logs_have_the_session_ttl_and_go_with_it(backend: Backend) -> None:
    store, sid, keep = backend.store, _sid(), _sid()
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    await store.note_reply(sid, "t1", 0, "hello")
    await store.note_reply(sid, "t2", 0, "again")
    await store.note_reply(keep, "t1", 0, "kept")
    ttls = await store.key_ttls(sid)
    assert store.keys(sid).reply("t1") in ttls and store.keys(sid).reply("t2") in ttls
    assert store.keys(sid).replies in ttls
    assert all(0 < t <= TTL_S for t in ttls.values()), ttls
    if backend.raw is not None:  # ask Redis itself
        for key in ttls:
            assert 0 < await backend.raw.ttl(key) <= TTL_S, key

    await store.delete(sid)
    assert await store.key_ttls(sid) == {}
    assert await store.noted_reply(sid, "t1") == []
    assert await store.noted_reply(keep, "t1") == ["kept"]
    if backend.raw is not None:
        left = [k async for k in backend.raw.scan_iter(match=f"{backend.namespace}*{sid}*")]
        assert left == []


async def test_a_later_write_keeps_the_reply_log_alive_in_redis(backend: Backend) -> None:
    if backend.raw is None:
        pytest.skip("TTL refresh by Redis itself; the memory store's is tested below")
    store, sid = backend.store, _sid()
    await store.note_reply(sid, "t1", 0, "hello")
    log_key = store.keys(sid).reply("t1")
    await backend.raw.expire(log_key, 5)
    await store.update(sid, lambda s: s.messages.append({"n": 1}))
    assert await backend.raw.ttl(log_key) > 5


async def test_memory_reply_log_expires_by_its_clock() -> None:
    clock = [1000.0]
    store = MemoryStateStore(ttl_s=10, clock=lambda: clock[0])
    await store.note_reply("s1", "t1", 0, "hello")
    clock[0] += 6
    await store.update("s1", lambda s: s.messages.append({"n": 1}))  # refreshes the log too
    clock[0] += 6
    assert await store.noted_reply("s1", "t1") == ["hello"]
    clock[0] += 11
    assert await store.noted_reply("s1", "t1") == []
    assert await store.key_ttls("s1") == {}


async def test_bad_reply_arguments_are_refused(backend: Backend) -> None:
    store = backend.store
    with pytest.raises(ValueError, match="turn_id"):
        await store.note_reply("s", "", 0, "x")
    with pytest.raises(ValueError, match="seq"):
        await store.note_reply("s", "t", -1, "x")
    with pytest.raises(ValueError, match="seq"):
        await store.note_reply("s", "t", True, "x")
    with pytest.raises(ValueError, match="text"):
        await store.note_reply("s", "t", 0, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_id"):
        await store.noted_reply("", "t")
    with pytest.raises(ValueError, match="turn_id"):
        await store.noted_reply("s", "")
    assert await store.key_ttls("s") == {}
