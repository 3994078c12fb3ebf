"""Phone numbers withheld from staff whose role does not see them, everywhere: every string
of a REST response or socket frame is free text that may hold a number, except the few
structural fields (ids, timestamps, enum codes) that never do.

Numbers in free text are found three ways, in this order, each masked like :func:`mask_phone`
(``+1*******123``: the country digit and the last three kept):

- the ``phonenumbers`` library's :class:`PhoneNumberMatcher` (region US, leniency
  ``POSSIBLE``): every written form it knows, ``(415) 555-0123``, ``+1 415.555.0123``;
- spoken and transcribed digit runs (``four one five five five five zero one two three``,
  ``415, 555, 0123``, ``double five``): seven or more digits said one after another;
- the logs' loose pattern (:func:`mask_text`), a backstop for runs the library rejects.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import phonenumbers

from dealerline_common.logs import mask_phone, mask_text
from dealerline_common.spoken import REPEAT, UNITS, ZERO_WORDS

REGION = "US"
MIN_DIGITS = 7  # a local US number; fewer is a price, a year or a time

# Strings that are never free text: masking them would only break ids and times.
STRUCTURAL_KEYS = frozenset(
    {
        "session_id",
        "call_sid",
        "stream_sid",
        "task_id",
        "turn_id",
        "type",
        "start",
        "end",
        "status",
        "role",
        "state",
        "human_status",
        "outcome",
        "end_reason",
        "token_type",
        "access_token",
    }
)

# The digit words as libs/common reads spoken numbers ("oh" and "o" as zero, "niner").
_WORD_DIGITS = {w: str(n) for w, n in UNITS.items()} | dict.fromkeys(ZERO_WORDS, "0")
_REPEAT_WORDS = "|".join(REPEAT)
_DIGIT_WORD = "|".join(sorted(_WORD_DIGITS, key=len, reverse=True))
_ITEM = rf"(?:\d+|(?:(?:{_REPEAT_WORDS})[\s-]+)?(?:{_DIGIT_WORD}))"
# Digit groups and digit words one after another, split by spaces, commas, dots or dashes.
_SPOKEN_RUN = re.compile(rf"\b{_ITEM}(?:[\s,.-]+{_ITEM})+\b", re.IGNORECASE)
_ITEM_RE = re.compile(rf"({_REPEAT_WORDS})?[\s-]*({_DIGIT_WORD}|\d+)", re.IGNORECASE)


def _run_digits(run: str) -> str:
    out = []
    for m in _ITEM_RE.finditer(run):
        repeat, item = m.group(1), m.group(2).lower()
        digits = _WORD_DIGITS.get(item, item)
        out.append(digits * (REPEAT[repeat.lower()] if repeat else 1))
    return "".join(out)


def _mask_spoken(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        digits = _run_digits(m.group(0))
        return mask_phone(digits) if len(digits) >= MIN_DIGITS else m.group(0)

    return _SPOKEN_RUN.sub(one, text)


def _mask_matched(text: str) -> str:
    leniency = phonenumbers.Leniency.POSSIBLE
    found = list(phonenumbers.PhoneNumberMatcher(text, REGION, leniency=leniency))
    for match in reversed(found):  # from the end: earlier offsets stay right
        text = text[: match.start] + mask_phone(match.raw_string) + text[match.end :]
    return text


def mask_free_text(text: str, keep: Collection[str] = ()) -> str:
    """``text`` with every phone number in it masked (those in ``keep`` left whole)."""
    if text in keep or not any(c.isdigit() for c in text) and not _SPOKEN_RUN.search(text):
        return text
    return mask_text(_mask_spoken(_mask_matched(text)))


def mask_all(value: Any, keep: Collection[str] = (), key: str | None = None) -> Any:
    """``value`` (decoded JSON) with every phone number in every string masked, but the
    structural fields'; strings equal to one of ``keep`` (the viewer's own number) stay."""
    if isinstance(value, dict):
        return {k: mask_all(v, keep, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_all(v, keep, key) for v in value]
    if isinstance(value, str) and key not in STRUCTURAL_KEYS:
        return mask_free_text(value, keep)
    return value


def has_digits(text: str) -> bool:
    """Whether a search query holds digits, written or spoken ("five five five")."""
    return any(c.isdigit() for c in text) or _SPOKEN_RUN.search(text) is not None
