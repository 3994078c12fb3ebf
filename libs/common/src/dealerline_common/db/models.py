"""The dealership database: SQLAlchemy 2 declarative models.

One database serves one dealership (the agent, the dashboard and the seed loader all read
it). Rules every table follows:

- points in time are :class:`~dealerline_common.db.types.UTCDateTime` (stored UTC, read
  back aware); wall-clock concepts (opening hours, holidays) are ``Time``/``Date`` in the
  dealership's timezone, which the profile names;
- money is integer cents;
- phone numbers are E.164, normalised by :func:`~dealerline_common.db.phone.normalize_phone`
  before they reach a row (the validators below refuse anything else);
- constraint names follow :data:`NAMING_CONVENTION`, so the hand-written migrations and
  these models name everything the same way on both databases.

The migrations in ``migrations/versions`` are written out by hand and must match these
models; ``test_db_migrations.py`` compares them with Alembic's autogenerate diff.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from .phone import normalize_phone
from .types import UTCDateTime

__all__ = [
    "DEFAULT_ASSISTANT_NAME",
    "NAMING_CONVENTION",
    "Appointment",
    "AppointmentStatus",
    "Base",
    "Call",
    "Customer",
    "DealershipProfile",
    "FaqEntry",
    "Holiday",
    "OpeningHours",
    "ServiceBay",
    "ServiceType",
    "Staff",
    "TranscriptTurn",
    "Vehicle",
    "service_type_bays",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Server-side defaults (created_at, ids) come back with the INSERT/UPDATE (RETURNING),
    # so reading them later never needs lazy IO, which async sessions cannot do.
    __mapper_args__ = {"eager_defaults": True}


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, server_default=func.now())


def _updated() -> Mapped[datetime]:
    return mapped_column(
        UTCDateTime(), nullable=False, server_default=func.now(), onupdate=func.now()
    )


DEFAULT_ASSISTANT_NAME = "Ava"


class DealershipProfile(Base):
    """The dealership itself (one row)."""

    __tablename__ = "dealership"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    address: Mapped[str | None] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(20))
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name, e.g. America/Los_Angeles
    service_desk_email: Mapped[str | None] = mapped_column(String(320))
    # The receptionist callers talk to: her name ("This is Ava"), a short persona the
    # prompt adds (tone, style), and the Kokoro voice id she speaks with (None: the TTS
    # service's default voice).
    assistant_name: Mapped[str] = mapped_column(
        String(60), default=DEFAULT_ASSISTANT_NAME, server_default=DEFAULT_ASSISTANT_NAME
    )
    persona: Mapped[str | None] = mapped_column(Text)
    voice: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    @validates("phone")
    def _phone(self, _key: str, value: str | None) -> str | None:
        return normalize_phone(value) if value else None


class OpeningHours(Base):
    """Regular hours for one weekday (0 = Monday … 6 = Sunday), dealership local time."""

    __tablename__ = "opening_hours"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        CheckConstraint(
            "closed OR (opens_at IS NOT NULL AND closes_at IS NOT NULL AND opens_at < closes_at)",
            name="open_before_close",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    weekday: Mapped[int] = mapped_column(Integer, unique=True)
    opens_at: Mapped[time | None] = mapped_column(Time())
    closes_at: Mapped[time | None] = mapped_column(Time())
    closed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Holiday(Base):
    """A date the dealership is closed all day."""

    __tablename__ = "holidays"

    id: Mapped[int] = mapped_column(primary_key=True)
    date: Mapped[date] = mapped_column(Date, unique=True)
    name: Mapped[str] = mapped_column(String(200))


service_type_bays = Table(
    "service_type_bays",
    Base.metadata,
    Column(
        "service_type_id",
        ForeignKey("service_types.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("bay_id", ForeignKey("service_bays.id", ondelete="CASCADE"), primary_key=True),
)


class ServiceBay(Base):
    """A workshop bay; ``capacity`` jobs can run in it at once (usually 1)."""

    __tablename__ = "service_bays"
    __table_args__ = (CheckConstraint("capacity >= 1", name="capacity_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    capacity: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    service_types: Mapped[list[ServiceType]] = relationship(
        secondary=service_type_bays, back_populates="bays"
    )


class ServiceType(Base):
    """Something the service department does, how long it takes and what it costs."""

    __tablename__ = "service_types"
    __table_args__ = (
        CheckConstraint("duration_minutes > 0", name="duration_positive"),
        CheckConstraint(
            "price_min_cents >= 0 AND price_max_cents >= price_min_cents", name="price_range"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    duration_minutes: Mapped[int] = mapped_column(Integer)
    price_min_cents: Mapped[int] = mapped_column(Integer)
    price_max_cents: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    bays: Mapped[list[ServiceBay]] = relationship(
        secondary=service_type_bays, back_populates="service_types", order_by="ServiceBay.id"
    )


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)  # E.164
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    vehicles: Mapped[list[Vehicle]] = relationship(
        back_populates="customer", order_by="Vehicle.id", cascade="all, delete-orphan"
    )

    @validates("phone")
    def _phone(self, _key: str, value: str | None) -> str | None:
        return normalize_phone(value) if value else None


class Vehicle(Base):
    __tablename__ = "vehicles"
    __table_args__ = (
        CheckConstraint("mileage IS NULL OR mileage >= 0", name="mileage_positive"),
        Index(None, "customer_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    make: Mapped[str] = mapped_column(String(60))
    model: Mapped[str] = mapped_column(String(60))
    year: Mapped[int | None] = mapped_column(Integer)
    vin: Mapped[str | None] = mapped_column(String(17), unique=True)
    plate: Mapped[str | None] = mapped_column(String(20))
    mileage: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    customer: Mapped[Customer] = relationship(back_populates="vehicles")

    def describe(self) -> str:
        return " ".join(str(p) for p in (self.year, self.make, self.model) if p)


class AppointmentStatus(enum.StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


class Appointment(Base):
    """A booked slot in a bay. Only ``booked`` rows take bay capacity.

    ``idempotency_key`` makes a booking request safe to repeat (a retried tool call, a
    turn replayed after a barge-in): the same key returns the row it created. A cancelled
    appointment gives its key up, so the same booking can be made again later.
    ``vehicle_description`` keeps the caller's words when the car is not in the database.
    """

    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="end_after_start"),
        Index(None, "bay_id", "start_at"),
        Index(None, "customer_id", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id", ondelete="SET NULL"))
    vehicle_description: Mapped[str | None] = mapped_column(String(200))
    service_type_id: Mapped[int] = mapped_column(
        ForeignKey("service_types.id", ondelete="RESTRICT")
    )
    bay_id: Mapped[int] = mapped_column(ForeignKey("service_bays.id", ondelete="RESTRICT"))
    status: Mapped[AppointmentStatus] = mapped_column(
        Enum(
            AppointmentStatus,
            name="appointment_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda e: [m.value for m in e],
            validate_strings=True,
        ),
        default=AppointmentStatus.BOOKED,
        server_default=AppointmentStatus.BOOKED.value,
    )
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    notes: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    customer: Mapped[Customer] = relationship()
    vehicle: Mapped[Vehicle | None] = relationship()
    service_type: Mapped[ServiceType] = relationship()
    bay: Mapped[ServiceBay] = relationship()


class FaqEntry(Base):
    """A question callers ask, its answer, and keywords that help the search find it."""

    __tablename__ = "faq_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    question: Mapped[str] = mapped_column(String(500), unique=True)
    answer: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)


class Staff(Base):
    """A person the agent can hand a call to (on duty, rung in ``hunt_order``)."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20), unique=True)  # E.164
    role: Mapped[str] = mapped_column(String(50))  # "sales", "service", "manager", ...
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    hunt_order: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))  # dashboard login
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    @validates("phone")
    def _phone(self, _key: str, value: str) -> str:
        return normalize_phone(value)


class Call(Base):
    """One phone call (one session), for the call log and the dashboard."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), unique=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    caller_phone: Mapped[str | None] = mapped_column(String(20))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(50))  # see CallOutcome
    summary: Mapped[str | None] = mapped_column(Text)
    # The after-call record (written by the aftercall service from the bus and the state
    # store; ``recorded_at`` is set once the record is complete).
    end_reason: Mapped[str | None] = mapped_column(String(50))  # hangup, end_call, stream_lost
    duration_s: Mapped[float | None] = mapped_column(Float)
    customer_name: Mapped[str | None] = mapped_column(String(200))
    barge_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    latency: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # per turn
    escalation: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # timeline
    appointments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # changes
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    turns: Mapped[list[TranscriptTurn]] = relationship(
        back_populates="call",
        order_by=lambda: [TranscriptTurn.at, TranscriptTurn.id],
        cascade="all, delete-orphan",
    )


class TranscriptTurn(Base):
    """One thing said on a call. ``(call_id, turn_id, role)`` is unique so a redelivered
    turn is recorded once."""

    __tablename__ = "transcript_turns"
    __table_args__ = (
        UniqueConstraint("call_id", "turn_id", "role"),
        Index(None, "call_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))  # "caller", "agent", "human", "system"
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    turn_id: Mapped[str | None] = mapped_column(String(100))
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    call: Mapped[Call] = relationship(back_populates="turns")


class CallOutcome(enum.StrEnum):
    """What a call came to, most significant first (a call that booked and then asked a
    question is ``booked``)."""

    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"  # a person took the call (connected)
    ESCALATION_FAILED = "escalation_failed"
    CALLBACK_REQUESTED = "callback_requested"
    ANSWERED = "answered"  # questions answered, nothing booked
    ABANDONED = "abandoned"  # the caller left before anything was done


class CallbackStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class CallbackRequest(Base):
    """A caller asked to be called back (the agent's ``request_callback`` tool); sales
    staff see it on the dashboard and mark it done."""

    __tablename__ = "callback_requests"
    __table_args__ = (Index(None, "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    preferred_window: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(  # a CallbackStatus value
        String(20), default=CallbackStatus.OPEN.value, server_default=CallbackStatus.OPEN.value
    )
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # claimed by a sender, outcome not known yet
    SENT = "sent"
    DEAD = "dead"  # the last retry failed (the dead-letter record)


class Delivery(Base):
    """One email or text, keyed by its idempotency key: a redelivered job whose key is
    ``sent`` sends nothing; ``dead`` is the dead-letter record after the last retry."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(10))  # "email", "sms"
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(  # a DeliveryStatus value
        String(20),
        default=DeliveryStatus.PENDING.value,
        server_default=DeliveryStatus.PENDING.value,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(200))  # Message-ID / message SID
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


def row_dict(row: Base, *exclude: str) -> dict[str, Any]:
    """A row's column values (for the seed loader's change detection)."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in exclude}
