"""Vehicle identification numbers: 17 characters, no I/O/Q, North American check digit.

Callers read VINs aloud and speech-to-text mangles them (O for 0, spaces, dashes), so
:func:`validate_vin` first strips separators and upper-cases, then checks the structure
and the check digit (position 9, 49 CFR 565.15), and says exactly what is wrong so the
agent can ask the caller for the right characters.
"""

from __future__ import annotations

import re

__all__ = ["InvalidVin", "check_digit", "validate_vin"]

_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_SEPARATORS = re.compile(r"[\s\-.]")


class InvalidVin(ValueError):
    """Not a valid VIN; the message says why (length, a forbidden letter, the check digit)."""


def check_digit(vin: str) -> str:
    """The check digit ('0'-'9' or 'X') that position 9 of ``vin`` must hold."""
    total = sum(_TRANSLITERATION[ch] * w for ch, w in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def validate_vin(vin: str) -> str:
    """``vin`` normalised (upper case, no spaces or dashes), or :class:`InvalidVin`."""
    text = _SEPARATORS.sub("", vin or "").upper()
    if not text:
        raise InvalidVin("no VIN given")
    if len(text) != 17:
        raise InvalidVin(f"a VIN has 17 characters, this one has {len(text)}")
    forbidden = sorted({ch for ch in text if ch in "IOQ"})
    if forbidden:
        raise InvalidVin(
            f"a VIN never contains the letters I, O or Q (found {', '.join(forbidden)}); "
            "they are usually the digits 1 and 0"
        )
    bad = sorted({ch for ch in text if ch not in _TRANSLITERATION})
    if bad:
        raise InvalidVin(f"a VIN has only letters and digits (found {' '.join(bad)!r})")
    expected = check_digit(text)
    if text[8] != expected:
        raise InvalidVin(
            f"the check digit (9th character) is {text[8]} but should be {expected}: "
            "one of the characters was probably misheard"
        )
    return text
