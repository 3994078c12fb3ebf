"""When has the caller finished their turn? A pure decider, one per caller stream; no I/O,
no clock of its own (every call is given the time, wall-clock seconds).

The gateway feeds each frame inside an utterance (``voiced``/``silent``). A pause begins
at the last voiced frame. At ``probe_after_ms`` of silence it answers :class:`Probe`
(once per pause): the gateway starts the turn model (Smart Turn, P(turn complete)) and a
speculative transcript of the audio so far, and feeds their answers back (``model``,
``transcript``), in either order. The decider answers :class:`End` as soon as it knows
enough (see :meth:`EndOfTurn._decide` for the rules), or when a timer is due; the timers
are checked on every call. The caller speaking again drops the pause: answers for it are
ignored. One :class:`End` per utterance; after it every call is ignored until ``reset``.

Reasons (``EndOfTurnInfo.reason``): ``model`` (the model says done, the words do not
trail off), ``entity_complete`` (the answer asked for is whole), ``entity_timeout`` (it is
not, or it was asked for and is not in the words: waited ``entity_max_ms``),
``unsure_timeout`` (no entity; the model said not done, or the words trail off or end on
a number: waited ``unsure_max_ms``/``entity_max_ms``), ``no_transcript`` (no
words by ``transcript_wait_ms``: the model alone). :attr:`End.why` says more, for logs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dealerline_common.entities import (
    Completeness,
    declines,
    ends_on_number,
    judge,
    trails_off,
    volunteered,
)
from dealerline_common.speculation import EndOfTurnInfo, Expects

REASONS = ("model", "entity_complete", "entity_timeout", "unsure_timeout", "no_transcript")
# Answers that can be whole and still go on (a date, then its time; a first name, then the
# last): the model must say "done" (open_entity_prob), not merely not be against it.
OPEN_KINDS: frozenset[Expects] = frozenset({"datetime", "mileage", "name"})


@dataclass(frozen=True)
class EotConfig:
    probe_after_ms: float = 200.0  # silence after the last voiced frame that starts the
    # turn model and the speculative transcript
    model_threshold: float = 0.5  # P(complete) at or above: the model says "done"
    unsure_max_ms: float = 1000.0  # no entity expected and the model says "not done":
    # end after this much silence anyway
    entity_max_ms: float = 2000.0  # expected entity incomplete (or the words trail off:
    # "um", "and", "it's"): end after this much silence
    transcript_wait_ms: float = 1200.0  # no transcript by then: decide without it
    veto_prob: float = 0.15  # a complete entity ends the turn unless P(complete) is below
    open_entity_prob: float = 0.5  # … for an answer that may go on whole (OPEN_KINDS: "Thursday"
    # | "around two", "David" | "Kim"): P(complete) at or above this ends it
    unanswered_waits: bool = True  # an entity was asked for and the words hold none (nor
    # a "no"): end at entity_max_ms, not on the model (a misheard answer reads as none)
    model_alone_prob: float | None = None  # no entity expected, no words yet: P(complete)
    # at or above this ends the turn on the model alone (None: always wait for the words)

    def __post_init__(self) -> None:
        times = (self.probe_after_ms, self.unsure_max_ms, self.entity_max_ms)
        if min(*times, self.transcript_wait_ms) < 0:
            raise ValueError(f"end-of-turn times must not be negative: {self}")
        if not self.probe_after_ms <= self.unsure_max_ms <= self.entity_max_ms:
            raise ValueError(
                "end-of-turn times must grow: probe_after_ms <= unsure_max_ms <= "
                f"entity_max_ms (got {times})"
            )
        probs = [self.model_threshold, self.veto_prob, self.open_entity_prob]
        if self.model_alone_prob is not None:
            probs.append(self.model_alone_prob)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"end-of-turn probabilities must lie in [0, 1]: {probs}")


@dataclass(frozen=True)
class Probe:
    """Start the model + the speculative transcript on the audio so far."""

    pause_id: int
    at: float


@dataclass(frozen=True)
class End:
    """The turn is over."""

    info: EndOfTurnInfo
    at: float
    why: str = ""  # the decision in words, for logs (never the caller's words)


Decision = Probe | End


@dataclass(frozen=True)
class _Words:
    """What a transcript says for the decision (its text is not kept)."""

    kind: Expects | None  # the entity in play: expected and given, or volunteered
    completeness: Completeness | None  # of ``kind``
    trailing: str  # why the words may go on ("" when they do not): "trails off", …
    empty: bool  # no words at all (Whisper heard nothing): the model decides alone
    unanswered: bool = False  # an entity was asked for; none is there, nor a "no"


def _read_words(expects: Expects | None, text: str) -> _Words:
    """The entity in play in ``text``: the expected one unless the caller said something
    else, then one they volunteer ("my number is …"), else none."""
    asked = expects is not None and expects != "yes_no"
    if not any(c.isalnum() for c in text):
        return _Words(None, None, "", empty=True, unanswered=asked)
    trailing = "trails off" if trails_off(text) else ""
    if expects is not None and (done := judge(expects, text)) != "absent":
        return _Words(expects, done, trailing, empty=False)
    offered = volunteered(text)
    if offered is not None and offered != expects and (done := judge(offered, text)) != "absent":
        return _Words(offered, done, trailing, empty=False)
    if not trailing and ends_on_number(text):
        trailing = "ends on a number"
    return _Words(None, None, trailing, empty=False, unanswered=asked and not declines(text))


@dataclass
class _Pause:
    id: int
    start: float  # the last voiced frame (or the first silent one if none was voiced)
    probed: bool = False
    prob: float | None = None
    words: _Words | None = None
    no_words: bool = False  # the transcript failed: the model rule now, not at the wait


class EndOfTurn:
    """The end-of-turn decision for one caller stream (see the module doc)."""

    def __init__(self, config: EotConfig | None = None) -> None:
        self.config = config if config is not None else EotConfig()
        self._expects: Expects | None = None
        self._pauses = 0  # pause ids grow across utterances: a late answer never matches
        self._last_voiced: float | None = None
        self._pause: _Pause | None = None
        self._ended = False

    @property
    def expects(self) -> Expects | None:
        return self._expects

    @property
    def pause_id(self) -> int | None:
        """The open pause, if any."""
        return None if self._pause is None or self._ended else self._pause.id

    @property
    def ended(self) -> bool:
        """An :class:`End` was answered for this utterance (input is ignored)."""
        return self._ended

    def expect(self, expects: Expects | None) -> None:
        """What the agent last asked for (kept across utterances)."""
        self._expects = expects

    def reset(self) -> None:
        """A new utterance begins (keeps ``expects``)."""
        self._last_voiced = None
        self._pause = None
        self._ended = False

    def voiced(self, at: float) -> None:
        """A voiced frame inside the utterance: the caller goes on; an open pause is
        dropped."""
        if self._ended:
            return
        self._last_voiced = at
        self._pause = None

    def silent(self, at: float) -> Decision | None:
        """An unvoiced frame inside the utterance: :class:`Probe` once per pause at
        ``probe_after_ms``, :class:`End` when a rule or timer says so."""
        if self._ended:
            return None
        if self._pause is None:
            start = self._last_voiced if self._last_voiced is not None else at
            self._pauses += 1
            self._pause = _Pause(self._pauses, start)
        pause = self._pause
        end = self._decide(pause, at)
        if end is not None:
            return end
        if not pause.probed and _ms(at - pause.start) >= self.config.probe_after_ms:
            pause.probed = True
            return Probe(pause.id, at)
        return None

    def model(self, pause_id: int, prob: float, at: float) -> Decision | None:
        """The turn model's P(complete) for pause ``pause_id``."""
        pause = self._open(pause_id)
        if pause is None:
            return None
        pause.prob = min(max(prob, 0.0), 1.0)
        return self._decide(pause, at)

    def transcript(self, pause_id: int, text: str, at: float) -> Decision | None:
        """The speculative transcript of the audio up to pause ``pause_id``."""
        pause = self._open(pause_id)
        if pause is None:
            return None
        pause.words = _read_words(self._expects, text)
        return self._decide(pause, at)

    def transcript_failed(self, pause_id: int, at: float) -> Decision | None:
        """No transcript will come for pause ``pause_id`` (the probe failed or timed
        out): decide by the model now instead of at ``transcript_wait_ms``."""
        pause = self._open(pause_id)
        if pause is None or pause.words is not None:
            return None
        pause.no_words = True
        return self._decide(pause, at)

    def _open(self, pause_id: int) -> _Pause | None:
        if self._ended or self._pause is None or self._pause.id != pause_id:
            return None  # the caller went on, or the turn is over: a stale answer
        return self._pause

    def _decide(self, pause: _Pause, at: float) -> End | None:
        """An entity in play (asked for and there, or volunteered): End when it is
        complete and the model not strongly against (``veto_prob``; for OPEN_KINDS the
        model must say done, ``open_entity_prob``), else at ``unsure_max_ms``; at
        ``entity_max_ms`` when incomplete. None in play: at ``entity_max_ms`` when the
        words trail off or end on a number, or when one was asked for and the words hold
        none (nor a "no"; ``unanswered_waits``); else End when the
        model says done, at ``unsure_max_ms`` when not. No words by
        ``transcript_wait_ms`` (or none heard, or the probe failed): the model alone."""
        silence = _ms(at - pause.start)
        words = pause.words
        cfg = self.config
        waits = words is not None and words.unanswered and cfg.unanswered_waits
        if words is None or (words.empty and not waits):
            return self._without_words(pause, at, silence)
        if words.kind is not None:
            return self._with_entity(pause, words, at, silence)
        if words.trailing:
            limit = cfg.entity_max_ms
            return self._timer(pause, at, silence, limit, "unsure_timeout", words.trailing)
        if waits:  # asked for and not there (yet): wait as for an incomplete one
            why = f"no {self._expects} in the words"
            return self._timer(pause, at, silence, cfg.entity_max_ms, "entity_timeout", why)
        if pause.prob is not None and pause.prob >= cfg.model_threshold:
            return self._end(pause, at, silence, "model", "the model says done")
        why = "the model says not done" if pause.prob is not None else "no model answer"
        return self._timer(pause, at, silence, cfg.unsure_max_ms, "unsure_timeout", why)

    def _with_entity(self, pause: _Pause, words: _Words, at: float, silence: float) -> End | None:
        cfg, kind = self.config, words.kind
        if words.completeness != "complete":
            why = f"{kind} {words.completeness}"
            return self._timer(pause, at, silence, cfg.entity_max_ms, "entity_timeout", why)
        if pause.prob is None:  # wait for the model's veto, not past the words' deadline
            why = f"{kind} complete, no model answer"
            return self._timer(pause, at, silence, cfg.transcript_wait_ms, "entity_complete", why)
        veto = cfg.open_entity_prob if kind in OPEN_KINDS else cfg.veto_prob
        if pause.prob >= veto:
            return self._end(pause, at, silence, "entity_complete", f"{kind} complete")
        why = f"{kind} complete but the model says P(done) < {veto:g}"
        return self._timer(pause, at, silence, cfg.unsure_max_ms, "unsure_timeout", why)

    def _without_words(self, pause: _Pause, at: float, silence: float) -> End | None:
        cfg, prob = self.config, pause.prob
        alone = cfg.model_alone_prob
        if self._expects is None and alone is not None and prob is not None and prob >= alone:
            return self._end(pause, at, silence, "model", "the model alone is sure")
        heard_nothing = pause.no_words or pause.words is not None  # failed, or empty
        if silence < cfg.transcript_wait_ms and not heard_nothing:
            return None
        if prob is not None and prob >= cfg.model_threshold:
            return self._end(pause, at, silence, "no_transcript", "no words; the model says done")
        limit = cfg.unsure_max_ms if self._expects is None else cfg.entity_max_ms
        why = "no words; " + ("no model answer" if prob is None else "the model says not done")
        return self._timer(pause, at, silence, limit, "no_transcript", why)

    def _timer(
        self, pause: _Pause, at: float, silence: float, limit: float, reason: str, why: str
    ) -> End | None:
        if silence < limit:
            return None
        return self._end(pause, at, silence, reason, f"{why}; waited {limit:.0f} ms")

    def _end(self, pause: _Pause, at: float, silence: float, reason: str, why: str) -> End:
        self._ended = True
        words = pause.words
        kind = self._expects if words is None or words.kind is None else words.kind
        info = EndOfTurnInfo(
            reason=reason, expects=kind, model_prob=pause.prob, silence_ms=round(silence, 1)
        )
        return End(info, at, why)


def _ms(seconds: float) -> float:
    # rounded to the microsecond so 20 ms frames sum to exact thresholds
    return round(seconds * 1000.0, 3)
