"""FAQ ranking: weighted token overlap with a light stemmer.

The questions arrive as speech-to-text of a caller ("do you guys take apple pay"), so
the ranking must survive filler words, plurals and verb forms, and needs no model:
- text is lower-cased, split into words, stop words dropped, each word stemmed lightly
  ("changing", "changed", "changes" → "chang"; "tires" → "tir");
- a query word found in an entry's tags counts 3, in its question 2, in its answer 1
  (the best field only), times the word's rarity across all entries (IDF), so "car"
  matters less than "loaner";
- the sum is scaled by how much of the query matched, so an entry matching two of
  three words beats one matching one rare word by chance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["FaqDocument", "rank", "stem", "tokens"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

_STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "for",
        "from",
        "get",
        "got",
        "had",
        "has",
        "have",
        "hello",
        "hey",
        "hi",
        "how",
        "i",
        "i'd",
        "i'm",
        "if",
        "in",
        "into",
        "is",
        "it",
        "it's",
        "its",
        "just",
        "like",
        "me",
        "my",
        "need",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "some",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "up",
        "us",
        "want",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "would",
        "you",
        "you're",
        "your",
        "yours",
        "guys",
        "okay",
        "ok",
        "um",
        "uh",
        "yeah",
        "yes",
        "no",
        "not",
        "tell",
        "know",
        "wondering",
        "question",
        "ask",
    ]
)

_FIELD_WEIGHTS = (3.0, 2.0, 1.0)  # tags, question, answer


def stem(word: str) -> str:
    """A deliberately small suffix stripper (plural, -ing, -ed, trailing e)."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def tokens(text: str) -> list[str]:
    """Stemmed content words of ``text``, in order."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]


@dataclass(frozen=True)
class FaqDocument:
    id: int
    question: str
    answer: str
    tags: Sequence[str] = ()


def rank(
    query: str, documents: Iterable[FaqDocument], limit: int = 3
) -> list[tuple[FaqDocument, float]]:
    """The best ``limit`` documents for ``query`` with their scores (all > 0), best first;
    ties keep the documents' order."""
    docs = list(documents)
    wanted = list(dict.fromkeys(tokens(query)))
    if not wanted or not docs:
        return []
    fields = [
        (set(tokens(" ".join(d.tags))), set(tokens(d.question)), set(tokens(d.answer)))
        for d in docs
    ]
    n = len(docs)
    document_frequency = {
        t: sum(1 for f in fields if t in f[0] or t in f[1] or t in f[2]) for t in wanted
    }
    scored: list[tuple[float, int]] = []
    for index, doc_fields in enumerate(fields):
        total = 0.0
        matched = 0
        for t in wanted:
            weight = next(
                (w for w, f in zip(_FIELD_WEIGHTS, doc_fields, strict=True) if t in f), 0.0
            )
            if weight:
                matched += 1
                total += weight * math.log(1.0 + n / document_frequency[t])
        if total > 0:
            coverage = matched / len(wanted)
            scored.append((round(total * (0.5 + 0.5 * coverage), 4), index))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [(docs[i], score) for score, i in scored[:limit]]
