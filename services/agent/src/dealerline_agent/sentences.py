"""Cut a stream of LLM tokens into sentences, so each can be spoken as soon as it ends.

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets)
followed by whitespace or by the end of the reply. Punctuation that ends the text
streamed so far ends the sentence at once (the LLM may pause before its next token),
unless the dot may belong to a number, an initial or an abbreviation: then the next
token decides. A dot does not end a sentence after
a title ("Mr.", "Dr.", "St."), inside a number ("3.5") or an abbreviation ("e.g."), or
after "a.m."/"p.m."/"etc." unless the next word starts with a capital letter. While the
first sentence of a reply is still long, a clause is flushed at a comma so the caller
hears something early.
"""

from __future__ import annotations

import re

_ENDERS = ".!?…"
_CLOSERS = "\"')]}”’»"
_CLAUSE = ",;:"

# Never the end of a sentence: titles and Latin abbreviations (lower case, no final dot).
_ALWAYS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "prof", "mt", "ft", "e.g", "i.e", "vs", "approx", "ave", "blvd"}
)
# The end of a sentence only when the next word starts with a capital letter.
_IF_CAPITAL = frozenset({"a.m", "p.m", "am", "pm", "etc", "jr", "sr", "inc", "ltd", "co", "rd"})
# "No. 5": a number sign before a digit.
_BEFORE_DIGIT = frozenset({"no", "nos", "approx"})

_LAST_WORD = re.compile(r"([^\s]+)$")
# Closing quotes/brackets that streamed in after their sentence was already cut.
_STRAY_CLOSERS = re.compile(r"^[\"')\]}”’»]+(?=\s)\s*")
_TOKEN = re.compile(r"\s*\S+|\s+$")


def _word_before(text: str, end: int) -> str:
    match = _LAST_WORD.search(text[:end])
    if not match:
        return ""
    return match.group(1).lstrip("\"'([{“‘«").lower()


class SentenceSplitter:
    """Feed tokens with :meth:`push`; each call returns the sentences it completed.
    :meth:`flush` returns what is left once the stream is over."""

    def __init__(self, clause_min_chars: int = 60, max_chars: int = 300) -> None:
        self.clause_min_chars = clause_min_chars
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
            self._buf = self._buf[cut:].lstrip()
            # A closing quote that streamed after its sentence was cut is not speech.
            if any(ch.isalnum() for ch in sentence):
                out.append(sentence)
                self.emitted += 1

    def _boundary(self, final: bool) -> int | None:
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
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
        return self._clause_cut()

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
        return not (maybe_more or word in _IF_CAPITAL or word in _BEFORE_DIGIT)

    def _dot_ends(self, buf: str, dot: int, after: int, final: bool) -> bool | None:
        """Whether the dot at ``dot`` ends a sentence; None: wait for the next word."""
        word = _word_before(buf, dot)
        if not word:
            return True
        if word in _ALWAYS:
            return False
        if len(word) == 1 and word.isalpha() and buf[dot - 1].isupper():
            return False  # an initial: "J. Smith"
        if word in _IF_CAPITAL or word in _BEFORE_DIGIT:
            rest = buf[after:].lstrip()
            if not rest:
                return True if final else None
            nxt = rest[0]
            if word in _BEFORE_DIGIT:
                return not nxt.isdigit()
            return nxt.isupper()
        return True

    def _clause_cut(self) -> int | None:
        buf = self._buf
        # Only the opening of a reply is cut at a comma: that is where the first audio
        # waits; later sentences are spoken whole for a natural prosody.
        if self.emitted == 0:
            for k, ch in enumerate(buf):
                if (
                    ch in _CLAUSE
                    and k + 1 < len(buf)
                    and buf[k + 1].isspace()
                    and len(buf[: k + 1].strip()) >= self.clause_min_chars
                ):
                    return k + 1
        if len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space if space > 0 else self.max_chars
        return None


def split_sentences(text: str, clause_min_chars: int = 60) -> list[str]:
    """All the sentences of a finished text, as the streaming splitter would cut them."""
    splitter = SentenceSplitter(clause_min_chars=clause_min_chars)
    out: list[str] = []
    for token in _TOKEN.findall(text):  # word by word, as a stream would bring them
        out.extend(splitter.push(token))
    return [*out, *splitter.flush()]
