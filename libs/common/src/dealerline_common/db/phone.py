"""Phone numbers as the database stores them: E.164 (``+14155550123``), validated.

Callers and staff say or type numbers in every format ("(415) 555-0123", "415.555.0123",
"+1 415 555 0123"); storing one canonical form is what makes a caller-ID lookup and the
``UNIQUE`` constraint on customers' phones mean anything.
"""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "US"

_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too few digits for a phone number",
    phonenumbers.ValidationResult.TOO_LONG: "too many digits for a phone number",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "the area code is missing",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong number of digits for a phone number",
}


class InvalidPhone(ValueError):
    """The text is not a valid phone number; the message says why, for the caller."""


def normalize_phone(raw: str, region: str = DEFAULT_REGION) -> str:
    """``raw`` in E.164, or :class:`InvalidPhone`.

    Numbers without a country code are read in ``region`` (US by default). Validity is
    phonenumbers' full check (length and number plan), not just "looks like digits".
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("no phone number given")
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {exc}") from None
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidPhone(_REASONS.get(reason, "wrong number of digits for a phone number"))
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone("not a valid phone number in any numbering plan")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def try_normalize_phone(raw: str | None, region: str = DEFAULT_REGION) -> str | None:
    """:func:`normalize_phone`, or None for a missing or invalid number (caller IDs such
    as "anonymous" or "+266696687" are common and must not break a call)."""
    if not raw:
        return None
    try:
        return normalize_phone(raw, region)
    except InvalidPhone:
        return None
