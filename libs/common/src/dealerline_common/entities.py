"""Does the caller's running transcript hold the whole answer the agent asked for?

The gateway's end-of-turn decision asks this while the caller pauses: a phone number cut
at seven digits, a VIN at twelve characters or "Tuesday at" is not an answer yet, so the
turn waits (bounded); "555-123-4567" or "Tuesday at nine" is, so the turn ends at once.
Pure: no I/O, no clock. The transcripts are Whisper tiny.en's (see
:mod:`dealerline_common.spoken` for the spoken forms read).

- :func:`judge`: ``"complete"``, ``"incomplete"`` (started, or promised: "sure, it's"),
  or ``"absent"`` (the caller said something else).
- :func:`volunteered`: the entity the caller announces unasked ("my number is").
- :func:`trails_off`: the words stop on a filler or an unfinished phrase.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from .entity_words import (
    COMMON_TLDS,
    DANGLING,
    DATE_DANGLING,
    DAY_WORDS,
    DECLINE,
    MILEAGE_DANGLING,
    MILES,
    MONTH_SPANS,
    MONTHS,
    NO,
    NOT_PHONE,
    NUMBER_LEADS,
    NUMBER_TAILS,
    NUMBERED,
    OPENERS,
    PHONE_GLUE,
    PLATE_CUES,
    QUESTION_DANGLING,
    RELATIVE,
    STALL,
    WEEKDAYS,
    YES,
)
from .speculation import Expects
from .spoken import (
    CODE_GLUE,
    FILLERS,
    CodeRun,
    Tok,
    clean,
    code_runs,
    lex,
    normalize_spoken,
    tokens,
)

__all__ = [
    "Completeness",
    "declines",
    "ends_on_number",
    "judge",
    "normalize_spoken",
    "phone_complete",
    "phone_digits",
    "recent",
    "trails_off",
    "vin_candidate",
    "vin_check_digit_ok",
    "volunteered",
]

Completeness = Literal["complete", "incomplete", "absent"]


# Only the end of a long transcript is read: the answer is what was said last, and the
# time a judgement takes stays bounded (about 25 s of speech).
MAX_CHARS = 500


def recent(text: str) -> str:
    """The last :data:`MAX_CHARS` characters of ``text``, from a word boundary."""
    if len(text) <= MAX_CHARS:
        return text
    tail = text[-MAX_CHARS:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < 40 else tail


def judge(expects: Expects, text: str) -> Completeness:
    """Whether ``text`` (the caller's words so far) holds a complete ``expects``."""
    return _JUDGES[expects](recent(text))


def trails_off(text: str) -> bool:
    """The words stop mid-phrase: on a filler ("um"), a conjunction, article, possessive
    or a few prepositions ("and", "the", "my", "to"), "it's", a dangling comma or colon
    ("so,"), a cut word ("Tues-") or Whisper's "..." for cut speech. "That's it.",
    "Nope." and "Tuesday." do not."""
    text = clean(recent(text)).rstrip()
    if not text:
        return False
    if text.endswith(("...", ",", ";", ":", "-", "—")):
        return True
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)*", text.lower())
    if not words:
        return False
    last = words[-1]
    if last in FILLERS or (len(words) == 1 and last in OPENERS):
        return True
    return last in (QUESTION_DANGLING if text.endswith("?") else DANGLING)


# -- cues: what the caller says an entity is ---------------------------------------------

_IS = r"(?:'s| is| was| will be| should be|:)"
# Each cue announces a value: "my number is", "call me at", "the VIN is".
_CUES: tuple[tuple[Expects, re.Pattern[str]], ...] = (
    ("phone", re.compile(rf"\b(\w+) (?:(?:phone|cell|mobile) )?(?:number|phone|cell){_IS}")),
    ("phone", re.compile(r"\b(?:call|reach|text) me(?: back)? at\b")),
    ("vin", re.compile(rf"\b(?:vin|v i n|vehicle identification)(?: number)?{_IS}")),
    ("plate", re.compile(rf"\b(?:plate|plates|tag|registration)(?: number)?{_IS}")),
    ("email", re.compile(rf"\b(?:email|e mail)(?: address)?{_IS}")),
    ("email", re.compile(r"\b(?:email|e mail) me at\b")),
    ("name", re.compile(rf"\b(?:my|the) (?:first |last |full )?name{_IS}|\bname's\b")),
    ("mileage", re.compile(rf"\b(?:mileage|odometer)(?: reading)?(?:{_IS}| reads| says)")),
    ("mileage", re.compile(r"\bmiles on (?:it|the)\b")),
)


def _cues(text: str) -> list[tuple[int, Expects]]:
    low = " ".join(re.findall(r"[a-z]+(?:'[a-z]+)*|:", clean(text).lower()))
    found: list[tuple[int, Expects]] = []
    for kind, pattern in _CUES:
        for m in pattern.finditer(low):
            if m.groups() and m.group(1) in NOT_PHONE:
                continue
            found.append((m.end(), kind))
    return sorted(found)


def volunteered(text: str) -> Expects | None:
    """The entity ``text`` announces, unasked: "my number is …" → ``"phone"``, "the VIN
    is …" → ``"vin"``, "plate", "my email", "my name is", "mileage"; the last one said.
    Digits read like a phone number ("813-227", seven or more) are a phone number too."""
    text = recent(text)
    cues = _cues(text)
    if cues:
        return cues[-1][1]
    return "phone" if _phone_shaped(tokens(text)) else None


def _phone_shaped(toks: Sequence[Tok]) -> bool:
    for digits, first, last in _digit_runs(toks):
        groups = [_num_digits(t) for t in toks[first : last + 1] if _phone_num(t)]
        if len(digits) >= 7 or (len(groups) >= 2 and all(len(g) >= 3 for g in groups)):
            return True
    return False


def ends_on_number(text: str) -> bool:
    """The words stop on a bare number ("We're over at 200.", "It's 1245."): a number
    being read out, an address or a list may go on. A question does not."""
    text = clean(recent(text)).rstrip()
    if text.endswith("?"):
        return False
    toks = tokens(text)
    last = _last_word_index(toks)
    if last < 0 or toks[last].kind != "num" or toks[last].suffix or toks[last].raw == "one":
        return False  # "the blue one" is a word, not a number read out
    return last == 0 or toks[last - 1].text not in NUMBERED


def _cued(kind: Expects, text: str) -> bool:
    return any(k == kind for _, k in _cues(text))


def _stalling(text: str) -> bool:
    """Only agreement and "hold on" so far: the answer is promised, not given."""
    words = [t.text for t in lex(text) if t.kind == "word"]
    only_stall = bool(words) and all(w in STALL or w in FILLERS for w in words)
    return only_stall or _holding(text)


_HOLD = re.compile(
    r"\b(?:hold on|hang on|let me (?:check|see|look|think|find|get|grab|pull)|bear with me"
    r"|(?:one|a|just a|give me a) (?:sec|second|moment|minute)|wait a)\b"
)


def _holding(text: str) -> bool:
    """The words end asking to wait: "Hmm, let me check.", "Okay, one second..."."""
    low = clean(text).lower()
    ends = [m.end() for m in _HOLD.finditer(low)]
    return bool(ends) and not re.search(r"[a-z0-9]", low[ends[-1] :])


def declines(text: str) -> bool:
    """The caller says no or that they cannot ("I don't know", "I'd rather not")."""
    return any(t.text in DECLINE for t in lex(recent(text)) if t.kind == "word")


def _not_given(kind: Expects, text: str) -> Completeness:
    """No value in ``text``: promised (a cue, "sure, it's") is incomplete, else absent."""
    return "incomplete" if _cued(kind, text) or _stalling(text) else "absent"


def _last_word_index(toks: Sequence[Tok]) -> int:
    """The index of the last token that is not punctuation (-1 if none)."""
    for i in range(len(toks) - 1, -1, -1):
        if toks[i].kind not in ("punct", "ell"):
            return i
    return -1


def _dangles_after(toks: Sequence[Tok], last: int, text: str) -> bool:
    """Words after the value (index ``last``) leave the phrase unfinished: "…4567 and"."""
    return _last_word_index(toks) > last and trails_off(text)


# -- phone --------------------------------------------------------------------------------


def _digit_runs(toks: Sequence[Tok]) -> list[tuple[str, int, int]]:
    """Runs of digits (numbers, "oh", "double five") across separators, fillers and
    "area code": (digits, first index, last index)."""
    runs: list[tuple[str, int, int]] = []
    i = 0
    while i < len(toks):
        if not _phone_num(toks[i]):
            i += 1
            continue
        first = last = i
        digits = _num_digits(toks[i])
        j = i + 1
        while j < len(toks):
            tok = toks[j]
            if _phone_num(tok):
                digits += _num_digits(tok)
                last = j
            elif not _phone_glue(tok):
                break
            j += 1
        runs.append((digits, first, last))
        i = last + 1
    return runs


def _phone_glue(tok: Tok) -> bool:
    if tok.kind == "punct":
        return tok.text in ("-", ",", ".", "(", ")", "/")
    return tok.kind == "ell" or (tok.kind == "word" and tok.text in PHONE_GLUE)


def _phone_num(tok: Tok) -> bool:
    """A number, or digits Whisper ran into a letter ("469F")."""
    if tok.kind == "code":
        digits = sum(c.isdigit() for c in tok.text)
        return digits >= 2 and len(tok.text) - digits <= 1
    return tok.kind == "num" and not tok.suffix


def _num_digits(tok: Tok) -> str:
    return "".join(c for c in tok.text if c.isdigit())


def _longest(runs: Sequence[tuple[str, int, int]]) -> tuple[str, int, int] | None:
    best: tuple[str, int, int] | None = None
    for run in runs:
        if best is None or len(run[0]) >= len(best[0]):
            best = run
    return best


def phone_digits(text: str) -> str:
    """The digits of the longest number said in ``text`` (the last of equals), "" if
    none: "five five five, one two three" → "555123"."""
    run = _longest(_digit_runs(tokens(text)))
    return run[0] if run else ""


def phone_complete(digits: str) -> bool:
    """A whole North American number: 10 digits whose area code does not start with 0 or
    1, optionally after the country code 1 (anything said after it is not judged)."""
    if len(digits) >= 11 and digits[0] == "1":
        digits = digits[1:]
    return len(digits) >= 10 and digits[0] not in "01"


def _judge_phone(text: str) -> Completeness:
    toks = tokens(text)
    run = _longest(_digit_runs(toks))
    if run is None:
        return _not_given("phone", text)
    digits, _, last = run
    if not phone_complete(digits) or _dangles_after(toks, last, text):
        return "incomplete"
    return "complete"


# -- VIN and plate ------------------------------------------------------------------------

_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN_MISHEARD = str.maketrans({"O": "0", "Q": "0", "I": "1"})  # never in a VIN


def vin_check_digit_ok(vin: str) -> bool:
    """ISO 3779 / 49 CFR 565: the 9th character is the weighted sum mod 11 ("X" for 10)."""
    vin = vin.upper()
    if len(vin) != 17 or any(c not in _VIN_VALUES for c in vin):
        return False
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    check = total % 11
    return vin[8] == ("X" if check == 10 else str(check))


def _longest_code(toks: Sequence[Tok]) -> CodeRun | None:
    best: CodeRun | None = None
    for run in code_runs(toks):
        if best is None or len(run.chars) >= len(best.chars):
            best = run
    return best


def vin_candidate(text: str) -> str | None:
    """The longest spelled code in ``text``, read as a VIN (O and Q as 0, I as 1)."""
    run = _longest_code(tokens(text))
    return run.chars.translate(_VIN_MISHEARD) if run else None


def _judge_vin(text: str) -> Completeness:
    toks = tokens(text)
    run = _longest_code(toks)
    if run is None:
        return _not_given("vin", text)
    chars = run.chars.translate(_VIN_MISHEARD)
    windows = (chars[i : i + 17] for i in range(max(len(chars) - 16, 0)))
    if not any(vin_check_digit_ok(w) for w in windows):
        return "incomplete"  # short, or misheard: wait (bounded) for the rest
    return "incomplete" if _dangles_after(toks, run.last, text) else "complete"


# Plates run 5 to 8 characters (most US plates 6 or 7); a shorter run is read as a plate
# cut at a pause ("seven K L M | two one four"): the turn waits, bounded.
PLATE_MIN, PLATE_MAX = 5, 8


def _judge_plate(text: str) -> Completeness:
    toks = tokens(text)
    runs = code_runs(toks)
    cue_at = [i for i, t in enumerate(toks) if t.kind == "word" and t.text in PLATE_CUES]
    end = _last_word_index(toks)
    candidates = [
        run
        for run in runs
        if (cue_at and cue_at[0] < run.first)
        or run.last == end
        or _whole_answer(toks, run, len(runs))
    ]
    if not candidates:
        return _not_given("plate", text)
    run = candidates[-1]
    if not PLATE_MIN <= len(run.chars) <= PLATE_MAX or _last_word_index(toks) != run.last:
        return "incomplete"
    return "incomplete" if trails_off(text) else "complete"


def _whole_answer(toks: Sequence[Tok], run: CodeRun, count: int) -> bool:
    """``run`` is all the caller said, apart from "yeah, it's", "um" or "and"."""
    outside = [*toks[: run.first], *toks[run.last + 1 :]]
    words = [t.text for t in outside if t.kind not in ("punct", "ell")]
    return count == 1 and all(w in STALL or w in CODE_GLUE or w in DANGLING for w in words)


# -- date and time ------------------------------------------------------------------------


def _date_elements(toks: Sequence[Tok]) -> tuple[int, bool]:
    """How many date/time elements ``toks`` hold, and whether the last token is a month
    waiting for its day ("March" → "March 3rd")."""
    count, month_open = 0, False
    alone = _only_numbers(toks)
    for i, tok in enumerate(toks):
        prev = toks[i - 1].text if i else ""
        if tok.kind == "word" and tok.text in MONTHS:
            month_open = prev not in MONTH_SPANS
            count += prev in MONTH_SPANS
            continue
        numeric = tok.kind in ("num", "ord") and _date_number(toks, i, month_open or alone)
        if tok.kind == "time" or numeric or _date_word(tok, prev):
            count += 1
        month_open = month_open and tok.kind in ("punct", "ell")
    return count, month_open


def _only_numbers(toks: Sequence[Tok]) -> bool:
    """The answer is a bare number ("Ten.", "At 9."): a time."""
    words = [t for t in toks if t.kind not in ("punct", "ell")]
    return bool(words) and all(
        t.kind in ("num", "ord") or t.text in STALL or t.text in NUMBER_LEADS for t in words
    )


def _date_word(tok: Tok, prev: str) -> bool:
    if tok.kind != "word":
        return False
    if tok.text in WEEKDAYS or tok.text in DAY_WORDS:
        return True
    if tok.text in ("am", "pm"):
        return prev.isdigit()
    return tok.text in RELATIVE and prev in ("next", "this", "following", "a", "couple")


def _date_number(toks: Sequence[Tok], i: int, lead: bool) -> bool:
    """``toks[i]`` (a number) is a day or a time: an ordinal up to 31, a year, a number
    after a month, "at"/"around"/a weekday, before "am"/"pm"/"days", or next to another
    number ("nine thirty", "9.30")."""
    tok = toks[i]
    value = tok.value if tok.value is not None else -1
    if tok.kind == "ord":
        return 1 <= value <= 31
    if 1900 <= value <= 2100:
        return True
    if value > 60:
        return False
    prev = toks[i - 1] if i else None
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if nxt is not None and nxt.text == "." and i + 2 < len(toks) and not toks[i + 2].spaced:
        nxt = toks[i + 2]  # "9.30"
    return (
        lead
        or (prev is not None and (prev.text in NUMBER_LEADS or prev.kind == "num"))
        or (nxt is not None and (nxt.text in NUMBER_TAILS or nxt.kind == "num"))
    )


def _judge_datetime(text: str) -> Completeness:
    toks = tokens(text)
    count, month_open = _date_elements(toks)
    last = _last_word_index(toks)
    dangling = month_open or (last >= 0 and toks[last].text in DATE_DANGLING)
    if count == 0:
        return "incomplete" if dangling or trails_off(text) or _stalling(text) else "absent"
    return "incomplete" if dangling or trails_off(text) or _holding(text) else "complete"


# -- mileage ------------------------------------------------------------------------------


def _judge_mileage(text: str) -> Completeness:
    toks = tokens(text)
    nums = [i for i, t in enumerate(toks) if t.kind == "num" and t.value is not None]
    if not nums:
        last = _last_word_index(toks)
        if last >= 0 and toks[last].text in MILEAGE_DANGLING:
            return "incomplete"  # "about", "it says"
        return _not_given("mileage", text)
    with_unit = [i for i in nums if toks[i].suffix or _next_word(toks, i) in MILES]
    i = with_unit[-1] if with_unit else nums[-1]
    tok = toks[i]
    value = (tok.value or 0) * (1000 if tok.suffix == "k" else 1)
    if value < 10 or trails_off(text):
        return "incomplete"
    if value < 1000 and not with_unit and _last_word_index(toks) == i:
        return "incomplete"  # "forty" may go on: "forty thousand"
    return "complete"


def _next_word(toks: Sequence[Tok], i: int) -> str:
    return toks[i + 1].text if i + 1 < len(toks) and toks[i + 1].kind == "word" else ""


# -- name ---------------------------------------------------------------------------------

_NAME_LEADS = re.compile(
    r"\b(?:my (?:first |last |full )?name(?:'s| is)|the name(?:'s| is)|name's|it's|it is"
    r"|this is|i'm|i am|you can call me|call me|hi|hello|hey|speaking|yeah|yes|sure|okay"
    r"|ok|um|uh|so|well)\b"
)


def _judge_name(text: str) -> Completeness:
    low = " ".join(t.raw.lower() for t in lex(text) if t.kind in ("word", "code", "num"))
    rest = [w for w in _NAME_LEADS.sub(" ", low).split() if w not in FILLERS and w not in STALL]
    if not rest:
        return (
            "incomplete" if low.strip() and (_cued("name", text) or _stalling(text)) else "absent"
        )
    return "incomplete" if trails_off(text) else "complete"


# -- email --------------------------------------------------------------------------------


def _email_parts(toks: Sequence[Tok]) -> list[str]:
    """The tokens as email pieces: "@" for "at", "." for "dot" and an unspaced ".",
    an address written with "@" split into its pieces, other words as they are."""
    parts: list[str] = []
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if tok.kind == "email":
            parts.extend(p for p in re.split(r"([@.])", tok.text) if p)
        elif (tok.kind == "word" and tok.text == "at") or tok.text == "@":
            parts.append("@")
        elif _email_dot(tok, nxt):
            parts.append(".")
        elif tok.kind in ("word", "code", "num"):
            parts.append(tok.text.lower())
        elif tok.kind == "ell":
            parts.append("...")
    return parts


def _email_dot(tok: Tok, nxt: Tok | None) -> bool:
    """ "dot", or a "." written inside a word ("gmail.com"), not a sentence's full stop."""
    if tok.kind == "word":
        return tok.text in ("dot", "period", "point")
    return tok.text == "." and nxt is not None and not nxt.spaced and nxt.kind != "ell"


def _judge_email(text: str) -> Completeness:
    parts = _email_parts(tokens(text))
    if "@" not in parts[1:]:
        words = [p for p in parts if p not in STALL and p not in FILLERS and p.isalnum()]
        declined = any(p in NO for p in parts)
        started = "." in parts or (bool(words) and not declined)
        return "incomplete" if started else _not_given("email", text)
    domain = parts[len(parts) - parts[::-1].index("@") :]
    cut = domain[-1] == "..." if domain else False
    while domain and domain[-1] == "...":
        domain.pop()
    tld = _tld(domain)
    if tld is None or (cut and tld not in COMMON_TLDS):
        return "incomplete"
    return "incomplete" if trails_off(text) and not cut else "complete"


def _tld(domain: list[str]) -> str | None:
    """The top-level domain of "gmail . com" (the label after the last dot; None when
    the domain has no dot yet or ends on one); words after it may follow."""
    if "." not in domain:
        return None
    last_dot = len(domain) - 1 - domain[::-1].index(".")
    if last_dot == 0 or last_dot + 1 >= len(domain):
        return None
    tld = domain[last_dot + 1]
    return tld if re.fullmatch(r"[a-z]{2,24}", tld) else None


# -- yes / no -----------------------------------------------------------------------------


def _judge_yes_no(text: str) -> Completeness:
    words = [t.text for t in lex(text) if t.kind == "word"]
    if any(w in YES or w in NO for w in words):
        return "incomplete" if trails_off(text) or _holding(text) else "complete"
    return "incomplete" if _stalling(text) or trails_off(text) else "absent"


_JUDGES: dict[Expects, Callable[[str], Completeness]] = {
    "phone": _judge_phone,
    "vin": _judge_vin,
    "plate": _judge_plate,
    "datetime": _judge_datetime,
    "mileage": _judge_mileage,
    "name": _judge_name,
    "email": _judge_email,
    "yes_no": _judge_yes_no,
}
