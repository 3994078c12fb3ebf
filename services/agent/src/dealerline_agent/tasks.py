"""The background tasks the agent owns (greetings, proactive and key-press turns, barge-in
edits): spawned with a name, their failures logged, awaited or cancelled at drain."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from dealerline_common.logs import get_logger

log = get_logger(__name__)


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, awaited: bool = False
    ) -> asyncio.Task[Any]:
        """An owned, named task; one nobody awaits has its failure logged here."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not awaited:
            task.add_done_callback(_log_failure)
        return task

    async def finish(self, timeout_s: float, cancel_timeout_s: float) -> None:
        """Let the tasks finish within ``timeout_s``; cancel those still running."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=cancel_timeout_s)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task failed", task=task.get_name(), error=repr(exc), exc_info=exc)
