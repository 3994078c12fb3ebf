"""The named tasks of one media stream: each is kept until it ends, one that dies with an
error is logged and counted and reported to the stream (which closes itself rather than
leave the call mute or deaf), and all are cancelled with a deadline when the stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from dealerline_common.logs import get_logger

from .telemetry import GatewayMetrics

log = get_logger(__name__)

CANCEL_DEADLINE_S = 2.0


class CallTasks:
    def __init__(self, gm: GatewayMetrics, on_failure: Callable[[str], None]) -> None:
        """``on_failure(name)`` is told of each task that died, once logged and counted."""
        self._gm = gm
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[None]] = set()
        self.session_id: str | None = None  # names the tasks and their log lines

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{name}:{self.session_id or '-'}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        name = task.get_name().split(":", 1)[0]
        log.error(
            "per-call task failed",
            session_id=self.session_id,
            task=name,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        self._gm.task_failures.labels(name).inc()
        self._on_failure(name)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait for them, at most the deadline."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CANCEL_DEADLINE_S)
            for t in pending:
                log.error("task did not stop in time", task=t.get_name())
