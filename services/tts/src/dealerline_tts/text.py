"""Modest text normalisation so espeak/Kokoro read a receptionist's sentences well.

espeak already reads plain numbers, ordinals ("3rd"), "%" and most abbreviations; what it
gets wrong is money ("$49.95" → "dollar forty nine. ninety five"), clock times
("9:30" → "nine colon thirty"), phone numbers (read as hundreds and thousands) and the
markdown and emoji an LLM sometimes emits.
"""

from __future__ import annotations

import re
import unicodedata

_MARKDOWN = re.compile(r"[*_`#~]+|^\s*[-•]\s+", re.MULTILINE)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_MONEY = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\b")
_PHONE = re.compile(r"(?<![\d-])(?:\+?1[\s.-]?)?\(?(\d{3})\)?[\s.-]?(\d{3})[\s.-](\d{4})(?![\d-])")
# "a.m." / "AM" / "am"; the dotted form's last dot may also end the sentence.
_MERIDIEM = r"(?:\s*([AaPp])(?:\.\s?[Mm](\.)?|[Mm]\b))"
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})(?!\d)" + _MERIDIEM + "?")
_AMPM = re.compile(r"\b(\d{1,2})" + _MERIDIEM)
_RANGE_DASH = re.compile(r"(?<=[\dM])\s*[–—]\s*(?=\d)")
_SPACES = re.compile(r"\s+")


def _money(m: re.Match[str]) -> str:
    dollars = int(m.group(1).replace(",", ""))
    cents = int((m.group(2) or "0").ljust(2, "0"))
    parts = []
    if dollars or not cents:
        parts.append(f"{dollars} dollar{'' if dollars == 1 else 's'}")
    if cents:
        parts.append(f"{cents} cent{'' if cents == 1 else 's'}")
    return " and ".join(parts)


def _digits(group: str) -> str:
    return " ".join(group)


def _phone(m: re.Match[str]) -> str:
    return ", ".join(_digits(g) for g in m.groups())


def _meridiem(m: re.Match[str], letter: str | None, dot: str | None) -> str:
    if not letter:
        return ""
    spoken = " AM" if letter.lower() == "a" else " PM"
    rest = m.string[m.end() :]
    # "at 10 a.m. tomorrow" has no full stop; "at 10 a.m." or "a.m. Then" has one.
    if dot and re.match(r"\s*$|\s+[A-Z]", rest):
        spoken += "."
    return spoken


def _time(m: re.Match[str]) -> str:
    hour, minute, letter, dot = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if minute == 0:
        spoken = f"{hour}" if letter else f"{hour} o'clock"
    elif minute < 10:
        spoken = f"{hour} oh {minute}"
    else:
        spoken = f"{hour} {minute}"
    return spoken + _meridiem(m, letter, dot)


def _ampm(m: re.Match[str]) -> str:
    return m.group(1) + _meridiem(m, m.group(2), m.group(3))


def _drop_symbols(text: str) -> str:
    # espeak reads emoji by name ("slightly smiling face"); a receptionist would not.
    return "".join(
        ch for ch in text if unicodedata.category(ch) not in ("So", "Sk", "Cs", "Co", "Cn")
    )


def normalize_text(text: str) -> str:
    """Rewrite ``text`` into words Kokoro pronounces the way a person would say them."""
    text = _drop_symbols(text)
    text = _LINK.sub(r"\1", text)
    text = _MARKDOWN.sub(" ", text)
    text = _MONEY.sub(_money, text)
    text = _PHONE.sub(_phone, text)
    text = _TIME.sub(_time, text)
    text = _AMPM.sub(_ampm, text)
    text = _RANGE_DASH.sub(" to ", text)
    text = text.replace("&", " and ").replace("24/7", "24 7")
    return _SPACES.sub(" ", text).strip()
