"""The conversation state of one call (``ConversationState``).

One JSON document per session, versioned: the agent reads it at the start of a turn and
writes it back with optimistic locking (``state_store``); the escalation service writes
the human-call part the same way. Background results never touch this document directly:
they go to separate atomic keys (notifications, task records) that
``StateStore.sync_atomic_updates_to_state`` merges in at the start of the next turn.

The message history is kept in LangChain's plain-dict form (``messages_to_dict``) so this
module needs no LangChain import; the agent converts at its edge.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .conversation import notification_marker
from .messages import HumanCallStatus, StaffContact, now

__all__ = [
    "AppointmentInfo",
    "BackgroundTask",
    "BookingSlots",
    "ConversationState",
    "CustomerInfo",
    "EscalationInfo",
    "HumanCallStatus",
    "IdentityCheck",
    "Notification",
    "PendingCode",
    "TaskStatus",
    "VehicleInfo",
]


class _Model(BaseModel):
    # Unknown keys are ignored (not refused) so an older replica can still read a state
    # document written by a newer one during a rolling deploy.
    model_config = ConfigDict(extra="ignore")


class VehicleInfo(_Model):
    id: int | None = None
    make: str | None = None
    model: str | None = None
    year: int | None = None
    vin: str | None = None
    plate: str | None = None
    mileage: int | None = None

    def describe(self) -> str:
        parts = [str(self.year) if self.year else "", self.make or "", self.model or ""]
        return " ".join(p for p in parts if p) or "unknown vehicle"


class CustomerInfo(_Model):
    """The caller once identified (by caller ID, a lookup, or created during the call)."""

    id: int
    name: str | None = None
    phone: str | None = None  # E.164
    email: str | None = None
    vehicles: list[VehicleInfo] = Field(default_factory=list)
    returning: bool = False  # known before this call


class BookingSlots(_Model):
    """A service booking being put together, slot by slot."""

    service: str | None = None  # service type name
    date: str | None = None  # YYYY-MM-DD in the dealership's timezone
    time: str | None = None  # HH:MM (24 h) in the dealership's timezone
    vehicle_id: int | None = None
    vehicle: str | None = None  # how the caller described it, until it is in the DB
    notes: str | None = None
    reschedule_appointment_id: int | None = None  # set when moving an existing booking

    def filled(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v not in (None, "")}

    def missing(self) -> list[str]:
        needed = ["service", "date", "time"]
        if self.vehicle_id is None and not self.vehicle:
            needed.append("vehicle")
        return [k for k in needed if getattr(self, k) in (None, "")]

    def is_empty(self) -> bool:
        return not self.filled()


class AppointmentInfo(_Model):
    id: int
    service: str
    start: datetime  # aware, dealership timezone
    end: datetime
    status: str = "booked"
    vehicle: str | None = None
    bay: str | None = None


class PendingCode(_Model):
    """A one-time code texted to a customer's number on file: only its salted hash is kept
    (never the digits), with its deadline and the tries left."""

    customer_id: int
    salt: str  # hex
    digest: str  # hex, PBKDF2-HMAC-SHA256 of the code with ``salt``
    expires_at: float  # epoch seconds
    attempts_left: int


class IdentityCheck(_Model):
    """Whether the caller proved to be the customer on the state (per call: a new call is
    a new session). ``verified_customer_id`` counts only while it is ``customer.id``."""

    verified_customer_id: int | None = None
    method: Literal["caller_id_and_fact", "texted_code", "created_this_call"] | None = None
    fact_failures: int = 0
    codes_sent: int = 0
    code: PendingCode | None = None


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BackgroundTask(_Model):
    """Work started by a tool that finishes later (an escalation)."""

    task_id: str
    kind: str  # "escalation", ...
    status: TaskStatus = TaskStatus.PENDING
    detail: str | None = None
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)
    result: dict[str, Any] | None = None


class Notification(_Model):
    """A background result for the agent, delivered into the conversation exactly once.

    ``kind`` examples: ``human_available`` (data: name), ``escalation_returned``
    (data: reason), ``escalation_failed`` (data: reason).
    """

    id: str
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    at: float = Field(default_factory=now)

    def marker(self) -> str:
        """How the agent sees it: ``[NOTIFICATION:<kind>:<value>]``."""
        value = next(iter(self.data.values()), "") if self.data else ""
        return notification_marker(self.kind, str(value))


class EscalationInfo(_Model):
    """The human leg of the call, as the escalation service last recorded it."""

    task_id: str | None = None
    reason: str | None = None
    status: HumanCallStatus = HumanCallStatus.NONE
    detail: str | None = None
    staff_name: str | None = None
    human_call_sid: str | None = None
    conference: str | None = None
    attempts: int = 0
    # The escalation service's hunt list as it last left it, so a replica that resumes the
    # escalation keeps the order staff changed from the dashboard: ``ringing`` is who the
    # current attempt rings, ``hunt`` who is still to be rung, in order (claims, passes and
    # duty changes applied). None until the first attempt (then: the request's list).
    ringing: StaffContact | None = None
    hunt: list[StaffContact] | None = None
    updated_at: float = Field(default_factory=now)


class ConversationState(_Model):
    session_id: str
    version: int = 0  # bumped by every successful write; the optimistic-lock token
    interface: Literal["voice", "text"] = "voice"
    call_sid: str | None = None
    caller_phone: str | None = None  # E.164 caller ID (never logged in full)
    customer: CustomerInfo | None = None
    identity: IdentityCheck = Field(default_factory=IdentityCheck)
    booking_slots: BookingSlots = Field(default_factory=BookingSlots)
    confirmed_appointment: AppointmentInfo | None = None
    escalation_in_progress: bool = False
    escalation: EscalationInfo = Field(default_factory=EscalationInfo)
    pending_tasks: list[BackgroundTask] = Field(default_factory=list)
    delivered_notifications: list[str] = Field(default_factory=list)
    pending_notifications: list[Notification] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)  # messages_to_dict form
    end_requested: bool = False
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)

    @property
    def human_call_status(self) -> HumanCallStatus:
        return self.escalation.status

    @property
    def verified(self) -> bool:
        """The caller proved to be ``customer`` (see :class:`IdentityCheck`)."""
        c = self.customer
        return c is not None and self.identity.verified_customer_id == c.id

    def task(self, task_id: str) -> BackgroundTask | None:
        return next((t for t in self.pending_tasks if t.task_id == task_id), None)
