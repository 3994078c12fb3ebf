"""Barge-in that tells a backchannel from an interruption: pure and clock-injected.

When the caller starts speaking over our audio, playback is *held* at once (the sender
stops sending new frames and keeps its place). Once the caller has spoken
``probe_ms`` of voiced audio, or as soon as a shorter utterance ends, the audio so far
goes to an STT probe and :func:`judge` reads the words:

- backchannel words only ("uh-huh", "okay", "yeah", "got it", … possibly repeated), or no
  speech at all → playback *resumes* where it held, and the utterance is dropped (it is
  not a turn);
- anything else → *barge in* now (``clear``, the turn cancelled, the utterance published).

Speech going on past ``max_hold_ms`` voiced before an answer barges in, and so does a
probe that failed or timed out (the safe side); so does speech going on past
``max_hold_ms`` after a backchannel verdict ("okay, but what about Tuesday?").

:class:`BargeGate` is the state machine: :class:`~.caller_audio.CallerAudio` feeds it the
utterance's onset, its frames and its end, and the probe's answer; it returns what to do
(:class:`Hold`, :class:`JudgeDue`, :class:`Resume`, :class:`Interrupt`,
:class:`Release`), and, for an utterance that ended, its :data:`Fate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# The words a listener says to show they are still listening, not to take the turn.
BACKCHANNELS: tuple[str, ...] = (
    "uh-huh",
    "uh huh",
    "mm-hmm",
    "mhm",
    "okay",
    "ok",
    "yeah",
    "yep",
    "yes",
    "right",
    "sure",
    "got it",
    "i see",
    "alright",
    "cool",
    "great",
)
# Hesitation sounds: a probe ~240 ms into "uh-huh" or "mm-hmm" often hears only its first
# half. Taken as no interruption; a caller who goes on ("um, actually…") still barges in
# once the speech passes the maximum hold.
FILLERS: tuple[str, ...] = ("uh", "um", "mm", "mmm", "hmm", "hm", "oh", "ah", "huh")
# The same sounds as Whisper also spells them.
_SPELLINGS: tuple[str, ...] = (
    "mm hmm",
    "mm hm",
    "mmhmm",
    "mhmm",
    "mmhm",
    "uhhuh",
    "uh-hu",
    "all right",
    "okey",
)
_PHRASES: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        {tuple(p.replace("-", " ").split()) for p in BACKCHANNELS + FILLERS + _SPELLINGS},
        key=len,
        reverse=True,
    )
)
# Whisper's no-speech threshold: above it the audio is taken as no speech at all.
NO_SPEECH_PROB = 0.6

Verdict = Literal["backchannel", "no_speech", "speech"]


def words(text: str) -> list[str]:
    """Lower-case words: dots dropped ("O.K." → "ok"), hyphens and other punctuation
    become spaces ("Mm-hmm." → "mm hmm")."""
    text = text.lower().replace("\u2019", "'").replace(".", "")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def is_backchannel(text: str) -> bool:
    """Whether the words are backchannels (or hesitation sounds) only, one or more in any
    order; empty is not."""
    toks = words(text)
    i = 0
    while i < len(toks):
        phrase = next((p for p in _PHRASES if tuple(toks[i : i + len(p)]) == p), None)
        if phrase is None:
            return False
        i += len(phrase)
    return bool(toks)


def judge(text: str, no_speech_prob: float | None = None) -> Verdict:
    """What the caller's words over our audio were: ``no_speech`` (no words, or the
    recogniser is sure there was no speech), ``backchannel`` or ``speech``."""
    if not words(text) or (no_speech_prob is not None and no_speech_prob >= NO_SPEECH_PROB):
        return "no_speech"
    return "backchannel" if is_backchannel(text) else "speech"


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Hold:
    """Stop sending playback now; keep its place."""

    at: float


@dataclass(frozen=True)
class JudgeDue:
    """Send a probe of the audio: the utterance so far, or (``parked``) the one that ended
    and waits for the answer."""

    barge_id: int
    parked: bool
    at: float


@dataclass(frozen=True)
class Resume:
    """Play on from where playback held (``verdict``: backchannel, no_speech or blip)."""

    verdict: str
    at: float


@dataclass(frozen=True)
class Interrupt:
    """Barge in now (``reason``: words, max_hold, kept_talking — a second utterance over
    held playback —, probe_failed)."""

    reason: str
    at: float


@dataclass(frozen=True)
class Release:
    """The parked utterance is published (``publish``) or dropped (a backchannel)."""

    publish: bool


GateAction = Hold | JudgeDue | Resume | Interrupt | Release
# What becomes of an utterance that ended: published now, parked until the probe's
# answer, or dropped (a backchannel already judged, or a blip).
Fate = Literal["publish", "park", "drop"]
# The utterance in progress, as the gate sees it.
_State = Literal["free", "held", "probing", "resumed", "barged"]


class BargeGate:
    def __init__(self, probe_ms: float, max_hold_ms: float) -> None:
        self.probe_ms = probe_ms
        self.max_hold_ms = max_hold_ms
        self.holding = False  # playback is held by us
        self._state: _State = "free"  # of the utterance in progress ("free" when none)
        self._probe: int | None = None  # the probe in flight
        self._parked = False  # an ended utterance waits for the probe in flight
        self._ids = 0
        self._voiced_ms = 0.0  # voiced audio of the utterance in progress, last seen
        # Voiced audio already judged (backchannel or no speech) when playback resumed:
        # speech after it is held and judged afresh, counted from here.
        self._judged_ms = 0.0

    @property
    def parked(self) -> bool:
        return self._parked

    def onset(self, playing: bool, at: float) -> list[GateAction]:
        """Speech began; ``playing``: our audio is playing (or about to)."""
        self._voiced_ms = self._judged_ms = 0.0
        if self.holding:  # speaking again while an earlier utterance is being judged
            self._state = "held"
            return []
        self._state = "free"
        return self._hold(at) if playing else []

    def frame(self, voiced_ms: float, playing: bool, at: float) -> list[GateAction]:
        """A frame inside the utterance, ``voiced_ms`` of voiced audio in it so far."""
        actions: list[GateAction] = []
        self._voiced_ms = voiced_ms
        if self._state == "free":
            if not playing:
                return actions
            actions.extend(self._hold(at))  # our audio began while the caller speaks
        if self._state == "resumed" and voiced_ms > self._judged_ms:
            # Speech after the verdict ("okay" heard as "oh", then "-kay"; noise, then a
            # word): held and judged afresh, not cut on the first verdict's clock.
            if playing:
                actions.extend(self._hold(at))
            elif voiced_ms >= self.max_hold_ms:  # our audio ended meanwhile: a turn
                self._state = "barged"
                return actions
        voiced_ms -= self._judged_ms
        if voiced_ms >= self.max_hold_ms and self._state in ("held", "probing"):
            return [*actions, *self._interrupt("max_hold", at)]
        if self._state == "held" and voiced_ms >= self.probe_ms and self._probe is None:
            self._state = "probing"
            actions.append(JudgeDue(self._next_probe(), False, at))
        return actions

    def ended(self, kept: bool, at: float) -> tuple[Fate, list[GateAction]]:
        """The utterance ended: ``kept`` an utterance, else a blip (discarded)."""
        state, self._state = self._state, "free"
        if state in ("free", "barged"):
            return "publish", []
        if state == "resumed":
            return "drop", []
        if not kept:
            if state == "held" and self._probe is None and not self._parked:
                self.holding = False
                return "drop", [Resume("blip", at)]
            return "drop", []
        if self._parked:  # two utterances over held playback: more than a backchannel
            return "publish", self._interrupt("kept_talking", at)
        self._parked = True
        if state == "probing":
            return "park", []  # its answer is on the way
        return "park", [JudgeDue(self._next_probe(), True, at)]

    def answer(self, barge_id: int, verdict: Verdict | None, at: float) -> list[GateAction]:
        """The probe's verdict (None: the probe failed or timed out)."""
        if barge_id != self._probe:
            return []
        self._probe = None
        if verdict is None:
            return self._interrupt("probe_failed", at)
        if verdict == "speech":
            return self._interrupt("words", at)
        actions: list[GateAction] = []
        if self._parked:
            self._parked = False
            actions.append(Release(False))
        if self._state == "probing":
            self._state = "resumed"
            self._judged_ms = self._voiced_ms
        elif self._state == "held":
            return actions  # a newer utterance is still to be judged: keep holding
        self.holding = False
        actions.append(Resume(verdict, at))
        return actions

    def _hold(self, at: float) -> list[GateAction]:
        self._state = "held"
        self.holding = True
        return [Hold(at)]

    def _interrupt(self, reason: str, at: float) -> list[GateAction]:
        actions: list[GateAction] = [Interrupt(reason, at)]
        if self._parked:
            actions.append(Release(True))
        self._parked = False
        self._probe = None
        self.holding = False
        if self._state != "free":
            self._state = "barged"
        return actions

    def _next_probe(self) -> int:
        self._ids += 1
        self._probe = self._ids
        return self._ids
