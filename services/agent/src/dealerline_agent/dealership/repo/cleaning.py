"""Checking and normalising what a caller gives before it is stored: names, phone
numbers, email addresses and vehicle details. A refusal is an :class:`InvalidInput`
that says what to ask the caller."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from dealerline_common.db.phone import InvalidPhone, normalize_phone

from ..vin import InvalidVin, validate_vin
from .errors import InvalidInput

__all__ = ["clean_email", "clean_name", "clean_phone", "vehicle_fields"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


def clean_name(name: str) -> str:
    clean = " ".join((name or "").split())
    if not clean:
        raise InvalidInput("the customer's name is missing; ask for it")
    if len(clean) > 200:
        raise InvalidInput("that name is too long")
    return clean


def clean_phone(phone: str | None) -> str | None:
    """The number in E.164, or None when none was given."""
    if phone is None or not phone.strip():
        return None
    try:
        return normalize_phone(phone)
    except InvalidPhone as exc:
        raise InvalidInput(f"that phone number is not valid ({exc}); ask for it again") from None


def clean_email(email: str | None) -> str | None:
    if email is None or not email.strip():
        return None
    clean = "".join(email.split()).lower()
    if not _EMAIL.match(clean) or len(clean) > 320:
        raise InvalidInput("that email address is not valid; ask the caller to spell it")
    return clean


def vehicle_fields(
    make: str | None,
    model: str | None,
    year: int | None,
    vin: str | None,
    plate: str | None,
    mileage: int | None,
) -> dict[str, object]:
    """The given (non-None) vehicle fields, validated and normalised."""
    fields: dict[str, object] = {}
    for key, value in (("make", make), ("model", model)):
        if value is not None and value.strip():
            clean = " ".join(value.split())
            if len(clean) > 60:
                raise InvalidInput(f"that {key} is too long")
            fields[key] = clean
    if year is not None:
        latest = datetime.now(UTC).year + 2
        if not 1900 <= year <= latest:
            raise InvalidInput(f"model year {year} is not plausible (1900-{latest})")
        fields["year"] = year
    if vin is not None and vin.strip():
        try:
            fields["vin"] = validate_vin(vin)
        except InvalidVin as exc:
            raise InvalidInput(f"invalid VIN: {exc}") from None
    if plate is not None and plate.strip():
        clean_plate = "".join(plate.split()).upper()
        if len(clean_plate) > 20:
            raise InvalidInput("that plate number is too long")
        fields["plate"] = clean_plate
    if mileage is not None:
        if not 0 <= mileage <= 2_000_000:
            raise InvalidInput(f"mileage {mileage} is not plausible")
        fields["mileage"] = mileage
    return fields
