"""Fixtures every test folder can use: a real nats-server per test, and a guard that
fails a test which leaves asyncio tasks running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from dealerline_sim.nats_server import NatsServer


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


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
