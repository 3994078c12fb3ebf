"""The repository's refusals: each message is safe to read to the LLM (it never names
another customer or their details)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

__all__ = [
    "Conflict",
    "DealershipError",
    "InvalidInput",
    "NotAllowed",
    "NotFound",
    "SlotUnavailable",
    "aware",
]


class DealershipError(Exception):
    """A request the repository refuses; ``str(error)`` is safe to show the LLM."""


class NotFound(DealershipError):
    pass


class Conflict(DealershipError):
    """The change clashes with data already there (a phone or VIN on file)."""


class NotAllowed(DealershipError):
    """Not this customer's record, or not in a state that allows the change."""


class InvalidInput(DealershipError):
    pass


class SlotUnavailable(DealershipError):
    """The time cannot be booked; ``alternatives`` are the nearest free starts."""

    def __init__(self, message: str, alternatives: Sequence[datetime] = ()) -> None:
        super().__init__(message)
        self.alternatives = list(alternatives)


def aware(value: datetime) -> datetime:
    """``value`` itself, or InvalidInput when it has no timezone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"time {value.isoformat()} has no timezone")
    return value
