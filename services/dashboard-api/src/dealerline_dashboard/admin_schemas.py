"""The admin API's bodies (managers edit the dealership): what each table accepts and
answers. Input models refuse bad values with a 422 whose message names the field and the
problem (a phone number that is not one, a timezone that does not exist, a closing time
before the opening time); checks that need the database (an unknown bay, a name already
taken, a row still referenced) are in :mod:`.admin_store`.

A ``…In`` model is a whole new row (POST); a ``…Patch`` model changes only the fields it
names (PATCH); ``null`` clears an optional field."""

from __future__ import annotations

import datetime as dt
import re
from datetime import time
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from dealerline_common.db.phone import normalize_phone

from .schemas import Role

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# A Kokoro voice id: a language and gender prefix, then the name ("af_heart", "jf_alpha").
_VOICE = re.compile(r"^[a-z]{2}_[a-z0-9_]{1,60}$")
# Enough to catch a typo (no @, spaces, no domain); whether it is delivered is SMTP's job.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _text(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


def _phone(value: str) -> str:
    return normalize_phone(value)  # InvalidPhone is a ValueError: its reason is the message


def _email(value: str) -> str:
    address = value.strip().lower()
    if not _EMAIL.match(address):
        raise ValueError(f"{value!r} is not an email address (name@example.com)")
    return address


def _timezone(value: str) -> str:
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a timezone; use an IANA name such as America/Los_Angeles"
        ) from None
    return name


def _voice(value: str) -> str:
    voice = value.strip()
    if not _VOICE.match(voice):
        raise ValueError(
            f"{value!r} is not a Kokoro voice id (two letters, an underscore and a name, "
            "e.g. af_heart); leave it empty for the TTS default"
        )
    return voice


def _tags(value: list[str]) -> list[str]:
    out: list[str] = []
    for tag in value:
        t = tag.strip().lower()
        if t and t not in out:
            out.append(t)
    return out


Text = Annotated[str, AfterValidator(_text)]
Phone = Annotated[str, AfterValidator(_phone)]
Email = Annotated[str, AfterValidator(_email)]
Timezone = Annotated[str, AfterValidator(_timezone)]
Voice = Annotated[str, AfterValidator(_voice)]
Tags = Annotated[list[Annotated[str, Field(max_length=50)]], AfterValidator(_tags)]
Cents = Annotated[int, Field(ge=0, le=100_000_000)]
Minutes = Annotated[int, Field(ge=1, le=24 * 60)]
HuntOrder = Annotated[int, Field(ge=0, le=10_000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Optional fields an emptied input clears: ``""`` is read as ``null``.
    blank_is_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _blank_is_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: (None if k in cls.blank_is_null and v == "" else v) for k, v in data.items()}
        return data


# ---------------------------------------------------------------------- profile


class ProfileOut(BaseModel):
    name: str
    address: str | None
    phone: str | None
    timezone: str
    service_desk_email: str | None
    assistant_name: str
    persona: str | None
    voice: str | None = Field(description="Kokoro voice id; null: the TTS default")


class ProfilePatch(_In):
    name: Annotated[Text, Field(max_length=200)] | None = None
    address: Annotated[str, Field(max_length=500)] | None = None
    phone: Phone | None = None
    timezone: Timezone | None = None
    service_desk_email: Email | None = None
    assistant_name: Annotated[Text, Field(max_length=60)] | None = None
    persona: Annotated[str, Field(max_length=2000)] | None = None
    voice: Voice | None = None

    blank_is_null = ("address", "phone", "service_desk_email", "persona", "voice")


# ---------------------------------------------------------------------- hours


class HoursOut(BaseModel):
    weekday: int = Field(description="0 = Monday … 6 = Sunday")
    day: str
    closed: bool
    opens_at: str | None = Field(description='"HH:MM", dealership time')
    closes_at: str | None


class HoursIn(_In):
    closed: bool = False
    opens_at: time | None = None
    closes_at: time | None = None

    @model_validator(mode="after")
    def _open_before_close(self) -> HoursIn:
        if self.closed:
            self.opens_at = self.closes_at = None
            return self
        if self.opens_at is None or self.closes_at is None:
            raise ValueError("an open day needs both opens_at and closes_at (or closed: true)")
        if self.opens_at >= self.closes_at:
            raise ValueError(
                f"closes_at ({self.closes_at:%H:%M}) must be after opens_at "
                f"({self.opens_at:%H:%M}); one day has one opening, which cannot overlap itself"
            )
        return self


# ---------------------------------------------------------------------- holidays


class HolidayOut(BaseModel):
    id: int
    date: dt.date
    name: str


class HolidayIn(_In):
    date: dt.date
    name: Annotated[Text, Field(max_length=200)]


class HolidayPatch(_In):
    date: dt.date | None = None
    name: Annotated[Text, Field(max_length=200)] | None = None


# ---------------------------------------------------------------------- bays


class BayOut(BaseModel):
    id: int
    name: str
    capacity: int
    services: list[str] = Field(description="the services that can be done in it")


class BayIn(_In):
    name: Annotated[Text, Field(max_length=100)]
    capacity: int = Field(default=1, ge=1, le=100)


class BayPatch(_In):
    name: Annotated[Text, Field(max_length=100)] | None = None
    capacity: int | None = Field(default=None, ge=1, le=100)


# ---------------------------------------------------------------------- services


class ServiceOut(BaseModel):
    id: int
    name: str
    description: str | None
    duration_minutes: int
    price_min_cents: int
    price_max_cents: int
    active: bool = Field(description="false: kept for history, callers cannot book it")
    bay_ids: list[int]


class ServiceIn(_In):
    blank_is_null = ("description",)

    name: Annotated[Text, Field(max_length=100)]
    description: Annotated[str, Field(max_length=2000)] | None = None
    duration_minutes: Minutes
    price_min_cents: Cents
    price_max_cents: Cents | None = Field(default=None, description="default: price_min_cents")
    active: bool = True
    bay_ids: list[int] = Field(min_length=1, description="the bays it can be done in")


class ServicePatch(_In):
    blank_is_null = ("description",)

    name: Annotated[Text, Field(max_length=100)] | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    duration_minutes: Minutes | None = None
    price_min_cents: Cents | None = None
    price_max_cents: Cents | None = None
    active: bool | None = None
    bay_ids: list[int] | None = Field(default=None, min_length=1)


# ---------------------------------------------------------------------- staff


class AdminStaffOut(BaseModel):
    id: int
    name: str
    phone: str
    role: str
    email: str | None
    on_duty: bool
    hunt_order: int
    has_login: bool = Field(description="a dashboard password is set (set-password)")


class AdminStaffIn(_In):
    blank_is_null = ("email",)

    name: Annotated[Text, Field(max_length=200)]
    phone: Phone
    role: Role
    email: Email | None = None
    on_duty: bool = True
    hunt_order: HuntOrder = 100


class AdminStaffPatch(_In):
    blank_is_null = ("email",)

    name: Annotated[Text, Field(max_length=200)] | None = None
    phone: Phone | None = None
    role: Role | None = None
    email: Email | None = None
    on_duty: bool | None = None
    hunt_order: HuntOrder | None = None
    has_login: Literal[False] | None = Field(
        default=None, description="false removes their dashboard password (a new one: set-password)"
    )


# ---------------------------------------------------------------------- FAQ


class FaqOut(BaseModel):
    id: int
    question: str
    answer: str
    tags: list[str]


class FaqIn(_In):
    question: Annotated[Text, Field(max_length=500)]
    answer: Annotated[Text, Field(max_length=5000)]
    tags: Tags = Field(default_factory=list, max_length=30)


class FaqPatch(_In):
    question: Annotated[Text, Field(max_length=500)] | None = None
    answer: Annotated[Text, Field(max_length=5000)] | None = None
    tags: Annotated[Tags, Field(max_length=30)] | None = None
