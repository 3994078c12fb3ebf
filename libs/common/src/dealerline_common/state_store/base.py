"""The state store interface: an optimistic-locked document per session plus side keys
for background results, the read-mutate-write cycle with bounded retries that every
store shares (:meth:`StateStore.update`), and counters of events within a rolling window
shared by every process (:meth:`StateStore.count_in_window`)."""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from ..logs import get_logger
from ..state import BackgroundTask, ConversationState, Notification
from .errors import LostRace, StateConflictError
from .keys import SessionKeys, check_id

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TTL_S",
    "Mutator",
    "StateStore",
    "WindowCount",
    "check_reply",
    "check_window",
    "contiguous_reply",
    "lost_race_retrying",
]

log = get_logger(__name__)

DEFAULT_TTL_S = 86400.0
DEFAULT_RETRIES = 3  # a write that loses a race is retried up to 3 times

Mutator = Callable[[ConversationState], None | Awaitable[None]]


def lost_race_retrying(attempts: int, backoff_s: float) -> AsyncRetrying:
    """Retry an optimistic attempt that raised :class:`LostRace`, ``attempts`` in all,
    with a short random backoff (at most ``backoff_s``) so racing writers spread out."""
    return AsyncRetrying(
        retry=retry_if_exception_type(LostRace),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=backoff_s / 8, max=backoff_s),
        reraise=True,
    )


@dataclass(frozen=True, slots=True)
class WindowCount:
    """What :meth:`StateStore.count_in_window` found: the events within the window, and
    whether the event it was given is among them (recorded now or before)."""

    count: int
    counted: bool


def check_window(window_s: float, event: str | None, limit: int | None) -> None:
    """Refuse a window, event or limit that cannot make a counter (before any I/O)."""
    if not (isinstance(window_s, int | float) and math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a finite number > 0, got {window_s!r}")
    if event is not None and (not isinstance(event, str) or not event):
        raise ValueError(f"event must be a non-empty string or None, got {event!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an int >= 0 or None, got {limit!r}")


def check_reply(turn_id: str, seq: int, text: str) -> None:
    """Refuse a turn id, sentence number or text that cannot be noted (before any I/O)."""
    check_id("turn_id", turn_id)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"seq must be an int >= 0, got {seq!r}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")


def contiguous_reply(noted: Mapping[int, str]) -> list[str]:
    """The sentences ``0, 1, 2, ...`` of a reply log, up to the first missing one."""
    out: list[str] = []
    while len(out) in noted:
        out.append(noted[len(out)])
    return out


class StateStore(abc.ABC):
    """The conversation state store: optimistic-locked document + atomic side keys.

    Every key of a session expires ``ttl_s`` after the session's last write, so a call that
    ends without cleanup never leaks. ``retries`` is how many times :meth:`update` (and the
    sync) re-reads and tries again after losing to a concurrent writer.
    """

    def __init__(
        self,
        *,
        namespace: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.05,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s!r}")
        self.namespace = namespace
        self.ttl_s = float(ttl_s)
        self.retries = retries
        self.backoff_s = backoff_s

    def keys(self, session_id: str) -> SessionKeys:
        check_id("session_id", session_id)
        return SessionKeys.of(self.namespace, session_id)

    # -- the document --------------------------------------------------------------------

    @abc.abstractmethod
    async def get_state_with_version(self, session_id: str) -> tuple[ConversationState | None, int]:
        """The stored state and its version, or ``(None, 0)`` if there is none."""

    async def get_state(self, session_id: str) -> ConversationState:
        """The stored state, or a fresh (unstored) ``ConversationState`` for a new session."""
        state, _ = await self.get_state_with_version(session_id)
        return state if state is not None else ConversationState(session_id=session_id)

    @abc.abstractmethod
    async def set_state_if_version(self, state: ConversationState, expected_version: int) -> bool:
        """Write ``state`` only if the stored version is still ``expected_version``.

        ``expected_version`` 0 means "only if absent". On success the stored version is
        ``expected_version + 1``, ``state.version``/``state.updated_at`` are set to what was
        stored, and True is returned; a concurrent writer makes it return False (nothing
        written, ``state`` untouched).
        """

    async def update(
        self, session_id: str, mutate: Mutator, *, retries: int | None = None
    ) -> ConversationState:
        """Read, apply ``mutate`` (sync or async) to a fresh copy, write with the lock.

        On a lost race the state is re-read and ``mutate`` runs again on the new copy, so it
        must be a function of the state it is given (no side effects that must not repeat).
        Creates the document if absent. Raises :class:`StateConflictError` after
        ``1 + retries`` attempts; an exception from ``mutate`` propagates, nothing written.
        """
        check_id("session_id", session_id)
        attempts = 1 + (self.retries if retries is None else retries)
        if attempts < 1:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        try:
            async for attempt in lost_race_retrying(attempts, self.backoff_s):
                with attempt:
                    return await self._update_once(session_id, mutate)
        except LostRace:
            log.warning("state_store.conflict_exhausted", session_id=session_id, attempts=attempts)
            raise StateConflictError(
                f"state of session {session_id!r} changed under every one of "
                f"{attempts} attempts to update it"
            ) from None
        raise AssertionError("unreachable: tenacity either returned or raised")

    async def _update_once(self, session_id: str, mutate: Mutator) -> ConversationState:
        """One read-mutate-write attempt; raises :class:`LostRace` if another writer won."""
        current, version = await self.get_state_with_version(session_id)
        draft = current or ConversationState(session_id=session_id)
        result = mutate(draft)
        if inspect.isawaitable(result):
            await result
        if draft.session_id != session_id:
            raise ValueError(f"mutate changed session_id {session_id!r} -> {draft.session_id!r}")
        if not await self.set_state_if_version(draft, version):
            log.debug("state_store.conflict", session_id=session_id, version=version)
            raise LostRace
        return draft

    # -- background results -------------------------------------------------------------

    @abc.abstractmethod
    async def push_notification(self, session_id: str, notification: Notification) -> None:
        """Queue a notification for the agent (atomic append; safe from any process)."""

    @abc.abstractmethod
    async def set_task(self, session_id: str, task: BackgroundTask) -> None:
        """Store (replace) one background task record."""

    @abc.abstractmethod
    async def get_task(self, session_id: str, task_id: str) -> BackgroundTask | None:
        """One background task record, or None."""

    @abc.abstractmethod
    async def sync_atomic_updates_to_state(self, session_id: str) -> ConversationState:
        """Merge queued notifications and task records into the state, exactly once.

        Each notification id not yet delivered is appended to ``pending_notifications`` and
        recorded as delivered (in the state and the delivered set) in the same atomic write;
        each task record replaces the state's copy if newer, or is appended. Returns the
        stored state; its version is bumped only if something changed. Raises
        :class:`StateConflictError` if concurrent writers won every attempt.
        """

    # -- the reply log ----------------------------------------------------------------------

    @abc.abstractmethod
    async def note_reply(self, session_id: str, turn_id: str, seq: int, text: str) -> None:
        """Record sentence ``seq`` of turn ``turn_id``'s reply before it is published; the
        first text noted for a seq wins (a re-run cannot overwrite what the caller may
        already have heard).

        Kept per session (expires and is deleted with the session's other keys), so an
        agent that takes over a redelivered turn can resume after what was already said.
        Raises ValueError on a bad argument, before touching the store.
        """

    @abc.abstractmethod
    async def noted_reply(self, session_id: str, turn_id: str) -> list[str]:
        """The noted sentences in seq order, contiguous from 0 (stops at the first gap);
        ``[]`` for a turn with nothing noted."""

    # -- counters shared by every session -------------------------------------------------

    @abc.abstractmethod
    async def count_in_window(
        self, name: str, window_s: float, *, event: str | None = None, limit: int | None = None
    ) -> WindowCount:
        """Count the events of counter ``name`` within the last ``window_s`` seconds, in
        one atomic step that first forgets older events and records ``event`` if given.

        An event id counts once (recording it again changes nothing, so a retried call
        never counts twice). With ``limit``, a new event is recorded only while fewer
        than ``limit`` are counted, so a caller reserves a slot and learns whether it got
        one in the same step, across processes: ``counted`` says whether ``event`` is
        now within the window. The counter belongs to no session (key
        ``{namespace}window:<name>``) and expires ``window_s`` after its newest event.
        Raises ValueError on a bad argument, before touching the store.
        """

    # -- housekeeping ----------------------------------------------------------------------

    @abc.abstractmethod
    async def key_ttls(self, session_id: str) -> dict[str, float]:
        """Seconds to live of each existing key of the session (for ops and tests)."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> None:
        """Remove every key of the session."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
