"""Spoken words as a phone transcript writes them, read into tokens: digits and number
words folded into numbers, letters and NATO words recognised, Whisper's punctuation kept
where it means something (a trailing ``...`` is cut speech). Pure: no I/O, no clock.

The transcripts come from Whisper tiny.en on 8 kHz phone audio, so one spoken phone
number can arrive as ``555-123-4567``, ``555, 123, 45``, ``5,551,234,567`` or ``five five
five, one two three``; ``oh`` and ``double five`` and ``fifty five`` are digits too, and a
VIN arrives as ``J H M``, ``j-h-m``, ``JHM`` or ``Juliet Hotel Mike``.
:mod:`dealerline_common.entities` judges entities on these tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

Kind = Literal["word", "num", "ord", "time", "email", "code", "ell", "punct"]


@dataclass(frozen=True)
class Tok:
    """One token. ``text`` is lower case for words; for ``num`` it is the digit string
    (leading zeros kept: "oh five" is ``05``), for ``code`` the upper-case characters."""

    kind: Kind
    text: str
    raw: str = ""  # as written (case kept): "JHM" (letters) vs "the"
    spaced: bool = True  # whitespace (or the start) before it: "gmail.com" has none
    value: int | None = None  # num / ord: the number; time: minutes after midnight
    spoken: bool = False  # num / ord read from words ("fifty five"), not digits
    suffix: str = ""  # num: "k" ("60k"); punct: the mark itself


UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "niner": 9,
}
TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
}
ZERO_WORDS = frozenset({"oh", "o"})  # zero only next to other digits ("five oh five")
REPEAT = {"double": 2, "triple": 3}
NATO = {
    "alpha": "A",
    "alfa": "A",
    "bravo": "B",
    "charlie": "C",
    "delta": "D",
    "echo": "E",
    "foxtrot": "F",
    "golf": "G",
    "hotel": "H",
    "india": "I",
    "juliet": "J",
    "juliett": "J",
    "kilo": "K",
    "lima": "L",
    "mike": "M",
    "november": "N",
    "oscar": "O",
    "papa": "P",
    "quebec": "Q",
    "romeo": "R",
    "sierra": "S",
    "tango": "T",
    "uniform": "U",
    "victor": "V",
    "whiskey": "W",
    "whisky": "W",
    "xray": "X",
    "yankee": "Y",
    "zulu": "Z",
}
FILLERS = frozenset({"um", "umm", "uh", "uhh", "er", "erm", "ah", "hmm", "hm", "mm", "mmm"})
# Words said between the characters of a spelled code that are not part of it.
CODE_GLUE = frozenset({"dash", "hyphen", "space", "then", "and"}) | FILLERS
# All-caps words Whisper writes that are words, not spelled letters.
CAPS_WORDS = frozenset(
    {"ok", "vin", "am", "pm", "usa", "id", "dmv", "tv", "suv", "i", "a", "no", "yes"}
    | {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "hmm", "mm", "shh", "tsk", "nth"}
)

_TOKEN = re.compile(
    r"""
    (?P<email>[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*)
  | (?P<time>\d{1,2}:\d{2})
  | (?P<ord>\d{1,2}(?:st|nd|rd|th))\b
  | (?P<k>\d+(?:,\d{3})*k)\b
  | (?P<ampm>\d{1,4}(?=[ap]m\b))
  | (?P<code>(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9]+)
  | (?P<num>\d{1,3}(?:,\d{3})+(?![\d,]\d)|\d+)
  | (?P<word>[a-z]+(?:['’][a-z]+)*)
  | (?P<ell>\.{2,}|…)
  | (?P<punct>[.,;:!?@/()-])
    """,
    re.VERBOSE | re.IGNORECASE,
)
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([a-z ]*\)|\*[a-z ]+\*", re.IGNORECASE)
_AMPM = re.compile(r"\b([ap])\.\s?m\b\.?", re.IGNORECASE)
_PREFIXES = (
    (re.compile(r"\be-mail\b", re.IGNORECASE), "email"),
    (re.compile(r"\bx-ray\b", re.IGNORECASE), "xray"),
    (re.compile(r"\buh-huh\b", re.IGNORECASE), "uhhuh"),
    (re.compile(r"\bmm-hmm\b", re.IGNORECASE), "mhm"),
)


def lex(text: str) -> list[Tok]:
    """Raw tokens of ``text`` (no number words folded yet)."""
    text = clean(text)
    out: list[Tok] = []
    end = 0
    for m in _TOKEN.finditer(text):
        spaced = m.start() == 0 or m.start() > end or text[m.start() - 1].isspace()
        out.append(_tok(m, spaced))
        end = m.end()
    return out


def clean(text: str) -> str:
    """``text`` without Whisper's annotations ("[BLANK_AUDIO]", "(coughs)"), with
    "a.m."/"p.m." as "am"/"pm" and a few hyphenated words joined ("e-mail")."""
    text = _ANNOTATION.sub(" ", text.replace("…", "...").replace("’", "'")).strip()
    text = _AMPM.sub(lambda m: f"{m.group(1).lower()}m", text)
    for pattern, repl in _PREFIXES:
        text = pattern.sub(repl, text)
    return text


def _tok(m: re.Match[str], spaced: bool) -> Tok:
    tok = _tok_of(m)
    return tok if spaced else replace(tok, spaced=False)


def _tok_of(m: re.Match[str]) -> Tok:
    kind, raw = m.lastgroup, m.group()
    if kind == "email":
        return Tok("email", raw.lower(), raw)
    if kind == "time":
        hours, minutes = raw.split(":")
        return Tok("time", raw, raw, value=int(hours) * 60 + int(minutes))
    if kind == "ord":
        return Tok("ord", raw[:-2], raw, value=int(raw[:-2]))
    if kind == "k":
        digits = raw[:-1].replace(",", "")
        return Tok("num", digits, raw, value=int(digits), suffix="k")
    if kind in ("num", "ampm"):
        digits = raw.replace(",", "")
        return Tok("num", digits, raw, value=int(digits))
    if kind == "code":
        return Tok("code", raw.upper(), raw)
    if kind == "word":
        return Tok("word", raw.lower().replace("’", "'"), raw)
    if kind == "ell":
        return Tok("ell", "...", raw)
    return Tok("punct", raw, raw, suffix=raw)


def tokens(text: str) -> list[Tok]:
    """``text`` as tokens with number words folded into ``num``/``ord`` tokens."""
    return fold_numbers(lex(text))


def is_digitish(tok: Tok | None) -> bool:
    return tok is not None and (
        tok.kind == "num"
        or (tok.kind == "word" and (tok.text in UNITS or tok.text in TEENS or tok.text in TENS))
    )


def _neighbour_at(toks: Sequence[Tok], i: int, step: int) -> int:
    """The index of the nearest token from ``i`` in direction ``step``, skipping hyphens
    (out of range when there is none)."""
    j = i + step
    while 0 <= j < len(toks) and toks[j].kind == "punct" and toks[j].text == "-":
        j += step
    return j


def _neighbour(toks: Sequence[Tok], i: int, step: int) -> Tok | None:
    j = _neighbour_at(toks, i, step)
    return toks[j] if 0 <= j < len(toks) else None


def _zeroish(tok: Tok | None) -> bool:
    return is_digitish(tok) or (tok is not None and tok.kind == "word" and tok.text in ZERO_WORDS)


def _is_zero(toks: Sequence[Tok], i: int) -> bool:
    """``oh``/``o`` at ``i`` is the digit 0 after a digit ("five oh five"), or before one
    when a word precedes it ("it's oh seven"); "Oh, five five five" has no zero."""
    if toks[i].kind != "word" or toks[i].text not in ZERO_WORDS:
        return False
    before, after = _neighbour(toks, i, -1), _neighbour(toks, i, 1)
    if is_digitish(before):
        return True
    if before is not None and before.text == "," and i >= 2 and is_digitish(toks[i - 2]):
        return True  # "five five five, oh one two"
    return before is not None and before.kind == "word" and _zeroish(after)


class _Composer:
    """Builds the numbers in one run of number words into ``out``: "fifty five" is 55,
    "five five" two 5s, "twenty three hundred" 2300, "forty two thousand" 42000."""

    def __init__(self, out: list[Tok]) -> None:
        self.out = out
        self.total = 0  # whole thousands so far
        self.cur = 0  # below a thousand
        self.last = ""  # "", "unit", "teen", "tens", "hundred", "thousand"
        self.raw: list[str] = []

    def flush(self) -> None:
        if self.last:
            value = self.total + self.cur
            self.out.append(Tok("num", str(value), " ".join(self.raw), value=value, spoken=True))
        self.total, self.cur, self.last, self.raw = 0, 0, "", []

    def digits(self, text: str, raw: str) -> None:
        """A fixed digit string ("oh" → 0, "double five" → 55): a number of its own."""
        self.flush()
        self.out.append(Tok("num", text, raw, value=int(text), spoken=True))

    def add(self, word: str) -> None:
        if word in UNITS:
            self._small(UNITS[word], "unit", ("tens", "hundred", "thousand"))
        elif word in TEENS:
            self._small(TEENS[word], "teen", ("hundred", "thousand"))
        elif word in TENS:
            self._small(TENS[word], "tens", ("hundred", "thousand"))
        elif word == "hundred":
            if self.last in ("unit", "teen", "tens") and self.cur < 100:
                self.cur = max(self.cur, 1) * 100
            else:
                self.flush()
                self.cur = 100
            self.last = "hundred"
        elif word == "thousand":
            if self.last in ("", "thousand"):
                self.flush()
                self.cur = 1
            self.total, self.cur, self.last = (self.total + self.cur) * 1000, 0, "thousand"
        self.raw.append(word)

    def _small(self, value: int, kind: str, joins: tuple[str, ...]) -> None:
        joinable = self.last in joins and (self.last != "tens" or self.cur % 10 == 0)
        if not joinable or value == 0:
            self.flush()
        self.cur += value
        self.last = kind

    def ordinal(self, word: str) -> Tok:
        """``word`` (an ordinal) as a token, joined to a pending "twenty" ("twenty
        first"); whatever else is pending is flushed first."""
        value = ORDINALS[word]
        if self.last == "tens" and value < 10 and not self.total and self.cur < 100:
            value += self.cur
            self.total, self.cur, self.last, self.raw = 0, 0, "", []
        self.flush()
        return Tok("ord", str(value), word, value=value, spoken=True)


_MULTIPLIERS = ("hundred", "thousand")


def fold_numbers(toks: Sequence[Tok]) -> list[Tok]:
    """Number words as ``num`` tokens (one per spoken number), ordinal words as ``ord``."""
    out: list[Tok] = []
    comp = _Composer(out)
    i = 0
    while i < len(toks):
        tok = toks[i]
        word = tok.text if tok.kind == "word" else ""
        j = _neighbour_at(toks, i, 1)
        nxt = toks[j] if j < len(toks) else None
        if word in _MULTIPLIERS and not comp.last and not _after_a(out):
            out.append(tok)  # "the hundred": a word
        elif word in UNITS or word in TEENS or word in TENS or word in _MULTIPLIERS:
            if word in _MULTIPLIERS and not comp.last:
                out.pop()  # "a hundred": the article is the one
            comp.add(word)
        elif _is_zero(toks, i):
            comp.digits("0", tok.raw)
        elif word in REPEAT and nxt is not None and (first := _first_digit(nxt)) is not None:
            # "double five" → 55; Whisper's "double 722" → 7722
            rest = nxt.text[1:] if nxt.kind == "num" else ""
            comp.digits(first * REPEAT[word] + rest, f"{tok.raw} {nxt.raw}")
            i = j
        elif word == "and" and comp.last in _MULTIPLIERS and is_digitish(nxt):
            pass  # "one hundred and twenty"
        elif tok.kind == "punct" and tok.text == "-" and comp.last and is_digitish(nxt):
            pass  # "fifty-five"
        elif word in ORDINALS:
            out.append(comp.ordinal(word))
        else:
            comp.flush()
            out.append(tok)
        i += 1
    comp.flush()
    return out


def _after_a(out: list[Tok]) -> bool:
    return bool(out) and out[-1].kind == "word" and out[-1].text == "a"


def _first_digit(tok: Tok) -> str | None:
    """The digit a "double"/"triple" repeats: a digit word, "oh", or the first digit of
    a number Whisper wrote in digits."""
    if tok.kind == "word" and tok.text in UNITS:
        return str(UNITS[tok.text])
    if tok.kind == "word" and tok.text in ZERO_WORDS:
        return "0"
    if tok.kind == "num" and not tok.suffix and not tok.spoken:
        return tok.text[0]
    return None


def letters(tok: Tok) -> str | None:
    """The spelled letters a word token stands for ("J", "JHM", "Juliet"), or None."""
    if tok.kind != "word":
        return None
    if tok.text in NATO:
        return NATO[tok.text]
    if len(tok.text) == 1:
        return tok.text.upper()
    if tok.text in CAPS_WORDS or tok.text in FILLERS or "'" in tok.text:
        return None
    if tok.raw.isupper() or not re.search(r"[aeiouy]", tok.text):
        return tok.text.upper()  # "JHM" as Whisper writes spelled letters, or "jhm"
    return None


def code_chars(tok: Tok) -> str | None:
    """The characters ``tok`` adds to a spelled code (VIN, plate), or None."""
    if tok.kind == "code":
        return tok.text
    if tok.kind == "num" and not tok.suffix:
        return tok.text
    return letters(tok)


@dataclass(frozen=True)
class CodeRun:
    """Consecutive spelled characters: ``chars`` upper case; ``first``/``last`` the token
    indexes; ``items`` how many tokens gave characters."""

    chars: str
    first: int
    last: int
    items: int


def code_runs(toks: Sequence[Tok]) -> list[CodeRun]:
    """The runs of spelled characters in ``toks``: letters, digits, NATO words, mixed
    tokens, joined across separators (``-``, ``,``, ``.``), fillers and "as in <word>".
    A single "a" or "I", or a lone NATO word ("Mike"), is not a run by itself."""
    runs: list[CodeRun] = []
    for start, end, parts in _raw_runs(toks):
        chars = "".join(parts)
        lone = len(parts) == 1 and toks[start].kind == "word"
        if lone and (toks[start].text in NATO or toks[start].text in ("a", "i")):
            continue
        runs.append(CodeRun(chars, start, end, len(parts)))
    return runs


def _raw_runs(toks: Sequence[Tok]) -> Iterator[tuple[int, int, list[str]]]:
    i, n = 0, len(toks)
    while i < n:
        if code_chars(toks[i]) is None:
            i += 1
            continue
        start, end, parts = i, i, []
        while i < n:
            chars = code_chars(toks[i])
            if chars is not None:
                parts.append(chars)
                end = i
                i += 1
                if _as_in(toks, i):
                    i += 3  # "B as in boy"
            else:
                j = i
                while j < n and _glue(toks[j]):
                    j += 1
                if j in (i, n) or code_chars(toks[j]) is None:
                    break
                i = j
        yield start, end, parts


def _glue(tok: Tok) -> bool:
    return (
        (tok.kind == "punct" and tok.text in ("-", ",", "."))
        or tok.kind == "ell"
        or (tok.kind == "word" and tok.text in CODE_GLUE)
    )


def _as_in(toks: Sequence[Tok], i: int) -> bool:
    return (
        i + 2 < len(toks)
        and toks[i].text == "as"
        and toks[i + 1].text in ("in", "for")
        and toks[i + 2].kind == "word"
    )


def normalize_spoken(text: str) -> str:
    """``text`` with spoken digits and spelled letters compacted: "my number is five five
    five, one two three" → "my number is 555123", "J H M, C G five six" → "JHMCG56";
    other words lower case, punctuation dropped."""
    toks = tokens(text)
    runs = {run.first: run for run in code_runs(toks) if run.items > 1}
    out: list[str] = []
    i = 0
    while i < len(toks):
        if i in runs:
            out.append(runs[i].chars)
            i = runs[i].last + 1
            continue
        tok = toks[i]
        if tok.kind == "num" and tok.value is not None and tok.suffix == "k":
            out.append(str(tok.value * 1000))
        elif tok.kind in ("word", "num", "code", "email", "time"):
            out.append(tok.text)
        elif tok.kind == "ord":
            out.append(f"{tok.text}{_ord_suffix(int(tok.text))}")
        i += 1
    return " ".join(out)


def _ord_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
