"""Read-only values the repository hands out (plain data, detached from any session)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

from dealerline_common.db.models import DEFAULT_ASSISTANT_NAME
from dealerline_common.state import AppointmentInfo

__all__ = [
    "Booking",
    "CallbackRequestInfo",
    "DayHours",
    "FaqHit",
    "Profile",
    "ServiceInfo",
    "WeekdayHours",
    "dollars",
]

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def dollars(cents: int) -> str:
    """``4995`` → ``$49.95``; whole amounts without cents (``$120``)."""
    whole, rest = divmod(cents, 100)
    return f"${whole:,}" if rest == 0 else f"${whole:,}.{rest:02d}"


def clock_text(t: time) -> str:
    """``13:30`` → ``1:30 PM`` (how a receptionist says it)."""
    hour = t.hour % 12 or 12
    return f"{hour}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


@dataclass(frozen=True)
class Profile:
    """The dealership's profile row: who callers reach and who answers them."""

    name: str
    timezone: str
    address: str | None = None
    phone: str | None = None
    service_desk_email: str | None = None
    assistant_name: str = DEFAULT_ASSISTANT_NAME
    persona: str | None = None
    voice: str | None = None  # a Kokoro voice id; None: the TTS service's default


@dataclass(frozen=True)
class WeekdayHours:
    weekday: int  # 0 = Monday
    opens: time | None
    closes: time | None

    @property
    def closed(self) -> bool:
        return self.opens is None or self.closes is None

    def describe(self) -> str:
        name = WEEKDAYS[self.weekday]
        if self.closed or self.opens is None or self.closes is None:
            return f"{name}: closed"
        return f"{name}: {clock_text(self.opens)} to {clock_text(self.closes)}"


@dataclass(frozen=True)
class DayHours:
    """The hours of one calendar day, holidays taken into account."""

    day: date
    opens: time | None
    closes: time | None
    holiday: str | None = None

    @property
    def closed(self) -> bool:
        return self.opens is None or self.closes is None

    def describe(self) -> str:
        label = f"{WEEKDAYS[self.day.weekday()]} {self.day.isoformat()}"
        if self.holiday:
            return f"{label}: closed ({self.holiday})"
        if self.closed or self.opens is None or self.closes is None:
            return f"{label}: closed"
        return f"{label}: open {clock_text(self.opens)} to {clock_text(self.closes)}"


@dataclass(frozen=True)
class ServiceInfo:
    id: int
    name: str
    description: str | None
    duration_minutes: int
    price_min_cents: int
    price_max_cents: int
    bays: tuple[str, ...]

    def price_text(self) -> str:
        if self.price_min_cents == self.price_max_cents:
            return dollars(self.price_min_cents)
        return f"{dollars(self.price_min_cents)}-{dollars(self.price_max_cents)}"


@dataclass(frozen=True)
class FaqHit:
    id: int
    question: str
    answer: str
    score: float


@dataclass(frozen=True)
class CallbackRequestInfo:
    """The result of :meth:`Callbacks.request_callback`: ``created`` is False when the
    idempotency key matched a request written before (a replayed turn)."""

    id: int
    session_id: str
    preferred_window: str
    reason: str
    name: str | None
    phone: str | None
    created: bool


@dataclass(frozen=True)
class Booking:
    """The result of :meth:`Appointments.book`: ``created`` is False when the idempotency
    key matched an appointment booked before (a repeated request)."""

    appointment: AppointmentInfo
    created: bool
