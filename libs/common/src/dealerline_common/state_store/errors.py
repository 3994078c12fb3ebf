"""The errors the conversation state stores raise, and the internal lost-race signal."""

from __future__ import annotations

__all__ = ["LostRace", "StateConflictError", "StateStoreError", "StateStoreUnavailable"]


class StateStoreError(RuntimeError):
    """Base of every error the state stores raise (bad stored data included)."""


class StateConflictError(StateStoreError):
    """A write kept losing to concurrent writers after every retry."""


class StateStoreUnavailable(StateStoreError):
    """The backing store (Redis) could not be reached after bounded retries."""


class LostRace(Exception):
    """One optimistic attempt lost to a concurrent writer; a retry signal internal to the
    stores (callers only ever see :class:`StateConflictError`)."""
