"""The state store interface: an optimistic-locked document per session plus side keys
for background results, the read-mutate-write cycle that every store shares
(:meth:`StateStore.update`, lost races retried until a deadline: :mod:`.policy`), a reply
log per turn, and counters of events within a rolling window shared by every process
(:meth:`StateStore.count_in_window`)."""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from ..logs import get_logger
from ..state import BackgroundTask, ConversationState, Notification
from .errors import LostRace
from .keys import SessionKeys, check_id, check_namespace, check_session_id
from .policy import (
    DEFAULT_BACKOFF_S,
    DEFAULT_CONFLICT_DEADLINE_S,
    FIRST_CONFLICT_BACKOFF_S,
    RetryPolicy,
    until_won,
)

__all__ = [
    "DEFAULT_TTL_S",
    "Mutator",
    "StateStore",
    "WindowCount",
    "apply",
    "check_reply",
    "check_window",
    "contiguous_reply",
]

log = get_logger(__name__)

DEFAULT_TTL_S = 86400.0

Mutator = Callable[[ConversationState], None | Awaitable[None]]


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


async def apply(
    mutate: Mutator, current: ConversationState | None, session_id: str
) -> ConversationState:
    """``mutate`` (sync or async) applied to the stored state (or a new one), refusing a
    change of session id."""
    draft = current or ConversationState(session_id=session_id)
    result = mutate(draft)
    if inspect.isawaitable(result):
        await result
    if draft.session_id != session_id:
        raise ValueError(f"mutate changed session_id {session_id!r} -> {draft.session_id!r}")
    return draft


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
    ends without cleanup never leaks. A write that loses to a concurrent writer
    (:meth:`update` and the sync) re-reads and tries again for up to
    ``conflict_deadline_s``, waiting a random time of at most 2 ms, then 4 ms, ...
    up to ``backoff_s`` between attempts; ``retries``, if given, also caps the number of
    retries. The ``namespace`` prefixes every key and may not contain braces (a session's
    keys carry the session id as their Redis Cluster hash tag: :mod:`.keys`).
    """

    def __init__(
        self,
        *,
        namespace: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        retries: int | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        conflict_deadline_s: float = DEFAULT_CONFLICT_DEADLINE_S,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if retries is not None and retries < 0:
            raise ValueError(f"retries must be >= 0 or None, got {retries!r}")
        check_namespace(namespace)
        self.namespace = namespace
        self.ttl_s = float(ttl_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.conflicts = RetryPolicy(
            deadline_s=conflict_deadline_s,
            first_s=min(FIRST_CONFLICT_BACKOFF_S, backoff_s),
            cap_s=backoff_s,
            attempts=None if retries is None else 1 + retries,
        )

    def keys(self, session_id: str) -> SessionKeys:
        check_session_id(session_id)
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
        Creates the document if absent. Raises :class:`StateConflictError` once the store's
        ``conflict_deadline_s`` has passed (or ``1 + retries`` attempts, if given, here or
        to the store); an exception from ``mutate`` propagates, nothing written.
        """
        check_session_id(session_id)
        if retries is not None and retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        policy = self.conflicts if retries is None else self.conflicts.with_attempts(1 + retries)
        return await until_won(
            policy, session_id, "update it", lambda: self._update_once(session_id, mutate)
        )

    async def _update_once(self, session_id: str, mutate: Mutator) -> ConversationState:
        """One read-mutate-write attempt; raises :class:`LostRace` if another writer won."""
        current, version = await self.get_state_with_version(session_id)
        draft = await apply(mutate, current, session_id)
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
