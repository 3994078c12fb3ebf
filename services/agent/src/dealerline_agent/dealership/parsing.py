"""Dates and times as the LLM passes them to tools.

The tools ask for ``YYYY-MM-DD`` and ``HH:MM`` (24 h), but a model under a voice-latency
budget sometimes passes the caller's words instead ("tomorrow", "next Tuesday", "2:30 pm").
Accepting the common forms here is cheaper and more reliable than an extra LLM round trip
to fix the format; anything else is refused with the format to use.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

__all__ = ["parse_date", "parse_time", "say_date", "say_time", "say_when"]

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH_FORMATS = ("%B %d", "%b %d", "%d %B", "%d %b", "%m/%d")
_ORDINAL = re.compile(r"(\d+)(st|nd|rd|th)\b")
_TIME = re.compile(r"^(\d{1,2})(?:[:.h]?(\d{2}))?\s*(a|p)?\.?\s*(m\.?)?$")


def parse_date(text: str, today: date) -> date:
    """``text`` as a calendar date (relative words are read against ``today``).

    Accepts ``2026-03-05``, ``today``, ``tomorrow``, ``day after tomorrow``, weekday names
    (``friday``, ``this friday``, ``next friday``: the next one after today), and month-day
    forms (``March 5``, ``5th of March``, ``3/5``: this year, or next year once passed).
    """
    raw = " ".join((text or "").lower().replace(",", " ").split())
    if not raw:
        raise ValueError("no date given; use YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        pass
    relative = {"today": 0, "tomorrow": 1, "day after tomorrow": 2, "the day after tomorrow": 2}
    if raw in relative:
        return today + timedelta(days=relative[raw])
    words = raw.split()
    if (
        words
        and words[-1] in _WEEKDAYS
        and len(words) <= 2
        and words[0]
        in (
            words[-1],
            "this",
            "next",
            "on",
            "coming",
        )
    ):
        ahead = (_WEEKDAYS.index(words[-1]) - today.weekday()) % 7
        return today + timedelta(days=ahead or 7)
    cleaned = _ORDINAL.sub(r"\1", raw).replace(" of ", " ")
    for fmt in _MONTH_FORMATS:
        try:
            parsed = datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
        try:
            candidate = parsed.replace(year=today.year)
        except ValueError:  # 29 February in a year without one
            continue
        return candidate if candidate >= today else candidate.replace(year=today.year + 1)
    raise ValueError(f"cannot read the date {text!r}; use YYYY-MM-DD")


def parse_time(text: str) -> time:
    """``text`` as a wall-clock time: ``14:30``, ``2:30 pm``, ``2pm``, ``9``, ``noon``.

    Without am/pm, hours 1-6 are afternoon (a workshop is not open at 3 a.m., and callers
    say "at 3" for 15:00).
    """
    raw = (text or "").strip().lower()
    if raw in ("noon", "midday", "12 noon"):
        return time(12, 0)
    match = _TIME.match(raw.replace(" ", "") if raw.count(" ") <= 1 else raw)
    if not match:
        raise ValueError(f"cannot read the time {text!r}; use HH:MM (24 h)")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    half = match.group(3)
    if minute > 59:
        raise ValueError(f"{text!r} is not a time of day")
    if half:
        if not 1 <= hour <= 12:
            raise ValueError(f"{text!r} is not a time of day")
        hour = hour % 12 + (12 if half == "p" else 0)
    elif 1 <= hour <= 6:
        hour += 12
    if hour > 23:
        raise ValueError(f"{text!r} is not a time of day")
    return time(hour, minute)


def say_time(t: time | datetime) -> str:
    """``13:30`` → ``1:30 PM``."""
    hour = t.hour % 12 or 12
    return f"{hour}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


def say_date(d: date | datetime) -> str:
    """``2026-03-05`` → ``Thursday, March 5``."""
    return f"{d:%A}, {d:%B} {d.day}"


def say_when(moment: datetime) -> str:
    """An aware local datetime → ``Thursday, March 5 at 9:00 AM``."""
    return f"{say_date(moment)} at {say_time(moment)}"
