"""Cut a stream of LLM tokens into sentences, so each can be spoken as soon as it ends.

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets)
followed by whitespace or by the end of the reply. Punctuation that ends the text
streamed so far ends the sentence at once (the LLM may pause before its next token),
unless the dot may belong to a number, an initial or an abbreviation: then the next
token decides. A dot does not end a sentence after
a title ("Mr.", "Dr.", "St."), inside a number ("3.5") or an abbreviation ("e.g."), or
after "a.m."/"p.m."/"etc." or a dotted acronym ("V.I.N.") unless the next word starts
with a capital letter.

The first piece of a reply is where the caller's wait for an answer ends, so it is kept
short: the first sentence is cut at its first clause mark (``,``, ``;``, ``:`` or a
spaced dash, which becomes a comma) once a word precedes it ("Sure," / "I can book that
for you."), and a first sentence that opens with a bare opener ("Sure I can…", "Okay let
me…") is cut after it, the opener spoken with a comma ("Sure,"): short openers are what
the TTS workers keep ready. Later sentences are spoken whole, for a natural
prosody. A comma inside a number ("1,250") never cuts.
"""

from __future__ import annotations

import re

_ENDERS = ".!?…"
_CLOSERS = "\"')]}”’»"
_CLAUSE = ",;:"
_DASHES = "—–-"

# Never the end of a sentence: titles and Latin abbreviations (lower case, no final dot).
_ALWAYS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "prof", "mt", "ft", "e.g", "i.e", "vs", "approx", "ave", "blvd"}
)
# The end of a sentence only when the next word starts with a capital letter.
_IF_CAPITAL = frozenset({"a.m", "p.m", "am", "pm", "etc", "jr", "sr", "inc", "ltd", "co", "rd"})
# "No. 5": a number sign before a digit.
_BEFORE_DIGIT = frozenset({"no", "nos", "approx"})
# Words after which a dot may not end a sentence (lower case, no final dot).
ABBREVIATIONS = _ALWAYS | _IF_CAPITAL | _BEFORE_DIGIT

_LAST_WORD = re.compile(r"([^\s]+)$")
# A dotted acronym ("v.i.n", "u.s"): like "a.m", the end only before a capital letter.
_DOTTED = re.compile(r"^(?:[a-z]\.)+[a-z]$")
# Closing quotes/brackets that streamed in after their sentence was already cut.
_STRAY_CLOSERS = re.compile(r"^[\"')\]}”’»]+(?=\s)\s*")
_TOKEN = re.compile(r"\s*\S+|\s+$")
# A bare opener followed by the subject of the sentence it opens ("Sure I can …", "Okay
# let me …"): the opener is a piece of its own. Nothing matches before the word after the
# subject has begun, so "Thanks for calling" or "Great news" never match.
_OPENER = re.compile(
    r"^\s*(sure|okay|ok|great|of course|absolutely|got it|perfect|alright|all right|"
    r"no problem|thanks|thank you|certainly)(?=\s+(?:i|i'm|i'll|i've|i'd|we|we're|we'll|"
    r"we've|you|you're|you'll|your|that|that's|it|it's|let|let's|there|there's|here|"
    r"here's|our|this|so)\s+\S)",
    re.IGNORECASE,
)


def _word_before(text: str, end: int) -> str:
    match = _LAST_WORD.search(text[:end])
    if not match:
        return ""
    return match.group(1).lstrip("\"'([{“‘«").lower()


class SentenceSplitter:
    """Feed tokens with :meth:`push`; each call returns the sentences it completed.
    :meth:`flush` returns what is left once the stream is over."""

    def __init__(self, *, first_clause: bool = True, max_chars: int = 300) -> None:
        self.first_clause = first_clause  # cut the first sentence at its first clause
        self.max_chars = max_chars
        self._buf = ""
        self.emitted = 0

    @property
    def pending(self) -> str:
        return self._buf

    def push(self, token: str) -> list[str]:
        self._buf += token
        return self._drain(final=False)

    def flush(self) -> list[str]:
        out = self._drain(final=True)
        rest = self._buf.strip()
        self._buf = ""
        if any(ch.isalnum() for ch in rest):
            out.append(rest)
            self.emitted += 1
        return out

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            stray = _STRAY_CLOSERS.match(self._buf)
            if stray:
                self._buf = self._buf[stray.end() :]
            cut = self._boundary(final)
            if cut is None:
                return out
            sentence = self._buf[:cut].strip()
            if self._is_opener(cut):
                sentence += ","  # "Sure I can" → "Sure," + "I can": spoken as an opener
            elif self.emitted == 0 and sentence[-1:] in _DASHES:
                sentence = sentence[:-1].rstrip() + ","  # "Sure —" is said as "Sure,"
            self._buf = self._buf[cut:].lstrip()
            # A closing quote that streamed after its sentence was cut is not speech.
            if any(ch.isalnum() for ch in sentence):
                out.append(sentence)
                self.emitted += 1

    def _boundary(self, final: bool) -> int | None:
        buf = self._buf
        # The first sentence is cut at its first clause: a sentence end before it wins.
        clause = self._first_clause_end() if self.first_clause and self.emitted == 0 else None
        n = len(buf)
        stop = n if clause is None else clause
        i = 0
        while i < stop:
            if buf[i] not in _ENDERS:
                i += 1
                continue
            j = i + 1
            while j < n and (buf[j] in _ENDERS or buf[j] in _CLOSERS):
                j += 1
            if j == n:
                if final or self._ends_now(buf, i, j):
                    return j
                return None  # "3." may become "3.5", "a.m." may go on "tomorrow"
            if not buf[j].isspace():
                i = j
                continue
            if buf[i] == "." and j == i + 1:
                decided = self._dot_ends(buf, i, j, final)
                if decided is None:
                    return None
                if not decided:
                    i = j
                    continue
            return j
        return clause if clause is not None else self._long_cut()

    def _ends_now(self, buf: str, first: int, end: int) -> bool:
        """Whether punctuation at the very end of what has streamed so far ends a
        sentence without seeing the next token: yes unless the dot may be part of a
        number, an initial or an abbreviation (the next token would tell)."""
        run = buf[first:end]
        if "!" in run or "?" in run or "…" in run or ".." in run:
            return True
        word = _word_before(buf, first)
        if not word:
            return True
        if word in _ALWAYS:
            return False
        maybe_more = word[-1].isdigit() or len(word) == 1
        return not (maybe_more or _if_capital(word) or word in _BEFORE_DIGIT)

    def _dot_ends(self, buf: str, dot: int, after: int, final: bool) -> bool | None:
        """Whether the dot at ``dot`` ends a sentence; None: wait for the next word."""
        word = _word_before(buf, dot)
        if not word:
            return True
        if word in _ALWAYS:
            return False
        if len(word) == 1 and word.isalpha() and buf[dot - 1].isupper():
            return False  # an initial: "J. Smith"
        if _if_capital(word) or word in _BEFORE_DIGIT:
            rest = buf[after:].lstrip()
            if not rest:
                return True if final else None
            nxt = rest[0]
            if word in _BEFORE_DIGIT:
                return not nxt.isdigit()
            return nxt.isupper()
        return True

    def _first_clause_end(self) -> int | None:
        """Where the first clause of the text so far ends: after its first clause mark
        that follows a word (and is followed by a space, or ends the text so far and is
        no part of a number), or after a bare opener; None when there is none yet."""
        buf = self._buf
        n = len(buf)
        for k, ch in enumerate(buf):
            if ch in _CLAUSE:
                after = k + 1
            elif ch in _DASHES and _spaced_dash(buf, k):
                after = k + 1  # "Sure — I can"
            else:
                continue
            if not any(c.isalnum() for c in buf[:k]):
                continue
            while after < n and buf[after] in _CLOSERS:
                after += 1
            if after < n:
                if buf[after].isspace():
                    return after
                continue  # "1,250", "9:30"
            return None if buf[k - 1].isdigit() else after  # "1," may become "1,250"
        opener = _OPENER.match(buf)
        return opener.end() if opener else None

    def _is_opener(self, cut: int) -> bool:
        if not self.first_clause or self.emitted:
            return False
        opener = _OPENER.match(self._buf)
        return opener is not None and opener.end() == cut

    def _long_cut(self) -> int | None:
        """A text that runs on without punctuation is cut at a space before ``max_chars``."""
        buf = self._buf
        if len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space if space > 0 else self.max_chars
        return None


def _if_capital(word: str) -> bool:
    return word in _IF_CAPITAL or _DOTTED.match(word) is not None


def _spaced_dash(buf: str, k: int) -> bool:
    """A dash between spaces, not between numbers ("9 - 11")."""
    before = buf[k - 2 : k]
    return (
        len(before) == 2
        and before[1] == " "
        and not before[0].isdigit()
        and (k + 1 == len(buf) or buf[k + 1] == " ")
    )


def split_sentences(text: str, *, first_clause: bool = True) -> list[str]:
    """All the pieces of a finished text, as the streaming splitter would cut them
    (``first_clause=False``: its whole sentences)."""
    splitter = SentenceSplitter(first_clause=first_clause)
    out: list[str] = []
    for token in _TOKEN.findall(text):  # word by word, as a stream would bring them
        out.extend(splitter.push(token))
    return [*out, *splitter.flush()]
