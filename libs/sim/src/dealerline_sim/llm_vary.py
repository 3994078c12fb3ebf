"""How the scripted LLM answers like a real model in two ways the fault runs need.

**Continuation.** An agent that takes over a reply another replica started sends the
words already said in a system note that begins ``CONTINUE YOUR REPLY`` and carries them
between ``<<<`` and ``>>>`` lines (``dealerline_agent.resume``). The scripted LLM then
answers the same rule as before, less the words the caller already heard: a step whose
words were all said says nothing (its tool calls still come), a step that was cut says
what is left of it.

**Wording variants** (``SIM_LLM_VARY=1``). A real model words a re-run differently; the
scripted one is deterministic. In vary mode every sentence of a reply starts with the
lead-in of one wording (``"Right then, Thanks for calling."``), picked at random for each
reply of a turn and kept by its later steps and by a continuation (which read it from the
words said so far in the turn). Two wordings in one turn's reply are then the sign of a
reply mixed from two runs: :func:`wordings_in` finds them in any text.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Sequence
from typing import Any

from dealerline_sim.llm_completion import ScriptedReply, count_tokens, tokenize
from dealerline_sim.llm_scenario import Segment, content_text

__all__ = [
    "CONTINUE_MARK",
    "VARY_ENV",
    "WORDINGS",
    "ReplyShaper",
    "continue_after",
    "said_before",
    "vary_from_env",
    "vary_text",
    "wordings_in",
]

CONTINUE_MARK = "CONTINUE YOUR REPLY"
VARY_ENV = "SIM_LLM_VARY"

WORDINGS: tuple[str, ...] = (
    "Right then",
    "Okay then",
    "Well now",
    "Very good",
    "Sure thing",
    "Alright then",
    "Now then",
    "Good then",
    "So then",
    "Fine then",
    "Well then",
    "Right away",
)
"""The lead-in of each wording variant (two words, unlike any scripted opening)."""

_SAID = re.compile(r"<<<\n(.*?)\n>>>", re.DOTALL)
_SENTENCE_START = re.compile(r"(?:^\s*|(?<=[.!?…])\s+)(?=\S)")
_LEADS = re.compile(r"(?<![\w])(" + "|".join(re.escape(w) for w in WORDINGS) + r"),", re.IGNORECASE)
_WORD = re.compile(r"\S+")


def vary_from_env() -> bool:
    """Whether ``SIM_LLM_VARY`` asks for wording variants (``1``/``true``/``yes``)."""
    return os.environ.get(VARY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def wordings_in(text: str) -> set[int]:
    """The wordings (indices into :data:`WORDINGS`) whose lead-in ``text`` contains."""
    lower = [w.lower() for w in WORDINGS]
    return {lower.index(m.group(1).lower()) for m in _LEADS.finditer(text)}


def vary_text(text: str, wording: int, *, starts_sentence: bool = True) -> str:
    """``text`` with the lead-in of ``wording`` before each sentence (the first one only if
    ``starts_sentence``: a segment may go on with a sentence the one before began)."""
    lead = WORDINGS[wording] + ", "
    out: list[str] = []
    last = 0
    for m in _SENTENCE_START.finditer(text):
        out.append(text[last : m.end()])
        if m.start() > 0 or starts_sentence:
            out.append(lead)
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def said_before(messages: Sequence[dict[str, Any]]) -> str | None:
    """The words already said of the reply being continued (the last continuation note of
    the conversation), or None if it is not a continuation."""
    for m in reversed(messages):
        if m.get("role") not in ("system", "developer"):
            continue
        text = content_text(m.get("content"))
        if CONTINUE_MARK in text:
            found = _SAID.search(text)
            return found.group(1) if found else ""
    return None


def _norm(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


def _words(text: str) -> list[str]:
    return [n for n in (_norm(w) for w in _WORD.findall(text)) if n]


def _overlap(said: list[str], step: list[str]) -> int:
    """How many leading words of ``step`` were already said: the longest run of them that
    ``said`` holds ending at its end (the step was cut) or whole (the step was all said).
    A run of one word counts only if it is the whole step."""
    best = 0
    for i in range(len(said)):
        k = 0
        while k < len(step) and i + k < len(said) and said[i + k] == step[k]:
            k += 1
        if (i + k == len(said) or k == len(step)) and (k >= 2 or k == len(step)):
            best = max(best, k)
    return best


def continue_after(segments: list[Segment], said: str) -> list[Segment]:
    """``segments`` less their first words that ``said`` already holds."""
    drop = _overlap(_words(said), _words("".join(s.text for s in segments)))
    dropped = drop > 0
    kept: list[Segment] = []
    for seg in segments:
        if drop <= 0:
            kept.append(seg)
            continue
        cut = 0
        for m in _WORD.finditer(seg.text):
            if drop <= 0:
                break
            if _norm(m.group()):
                drop -= 1
            cut = m.end()
        rest = seg.text[cut:] if drop <= 0 else ""
        if rest.strip():
            kept.append(Segment(text=rest, delay_ms=seg.delay_ms))
    if kept and dropped:
        # The continuation starts its own text: no space left over from the cut.
        kept[0] = Segment(text=kept[0].text.lstrip(), delay_ms=kept[0].delay_ms)
    return kept


def _turn_said(messages: Sequence[dict[str, Any]]) -> str:
    """What the assistant said since the caller last spoke (earlier steps of this turn)."""
    said: list[str] = []
    for m in reversed(messages):
        if m.get("role") == "user":
            break
        if m.get("role") == "assistant":
            said.insert(0, content_text(m.get("content")))
    return " ".join(said)


@dataclasses.dataclass
class ReplyShaper:
    """Applies continuation and (in vary mode) a wording to each scripted reply."""

    vary: bool = False
    rng: random.Random = dataclasses.field(default_factory=random.Random)

    def shape(self, reply: ScriptedReply, messages: list[dict[str, Any]]) -> ScriptedReply:
        said = said_before(messages)
        segments = list(reply.segments)
        if self.vary and segments:
            wording = self._wording(said or "", messages)
            segments = _vary_segments(segments, wording)
        if said is not None:
            segments = continue_after(segments, said)
        if segments == reply.segments:
            return reply
        text_tokens = len(tokenize("".join(s.text for s in segments)))
        calls_tokens = sum(len(tokenize(c.arguments)) + 1 for c in reply.calls)
        prompt = count_tokens(messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": text_tokens + calls_tokens,
            "total_tokens": prompt + text_tokens + calls_tokens,
        }
        return dataclasses.replace(reply, segments=segments, usage=usage)

    def _wording(self, said: str, messages: list[dict[str, Any]]) -> int:
        """The wording this turn's reply already has (in the words said before a
        takeover, or in its earlier steps), else a new one at random."""
        known = wordings_in(said) or wordings_in(_turn_said(messages))
        if known:
            return min(known)
        return self.rng.randrange(len(WORDINGS))


def _vary_segments(segments: list[Segment], wording: int) -> list[Segment]:
    out: list[Segment] = []
    starts = True
    for seg in segments:
        out.append(
            Segment(
                text=vary_text(seg.text, wording, starts_sentence=starts), delay_ms=seg.delay_ms
            )
        )
        stripped = seg.text.rstrip()
        if stripped:
            starts = stripped[-1] in ".!?…"
    return out
