"""Fixtures every test folder can use: a real nats-server per test, a bus client on it, and a guard that
fails a test which leaves asyncio tasks running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A bus connection for the test itself, with the fleet's streams in place."""
    bus = Bus(nats_server.url, "test-client", file_storage=False)
    await bus.connect()
    await bus.ensure_streams()
    yield bus
    await bus.close()


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [
        t
        for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task() and not _ignorable(t)
    ]
    if leaked:
        for t in leaked:
            t.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test leaked asyncio tasks: {[t.get_name() for t in leaked]}")


def _ignorable(task: asyncio.Task[object]) -> bool:
    # nats-py and uvicorn keep internal tasks that end on their own after close.
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", "")
    return any(part in name for part in ("Client._", "Server.", "_read_loop", "_flusher"))
