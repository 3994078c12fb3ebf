"""The seed file's schema: what a dealership YAML file (the demo: ``demo_dealership.yaml``)
may say, and loading it.

The file is validated as a whole before anything is written: unknown keys, a service
naming a bay that does not exist, an appointment for an unknown customer, an invalid
phone number… each fail with a :class:`SeedError` naming the file and the problem.
"""

from __future__ import annotations

import calendar
import datetime as _dt
from collections.abc import Callable, Iterable
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .models import DEFAULT_ASSISTANT_NAME
from .phone import normalize_phone

__all__ = [
    "DEMO_FILE",
    "WEEKDAY_NAMES",
    "AppointmentSpec",
    "BaySpec",
    "CustomerSpec",
    "DealershipSpec",
    "FaqSpec",
    "HolidaySpec",
    "OpenHoursSpec",
    "PriceSpec",
    "SeedError",
    "SeedFile",
    "ServiceSpec",
    "StaffSpec",
    "VehicleSpec",
    "load_seed_file",
    "validate_seed_data",
]

DEMO_FILE = Path(__file__).resolve().parent / "demo_dealership.yaml"

WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class SeedError(ValueError):
    """The seed file is invalid or cannot be applied; the message says where."""


def _wall_time(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 07:30 as the number 450: insist on a quoted "HH:MM".
    if isinstance(value, int | float):
        raise ValueError('write times as quoted "HH:MM" strings')
    return value


WallTime = Annotated[time, BeforeValidator(_wall_time)]


def _e164(value: Any) -> Any:
    return normalize_phone(str(value)) if value is not None else None


Phone = Annotated[str, BeforeValidator(_e164)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DealershipSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    timezone: str
    address: str | None = None
    phone: Phone | None = None
    service_desk_email: str | None = None
    assistant_name: str = Field(default=DEFAULT_ASSISTANT_NAME, min_length=1, max_length=60)
    persona: str | None = None
    voice: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("persona", "voice", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # A YAML block (persona: |) ends in a newline; an empty persona is no persona.
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name)") from None
        return value


class OpenHoursSpec(_Spec):
    open: WallTime
    close: WallTime

    @model_validator(mode="after")
    def _order(self) -> OpenHoursSpec:
        if self.open >= self.close:
            raise ValueError("open must be before close")
        return self


class HolidaySpec(_Spec):
    """A fixed date, a yearly date (month + day) or a yearly weekday rule (month +
    weekday + nth, where nth -1 is the last one of the month)."""

    name: str = Field(min_length=1, max_length=200)
    date: _dt.date | None = None  # `date` is also the field's name here
    month: int | None = Field(default=None, ge=1, le=12)
    day: int | None = Field(default=None, ge=1, le=31)
    weekday: Literal[WEEKDAY_NAMES] | None = None  # type: ignore[valid-type]
    nth: int | None = Field(default=None, ge=-1, le=5)

    @model_validator(mode="after")
    def _one_form(self) -> HolidaySpec:
        # dates() relies on these three shapes.
        fixed = self.date is not None and self.month is None
        yearly = self.date is None and self.month is not None and self.day is not None
        rule = (
            self.date is None
            and self.month is not None
            and self.day is None
            and self.weekday is not None
            and self.nth not in (None, 0)
        )
        if not (fixed or yearly or rule):
            raise ValueError(
                "give either date, or month + day, or month + weekday + nth (nth -1 = last)"
            )
        return self

    def dates(self, years: Iterable[int]) -> list[_dt.date]:
        """The holiday's dates in ``years`` (a fixed date: just that date)."""
        if self.date is not None:
            return [self.date]
        month = self.month or 1
        out = []
        for year in years:
            last = calendar.monthrange(year, month)[1]
            if self.day is not None:
                if self.day <= last:
                    out.append(date(year, month, self.day))
                continue
            target = WEEKDAY_NAMES.index(self.weekday or "monday")
            days = [date(year, month, d) for d in range(1, last + 1)]
            matching = [d for d in days if d.weekday() == target]
            nth = self.nth or 1
            index = nth - 1 if nth > 0 else nth
            if -len(matching) <= index < len(matching):
                out.append(matching[index])
        return out


class BaySpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    capacity: int = Field(default=1, ge=1)


class PriceSpec(_Spec):
    min: Decimal = Field(ge=0)
    max: Decimal = Field(ge=0)

    @field_validator("min", "max", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # 49.95 as a YAML float must become exactly 4995 cents.
        return Decimal(str(value)) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _order(self) -> PriceSpec:
        if self.max < self.min:
            raise ValueError("max price is below min price")
        return self

    @staticmethod
    def cents(amount: Decimal) -> int:
        cents = amount * 100
        if cents != cents.to_integral_value():
            raise ValueError(f"price {amount} has fractions of a cent")
        return int(cents)


class ServiceSpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = None
    duration_minutes: int = Field(gt=0, le=24 * 60)
    price: PriceSpec
    bays: list[str] = Field(min_length=1)
    active: bool = True


class StaffSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=50)
    phone: Phone
    email: str | None = None
    hunt_order: int = 100
    on_duty: bool = True


class FaqSpec(_Spec):
    question: str = Field(min_length=1, max_length=500)
    answer: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)


class VehicleSpec(_Spec):
    make: str = Field(min_length=1, max_length=60)
    model: str = Field(min_length=1, max_length=60)
    year: int | None = Field(default=None, ge=1900, le=2100)
    vin: str | None = Field(default=None, min_length=17, max_length=17)
    plate: str | None = None
    mileage: int | None = Field(default=None, ge=0)

    @field_validator("vin", "plate", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return str(value).upper() if value is not None else None


class CustomerSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    phone: Phone
    email: str | None = None
    vehicles: list[VehicleSpec] = Field(default_factory=list)


class AppointmentSpec(_Spec):
    key: str = Field(min_length=1, max_length=100)
    customer_phone: Phone
    vehicle_vin: str | None = None
    service: str
    days_from_today: int = Field(ge=1)
    time: WallTime
    bay: str | None = None  # None: the first bay that can do the service
    notes: str | None = None


class SeedFile(_Spec):
    dealership: DealershipSpec
    hours: dict[Literal[WEEKDAY_NAMES], OpenHoursSpec | Literal["closed"]]  # type: ignore[valid-type]
    holidays: list[HolidaySpec] = Field(default_factory=list)
    bays: list[BaySpec] = Field(default_factory=list)
    service_types: list[ServiceSpec] = Field(default_factory=list)
    staff: list[StaffSpec] = Field(default_factory=list)
    faq: list[FaqSpec] = Field(default_factory=list)
    customers: list[CustomerSpec] = Field(default_factory=list)
    appointments: list[AppointmentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> SeedFile:
        _unique("bays", [b.name for b in self.bays])
        _unique("service_types", [s.name for s in self.service_types])
        _unique("staff phones", [s.phone for s in self.staff])
        _unique("staff emails", [s.email.lower() for s in self.staff if s.email])
        _unique("faq questions", [f.question for f in self.faq])
        _unique("customer phones", [c.phone for c in self.customers])
        _unique("appointment keys", [a.key for a in self.appointments])
        vins = [v.vin for c in self.customers for v in c.vehicles if v.vin]
        _unique("VINs", vins)
        bays = {b.name for b in self.bays}
        services = {s.name: s for s in self.service_types}
        for s in self.service_types:
            unknown = sorted(set(s.bays) - bays)
            if unknown:
                raise ValueError(f"service {s.name!r} names unknown bay(s) {unknown}")
        phones = {c.phone: c for c in self.customers}
        for a in self.appointments:
            if a.customer_phone not in phones:
                raise ValueError(f"appointment {a.key!r}: no customer with that phone")
            if a.service not in services:
                raise ValueError(f"appointment {a.key!r}: unknown service {a.service!r}")
            if a.bay is not None and a.bay not in services[a.service].bays:
                raise ValueError(f"appointment {a.key!r}: bay {a.bay!r} cannot do {a.service!r}")
            own = {v.vin for v in phones[a.customer_phone].vehicles if v.vin}
            if a.vehicle_vin is not None and a.vehicle_vin.upper() not in own:
                raise ValueError(
                    f"appointment {a.key!r}: the customer has no vehicle with that VIN"
                )
        return self


def _unique(what: str, values: list[Any]) -> None:
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what}: {dupes}")


def load_seed_file(path: str | Path) -> SeedFile:
    """Parse and validate a seed file, or SeedError naming the file, the line and the
    problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"cannot read {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise SeedError(f"{path.name}: not valid YAML: {exc}") from None

    def where(loc: tuple[int | str, ...]) -> str:
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = _yaml_line(root, loc)
        return f"line {line}, {dotted}" if line else dotted

    return validate_seed_data(data, path.name, where)


def validate_seed_data(
    data: Any, source: str, where: Callable[[tuple[int | str, ...]], str]
) -> SeedFile:
    """``data`` (the parsed file) as a :class:`SeedFile`, or SeedError listing every
    problem, each placed by ``where`` (a path in the file → words a person can find)."""
    if not isinstance(data, dict):
        raise SeedError(f"{source}: expected a mapping with a `dealership:` section at the top")
    try:
        return SeedFile.model_validate(data)
    except ValidationError as exc:
        raise SeedError(f"{source}: {'; '.join(_problems(exc, where))}") from None


def _problems(exc: ValidationError, where: Callable[[tuple[int | str, ...]], str]) -> list[str]:
    """One line per problem; a union's member names (``literal['closed']``) are left out
    of the path, and "should be 'closed'" only shows when nothing else was wrong there."""
    found: list[tuple[tuple[int | str, ...], bool, str]] = []
    for e in exc.errors():
        tags = [p for p in e["loc"] if isinstance(p, str) and ("[" in p or "(" in p)]
        loc = tuple(p for p in e["loc"] if p not in tags)
        literal = any(t.startswith("literal[") for t in tags)
        found.append((loc, literal, e["msg"].removeprefix("Value error, ")))
    other = {loc for loc, literal, _msg in found if not literal}
    return [f"{where(loc)}: {msg}" for loc, literal, msg in found if not (literal and loc in other)]


def _yaml_line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The line (1-based) of the deepest node along ``loc`` in the composed YAML."""
    line = node.start_mark.line + 1 if node is not None and loc else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            node = node.value[key] if 0 <= key < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line
