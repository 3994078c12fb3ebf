"""The state store as one agent process sees it, for :meth:`AgentService.kill`: a test's
stand-in for a crashed pod. A process killed by SIGKILL runs none of its clean-up: a turn
cut short by the kill does not store what it said so far, and the replica that takes its
job over must find the turn unfinished (and resume it), not a short reply committed by a
process that was already dead. An in-process kill cancels its tasks instead, and a
cancelled turn keeps what it did (right for a barge-in or a hang-up); so once
:meth:`MortalStore.die` is called, every call through this view fails, as it would from a
process that is gone. The store itself (shared with other replicas) is untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dealerline_common.state_store import StateStore


class ProcessKilled(RuntimeError):
    """The agent process this store belongs to was killed."""


class MortalStore:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._dead = False

    @property
    def inner(self) -> StateStore:
        return self._store

    def die(self) -> None:
        self._dead = True

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._dead:
                raise ProcessKilled(f"state store used after the process was killed ({name})")
            return attr(*args, **kwargs)

        return call


def mortal(store: StateStore) -> tuple[StateStore, Callable[[], None]]:
    """``store`` behind a view that dies with the process, and the function that kills it."""
    view = MortalStore(store)
    return view, view.die  # type: ignore[return-value]  # a proxy with StateStore's methods
