"""Did Kokoro say the words? ``python -m dealerline_sim.devset check``: the short clips
(short answers, backchannels, interruptions) heard by the embedded Whisper on the clean
band-limited audio, before the line noise is added.

Kokoro's Japanese voices read some short English words badly ("sure" can come out as
"sewer", "wait" as "Blake"); a clip whose words Whisper cannot recover even without noise
says something else than its label. For such a clip the check tries the other voices (a
clip with a pinned voice: other speeds) and names the first that passes; that choice is
committed as a pin in :data:`.cases.PINS`, so that ``build`` itself stays deterministic
(Whisper's int8 decoding is not: a borderline clip may pass one run and fail the next).
What the line noise does to recognition is left for the benchmarks to measure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dealerline_common.audio import SAMPLE_RATE, resample

from .build import SEED, VOICES, Draw, Synth, case_rng, clean_line, draw
from .spec import CaseSpec

# One spelling for what Whisper writes several ways.
_SAME = (
    (r"\b(uh[- ]?huh|uh[- ]?hum|um[- ]?hum|mhm|mm[- ]?hmm|hmm)\b", "uh-huh"),
    (r"\bok\b", "okay"),
    (r"\ball right\b", "alright"),
    (r"\b(\d{1,2})(:00)?\s*a\.?\s?m\b\.?", r"\1 am"),
    (r"\ba\.?\s?m\b\.?", "am"),
    (r"\bp\.?\s?m\b\.?", "pm"),
    (r"\byup\b", "yep"),
)
_NUMBERS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
}

Hear = Callable[[np.ndarray], str]  # 16 kHz float audio → text


def words(text: str) -> list[str]:
    """Lower-case words, spellings unified, number words as digits, punctuation dropped."""
    t = text.lower().replace("’", "'")
    for pattern, repl in _SAME:
        t = re.sub(pattern, repl, t)
    return [_NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9'-]+", t)]


def says(expected: str, heard: str) -> bool:
    """The words heard are the words expected (a repeated backchannel may be heard once:
    "yeah, yeah" as "yeah")."""
    want, got = words(expected), words(heard)
    if got == want:
        return True
    return len(set(want)) == 1 and bool(got) and set(got) == set(want)


def whisper_ear(cpu_threads: int = 2) -> Hear:
    """The embedded Whisper (tiny.en, int8, greedy) as a ``Hear``."""
    from ..voice import Transcriber

    transcriber = Transcriber(cpu_threads=cpu_threads)
    return transcriber.transcribe_float_sync


def heard(hear: Hear, clean_8k: np.ndarray) -> str:
    """What the ear makes of a clean 8 kHz clip."""
    return hear(resample(clean_8k.astype(np.float32), SAMPLE_RATE, 16000))


def candidates(spec: CaseSpec, seed: int = SEED) -> list[Draw]:
    """The case's own draw first, then the other voices in a seeded order (a case with a
    pinned voice: other speeds)."""
    d = draw(spec, seed)
    if spec.voice is not None:
        speeds = [s for s in (1.0, 0.95, 1.05, 0.9, 1.1) if s != d.speed]
        return [d, *(dataclasses.replace(d, speed=s) for s in speeds)]
    rng = case_rng(spec.id + "/retry", seed)
    others = [v for v in VOICES if v != d.voice]
    order = [others[int(i)] for i in rng.permutation(len(others))]
    return [d, *(dataclasses.replace(d, voice=v) for v in order)]


@dataclass(frozen=True)
class Checked:
    id: str
    text: str
    heard: str  # what Whisper made of the case as built
    ok: bool
    # The first other voice/speed whose words Whisper recovered, for a case that failed.
    better: Draw | None = None


def check(spec: CaseSpec, synth: Synth, hear: Hear, seed: int = SEED) -> Checked:
    """Hear the case as built; if its words are not recovered, try the other candidates."""
    first, *rest = candidates(spec, seed)
    said = heard(
        hear, clean_line([synth(c, first.voice, first.speed) for c in spec.chunks], first)[0]
    )
    if says(spec.text, said):
        return Checked(spec.id, spec.text, said, True)
    for d in rest:
        clean, _ = clean_line([synth(c, d.voice, d.speed) for c in spec.chunks], d)
        if says(spec.text, heard(hear, clean)):
            return Checked(spec.id, spec.text, said, False, d)
    return Checked(spec.id, spec.text, said, False)
